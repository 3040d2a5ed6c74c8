"""How a guard's verdict reads on a check's page: the value under the name of what it measures,
rounded, then its threshold; and a check that cannot judge says why instead of crashing."""

from __future__ import annotations

import dagster as dg

from lvm_pipeline.defs.checks import could_not_run, to_check_result
from lvm_pipeline.guards import GuardResult
from lvm_pipeline.store import ArtifactError


def _values(result: dg.AssetCheckResult) -> dict:
    return {k: getattr(v, "value", v) for k, v in result.metadata.items()}


def test_a_check_names_its_figure_and_rounds_it():
    guard = GuardResult("check_training_sequences_aligned", True, "targets are payload vectors",
                        0.9999999999999998, 0.99, "aligned", measure="min_cosine_to_payload")
    values = _values(to_check_result(guard))
    assert list(values)[:3] == ["rule", "min_cosine_to_payload", "threshold"]
    assert values["min_cosine_to_payload"] == 1.0 and values["threshold"] == 0.99
    counted = GuardResult("check_report_lineage", False, "one payload", 2.0, 0.0, "2 problems",
                          ["a", "b"], measure="inputs_out_of_lineage")
    values = _values(to_check_result(counted))
    assert values["inputs_out_of_lineage"] == 2 and values["threshold"] == 0
    assert "- a\n- b" in values["examples"]


def test_a_check_that_cannot_judge_says_why():
    refused = could_not_run("check_x", ArtifactError("payload/abc/vectors.npy: sha256 mismatch"))
    assert not refused.passed and refused.description.startswith(
        "check_x: INPUT REFUSED: payload/abc/vectors.npy: sha256 mismatch")
    crashed = could_not_run("check_x", KeyError("promotion"))
    assert not crashed.passed
    assert "CHECK COULD NOT RUN: KeyError: 'promotion'" in crashed.description
