"""The payload integrity guard: each defect fails with its own rule and the offending row."""

from __future__ import annotations

import numpy as np
import pytest

from lvm_pipeline.guards import check_payload_integrity
from lvm_pipeline.payload.payload import Payload
from lvm_pipeline_tests.guard_cases import sound_payload


def test_a_sound_payload_passes_integrity():
    result = check_payload_integrity(sound_payload(), expected_dim=32)
    assert result.passed and result.figure == 0 and "sound" in result.message


@pytest.mark.parametrize("defect, rule", [
    ("nan", "rows with NaN or inf"),
    ("norm", "rows with norm off 1 by more than 0.001"),
    ("dim", "rows of dim 32 instead of the embedder's 48"),
    ("duplicate_key", "duplicate (article, chunk) keys"),
    ("duplicate_vector", "duplicate vectors"),
    ("empty_text", "empty texts"),
    ("duplicate_text", "duplicate texts"),
])
def test_each_payload_defect_fails_integrity_with_its_rule(defect, rule):
    p = sound_payload()
    vectors, chunks, expected_dim = np.array(p.vectors), p.chunks.copy(), 32
    if defect == "nan":
        vectors[7, 3] = np.nan
    elif defect == "norm":
        vectors[7] *= 1.5
    elif defect == "dim":
        expected_dim = 48
    elif defect == "duplicate_key":
        chunks.loc[7, "chunk_index"] = 6
    elif defect == "duplicate_vector":
        vectors[7] = vectors[3]
    elif defect == "empty_text":
        chunks.loc[7, "text"] = " -- "
    else:
        chunks.loc[7, "text"] = chunks.loc[3, "text"]
    result = check_payload_integrity(Payload(vectors, chunks, p.manifest), expected_dim)
    assert not result.passed
    assert rule in result.details["counts"] and result.figure >= 1
    assert "PAYLOAD BROKEN: " in result.message and rule in result.message
    if defect != "dim":
        assert any("row 7 = article 'art-0' (index 0) chunk" in e for e in result.examples)
