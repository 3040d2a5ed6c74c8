"""The promotion gate on the report, promotion state in the Dagster instance, `lvm promote`,
`lvm rollback`, `lvm models --promoted`, and `lvm report --compare` across two reports."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import dagster as dg
import numpy as np
import pytest
import torch

from lvm_pipeline.cli import EXIT_FAILED, EXIT_OK, EXIT_USAGE, main
from lvm_pipeline.cli.events import failure_lines
from lvm_pipeline.defs.metadata import materialization_of_build
from lvm_pipeline.defs.promoted_models import promoted_key, read_promotion, read_promotions
from lvm_pipeline.defs.resources import GuardsResource, PromotionResource
from lvm_pipeline.models import LVM, VARIANTS, preset
from lvm_pipeline.report.build import read_report
from lvm_pipeline.report.promotion import Promotion, PromotionConfig, compare
from lvm_pipeline.store import kinds
from lvm_pipeline.store.artifacts import ArtifactStore, Build
from lvm_pipeline.training.checkpoint import load_checkpoint, publish_checkpoint
from lvm_pipeline_tests.conftest import (
    SMALL_RUN_PROMOTION,
    check_evaluations,
    instance_at,
    materialize_all,
    record_build,
)

# The report re-runs the embedder canary; 8 texts instead of 64 where it is not the point.
QUICK_CANARY = {"guards": GuardsResource(canary_sample=8)}


def no_warning(message: str) -> None:
    raise AssertionError(f"unexpected warning: {message}")

# --------------------------------------------------------------------------- the rule


def test_a_worse_candidate_is_held_and_the_margin_tolerates_a_smaller_loss():
    promoted = np.ones(200, dtype=np.int64)  # every query at rank 1: MRR@10 1.0
    worse = np.where(np.arange(200) % 2 == 0, 1, 20)  # half the queries lost: MRR@10 0.5
    held = compare("mamba_s", "c" * 64, "p" * 64, worse, promoted, PromotionConfig())
    assert not held.promote and held.held
    assert held.difference["value"] == pytest.approx(-0.5) and held.difference["high"] < 0
    assert "worse by 0.5000 MRR@10" in held.line() and "pppppppppppp stays promoted" in held.line()
    assert "[-0." in held.line() and "HELD BACK" in held.line()
    tolerant = compare("mamba_s", "c" * 64, "p" * 64, worse, promoted, PromotionConfig(margin=0.6))
    assert tolerant.promote
    same = compare("mamba_s", "c" * 64, "p" * 64, promoted, promoted, PromotionConfig())
    assert same.promote and same.difference["low"] == same.difference["high"] == 0
    with pytest.raises(ValueError, match="margin must be >= 0"):
        PromotionConfig(margin=-0.1)


def test_promotion_state_steps_forward_and_back_and_round_trips():
    first = Promotion("mamba_s", "a" * 64, "gate", "gate (run r1)", "first promotion")
    second = first.succeeded_by("b" * 64, "manual", "me (lvm promote)", "by hand")
    assert second.earlier == ("a" * 64,) and second.action == "manual"
    back = second.rolled_back("me (lvm rollback)")
    assert back.build_id == "a" * 64 and back.earlier == () and back.demoted == ("b" * 64,)
    assert Promotion.from_record(json.loads(json.dumps(back.to_record()))) == back
    with pytest.raises(ValueError, match="no earlier promoted build to roll back to"):
        back.rolled_back("me")
    with pytest.raises(ValueError, match="promotion action 'auto'"):
        Promotion("mamba_s", "a" * 64, "auto", "me", "")


# --------------------------------------------------------------------------- through Dagster


def _variant_of(store: ArtifactStore, build: Build, noise: float, seed: int) -> Build:
    """A checkpoint of the same variant, trained on the same data, with noise added to every
    weight: large noise makes a worse candidate without training one."""
    model, info = load_checkpoint(build)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(noise * torch.randn(p.shape, generator=generator))
    return publish_checkpoint(store, model, info, dict(build.manifest["upstream"]))


@pytest.fixture(scope="module")
def second_retrain(small_run, tmp_path_factory) -> tuple[Path, dict, object]:
    """The small run, then a report over a ruined mamba_s and a barely changed mamba_h (the
    other three candidates are the promoted builds)."""
    data_dir = tmp_path_factory.mktemp("promotion") / "data"
    shutil.copytree(small_run[0], data_dir)
    store = ArtifactStore(data_dir)
    first = read_report(store.current(kinds.REPORT))["lineage"]["models"]
    ruined = _variant_of(store, store.get(kinds.checkpoint("mamba_s"), first["mamba_s"]), 1.0, 0)
    nudged = _variant_of(store, store.get(kinds.checkpoint("mamba_h"), first["mamba_h"]), 1e-6, 1)
    with instance_at(data_dir) as instance:  # what two training steps would have recorded
        for variant, build in (("mamba_s", ruined), ("mamba_h", nudged)):
            record_build(instance, variant, build)
            store.set_current(build)
    result = materialize_all(data_dir, selection=["retrieval_report"], resources=QUICK_CANARY)
    return data_dir, {"first": first, "ruined": ruined.build_id, "nudged": nudged.build_id}, result


def test_the_first_retrain_promotes_every_candidate_recorded_in_the_instance(small_run):
    data_dir, result = small_run
    gate = check_evaluations(result)["check_candidates_not_worse"]
    assert gate.passed and gate.blocking
    models = read_report(ArtifactStore(data_dir).current(kinds.REPORT))["lineage"]["models"]
    with instance_at(data_dir) as instance:
        promoted = read_promotions(instance, no_warning)
    assert {v: p.build_id for v, p in promoted.items()} == models and set(models) == set(VARIANTS)
    for p in promoted.values():
        assert p.action == "gate" and p.by == f"gate (run {result.run_id})"
        assert p.reason == f"first promotion of {p.variant}" and p.earlier == ()
    # Each promotion links to the event that produced its build, not to the latest one.
    with instance_at(data_dir) as instance:
        for variant, build_id in models.items():
            [event] = instance.fetch_materializations(promoted_key(variant), limit=1).records
            produced = materialization_of_build(instance, dg.AssetKey(variant), build_id)
            assert event.asset_materialization.metadata["checkpoint"].value == (
                f"/assets/{variant}?view=events&time={int(produced.timestamp * 1000)}")


def test_an_eval_set_too_small_to_see_a_loss_promotes_nothing_and_warns(small_run_copy):
    """The small run's 27 eval queries resolve MRR@10 to about ±0.15; at the gate's default
    resolution (±0.05) any candidate would pass the rule, so none is promoted, the check warns
    (the run still succeeds) and says what the eval set resolves and what it would need. With
    nothing to decide (every candidate the promoted build) the same eval set passes."""
    data_dir = small_run_copy
    default = {**QUICK_CANARY, "promotion": PromotionResource()}
    unchanged = materialize_all(data_dir, selection=["retrieval_report"], resources=default)
    assert check_evaluations(unchanged)["check_candidates_not_worse"].description == \
        "every candidate is the promoted build of its variant"

    store = ArtifactStore(data_dir)
    first = read_report(store.current(kinds.REPORT))["lineage"]["models"]
    nudged = _variant_of(store, store.get(kinds.checkpoint("mamba_h"), first["mamba_h"]), 1e-6, 1)
    with instance_at(data_dir) as instance:  # what a training step would have recorded
        record_build(instance, "mamba_h", nudged)
        store.set_current(nudged)
        before = {v: read_promotion(instance, v, no_warning) for v in VARIANTS}
    result = materialize_all(data_dir, selection=["retrieval_report"], resources=default)
    assert result.success
    gate = check_evaluations(result)["check_candidates_not_worse"]
    assert not gate.passed and gate.severity.value == "WARN"
    report = read_report(ArtifactStore(data_dir).current(kinds.REPORT))
    resolution = report["confidence"]["mrr_at_10_resolution"]
    assert f"NOTHING PROMOTED: this eval set ({report['n_queries']} queries from 3 eval " \
           f"articles) resolves MRR@10 differences of ±{resolution:.3f}" in gate.description
    need = int(np.ceil(3 * (resolution / 0.05) ** 2))
    assert f"the gate needs ±0.050 to see a loss worth acting on. About {need} eval articles" \
        in gate.description
    assert gate.metadata["mrr_at_10_resolution"].value == round(resolution, 4)
    assert gate.metadata["threshold"].value == 0.05
    with instance_at(data_dir) as instance:
        assert {v: read_promotion(instance, v, no_warning) for v in VARIANTS} == before


def test_a_worse_candidate_keeps_the_promoted_model_and_the_run_says_by_how_much(second_retrain):
    data_dir, builds, result = second_retrain
    assert not result.success  # the gate is blocking: the run fails, so alerts fire
    gate = check_evaluations(result)["check_candidates_not_worse"]
    assert not gate.passed
    assert gate.description.startswith(f"mamba_s: candidate {builds['ruined'][:12]} HELD BACK: "
                                       "worse by ")
    assert f"against promoted {builds['first']['mamba_s'][:12]}" in gate.description
    assert "95% paired bootstrap over" in gate.description
    meta = {k: v.value for k, v in gate.metadata.items()}
    assert meta["mamba_s/mrr_at_10_difference"] < 0 and abs(meta["mamba_h/mrr_at_10_difference"]) < 0.02
    # The worst upper end, against -margin, named as what it is.
    assert meta["worst_upper_end_of_mrr_at_10_difference"] < meta["threshold"] == 0.0
    assert "mamba_h: candidate" in meta["decisions"] and "promoted" in meta["decisions"]
    # `lvm run` prints the failed check's description among its failure lines.
    [line] = [x for x in failure_lines(result.all_events)
              if x.startswith("check check_candidates_not_worse on retrieval_report FAILED")]
    assert "mamba_s" in line and "MRR@10 -" in line and "[" in line
    with instance_at(data_dir) as instance:
        promoted = read_promotions(instance, no_warning)
        s_history = instance.fetch_materializations(
            promoted_key("mamba_s"), limit=10).records
    assert promoted["mamba_s"].build_id == builds["first"]["mamba_s"] and len(s_history) == 1
    h = promoted["mamba_h"]
    assert h.build_id == builds["nudged"] and h.earlier == (builds["first"]["mamba_h"],)
    assert h.report == ArtifactStore(data_dir).current(kinds.REPORT).build_id
    assert "against promoted" in h.reason and h.by == f"gate (run {result.run_id})"
    for v in ("mamba_xl", "mamba_gr", "mamba_sandwich"):
        assert promoted[v].build_id == builds["first"][v] and promoted[v].earlier == ()


def test_a_large_margin_promotes_the_worse_candidate(second_retrain, tmp_path):
    data_dir = tmp_path / "data"
    shutil.copytree(second_retrain[0], data_dir)
    result = materialize_all(data_dir, selection=["retrieval_report"],
                             resources={**QUICK_CANARY,
                                        "promotion": PromotionResource(
                                            margin=1.0,
                                            resolution=SMALL_RUN_PROMOTION.resolution)})
    assert result.success
    with instance_at(data_dir) as instance:
        assert read_promotion(instance, "mamba_s", no_warning).build_id == second_retrain[1]["ruined"]


# --------------------------------------------------------------------------- the CLI


@pytest.fixture
def cli_data(second_retrain, tmp_path) -> Path:
    """A private copy of the second retrain; CLI calls set LVM_DATA_DIR / DAGSTER_HOME."""
    data_dir = tmp_path / "data"
    shutil.copytree(second_retrain[0], data_dir)
    return data_dir


def _promoted_json(data_dir: Path, capsys) -> dict:
    assert main(["models", "--promoted", "--json", "--data-dir", str(data_dir)]) == EXIT_OK
    return json.loads(capsys.readouterr().out)


def test_promote_and_rollback_by_hand_are_recorded_and_listed(second_retrain, cli_data, capsys):
    _, builds, _ = second_retrain
    ruined, good = builds["ruined"], builds["first"]["mamba_s"]
    assert main(["models", "--promoted", "--data-dir", str(cli_data)]) == EXIT_OK
    table = capsys.readouterr().out
    rows = {line.split()[0]: line.split() for line in table.splitlines()[1:]}
    assert rows["mamba_s"][1:2] == [good[:12]] and rows["mamba_s"][3:6] == ["gate", "gate", "(run"]
    assert main(["promote", "mamba_s", ruined[:12], "--reason", "try it",
                 "--data-dir", str(cli_data)]) == EXIT_OK
    assert f"mamba_s: promoted {ruined[:12]} (was {good[:12]})" in capsys.readouterr().out
    listed = _promoted_json(cli_data, capsys)["mamba_s"]
    assert listed["build_id"] == ruined and listed["action"] == "manual"
    assert listed["reason"] == "try it" and listed["by"].endswith("(lvm promote)")
    assert main(["rollback", "mamba_s", "--data-dir", str(cli_data)]) == EXIT_OK
    assert f"rolled back from {ruined[:12]} to {good[:12]}" in capsys.readouterr().out
    listed = _promoted_json(cli_data, capsys)["mamba_s"]
    assert listed["build_id"] == good and listed["action"] == "rollback"
    assert listed["demoted"] == [ruined]
    # Back at the first promotion: nothing earlier to roll back to.
    assert main(["rollback", "mamba_s", "--data-dir", str(cli_data)]) == EXIT_FAILED
    assert "no earlier promoted build to roll back to" in capsys.readouterr().err
    # mamba_h was promoted by the gate over its first build: rolling back restores that one.
    assert main(["rollback", "mamba_h", "--data-dir", str(cli_data)]) == EXIT_OK
    assert f"to {builds['first']['mamba_h'][:12]}" in capsys.readouterr().out
    assert _promoted_json(cli_data, capsys)["mamba_h"]["build_id"] == builds["first"]["mamba_h"]
    # A re-run of the gate on the same report does not undo the rollbacks.
    materialize_all(cli_data, selection=["retrieval_report"], resources=QUICK_CANARY)
    listed = _promoted_json(cli_data, capsys)
    assert listed["mamba_h"]["build_id"] == builds["first"]["mamba_h"]
    assert listed["mamba_s"]["build_id"] == good


def _untrained(store: ArtifactStore, variant: str, seed: int) -> Build:
    """A checkpoint build without training (what the CLI checks needs no good weights)."""
    torch.manual_seed(seed)
    return publish_checkpoint(store, LVM(preset(variant, "tiny", d_in=16)),
                              {"variant": variant, "size": "tiny", "payload_build_id": "p" * 64},
                              {})


@pytest.fixture
def untrained(tmp_path) -> tuple[Path, dict[str, Build]]:
    """Two mamba_s checkpoints and a mamba_h one in a fresh data dir; CLI calls set
    LVM_DATA_DIR / DAGSTER_HOME."""
    store = ArtifactStore(tmp_path / "data")
    return store.root, {"s1": _untrained(store, "mamba_s", 0), "s2": _untrained(store, "mamba_s", 1),
                        "h": _untrained(store, "mamba_h", 2)}


def test_promote_by_hand_then_roll_back_step_by_step(untrained, capsys):
    data_dir, builds = untrained
    s1, s2 = builds["s1"].build_id, builds["s2"].build_id
    assert main(["promote", "mamba_s", s1[:8], "--data-dir", str(data_dir)]) == EXIT_OK
    assert main(["promote", "mamba_s", s2, "--reason", "newer", "--data-dir", str(data_dir)]) == 0
    assert f"mamba_s: promoted {s2[:12]} (was {s1[:12]})" in capsys.readouterr().out
    listed = _promoted_json(data_dir, capsys)
    assert listed["mamba_s"]["build_id"] == s2 and listed["mamba_s"]["earlier"] == [s1]
    assert listed["mamba_s"]["reason"] == "newer" and listed["mamba_h"] is None
    assert main(["promote", "mamba_s", s2, "--data-dir", str(data_dir)]) == EXIT_OK
    assert "already the promoted build" in capsys.readouterr().out
    assert main(["rollback", "mamba_s", "--data-dir", str(data_dir)]) == EXIT_OK
    assert f"rolled back from {s2[:12]} to {s1[:12]}" in capsys.readouterr().out
    assert main(["rollback", "mamba_s", "--data-dir", str(data_dir)]) == EXIT_FAILED
    assert "no earlier promoted build to roll back to" in capsys.readouterr().err
    # Every change is a materialization of promoted_mamba_s in the instance.
    with instance_at(data_dir) as instance:
        history = instance.fetch_materializations(promoted_key("mamba_s"), limit=10).records
        assert [r.asset_materialization.metadata["action"].value for r in history] == [
            "rollback", "manual", "manual"]
        assert read_promotion(instance, "mamba_s", no_warning).demoted == (s2,)


def test_promote_refuses_unknown_builds_and_builds_of_another_variant(untrained, capsys):
    data_dir, builds = untrained
    assert main(["promote", "mamba_s", "0123456789ab", "--data-dir", str(data_dir)]) == EXIT_FAILED
    err = capsys.readouterr().err
    assert "lvm promote:" in err and "no models/mamba_s builds start with '0123456789ab'" in err
    h = builds["h"].build_id
    assert main(["promote", "mamba_s", h[:12], "--data-dir", str(data_dir)]) == EXIT_USAGE
    assert f"build {h[:12]} is a mamba_h checkpoint" in capsys.readouterr().err
    assert main(["promote", "mamba_s", "abc", "--data-dir", str(data_dir)]) == EXIT_FAILED
    assert "at least 6 characters" in capsys.readouterr().err
    assert main(["promote", "mamba_q", "abcdef", "--data-dir", str(data_dir)]) == EXIT_USAGE
    capsys.readouterr()
    # A damaged checkpoint is never promoted.
    (builds["s1"].path / "model.safetensors").write_bytes(b"not weights")
    assert main(["promote", "mamba_s", builds["s1"].build_id,
                 "--data-dir", str(data_dir)]) == EXIT_FAILED
    assert "is damaged" in capsys.readouterr().err
    # Nothing above promoted anything.
    assert set(_promoted_json(data_dir, capsys).values()) == {None}


def test_rollback_of_a_never_promoted_variant_says_so(tmp_path, capsys):
    assert main(["rollback", "mamba_xl", "--data-dir", str(tmp_path / "empty")]) == EXIT_FAILED
    assert "mamba_xl was never promoted" in capsys.readouterr().err
    assert main(["models", "--promoted", "--data-dir", str(tmp_path / "empty")]) == EXIT_OK
    assert capsys.readouterr().out.count("never promoted") == len(VARIANTS)


# --------------------------------------------------------------------------- trends


def test_report_compare_pairs_two_reports_over_the_same_queries(cli_data, capsys):
    store = ArtifactStore(cli_data)
    current = read_report(store.current(kinds.REPORT))  # the second retrain's
    assert main(["report", "--compare", "--json", "--data-dir", str(cli_data)]) == EXIT_OK
    comparison = json.loads(capsys.readouterr().out)
    assert comparison["current"] == store.current(kinds.REPORT).build_id
    assert comparison["paired"] and comparison["method"].startswith("paired bootstrap")
    s = comparison["figures"]["mamba_s"]["mrr_at_10"]
    assert s["change"] < 0 and s["high"] < 0 and s["verdict"] == "worse"
    assert s["now"] == current["models"]["mamba_s"]["mrr_at_10"]
    # Unchanged predictors (the promoted builds, the seeded baselines) did not move.
    for name in ("mamba_xl", "copy_last_context", "ridge"):
        r = comparison["figures"][name]["r_at_5"]
        assert r["change"] == 0 and r["low"] == r["high"] == 0
    assert comparison["figures"]["mamba_s"]["contain_at_50"]["low"] is None
    # The same comparison named by build, as Markdown.
    previous = comparison["previous"]
    assert main(["report", "--compare", previous[:10], "--data-dir", str(cli_data)]) == EXIT_OK
    text = capsys.readouterr().out
    assert f"against {previous[:12]}" in text and "## mrr_at_10" in text
    assert "| mamba_s |" in text and "**" not in text and "worse" in text
    assert main(["report", "--compare", "ffffffffff", "--data-dir", str(cli_data)]) == EXIT_FAILED
    assert "no report builds start with 'ffffffffff'" in capsys.readouterr().err


def test_report_compare_without_an_earlier_report_says_so(small_run_copy, capsys):
    assert main(["report", "--compare", "--data-dir", str(small_run_copy)]) == EXIT_FAILED
    assert "no report was materialized before it" in capsys.readouterr().err


def test_selections_never_include_the_promotion_records():
    """promoted_* are external assets: Dagster refuses a run that selects them, so
    `lvm materialize '*'` leaves them out and selecting one alone is a usage error."""
    from lvm_pipeline.cli.common import UsageError
    from lvm_pipeline.cli.materialize import resolve_selection

    everything = {k.to_user_string() for k in resolve_selection("*")}
    assert "retrieval_report" in everything and not any(k.startswith("promoted_")
                                                        for k in everything)
    with pytest.raises(UsageError, match="selects no asset"):
        resolve_selection("key:promoted_mamba_s")


def test_an_event_reported_by_hand_without_a_record_is_skipped_with_a_warning(untrained,
                                                                             capsys):
    """What the UI's *Report materialization event* records on a promotion page: a description
    and nothing else. The state stays the newest valid promotion, and every reader says which
    event it skipped."""
    data_dir, builds = untrained
    s1, s2 = builds["s1"].build_id, builds["s2"].build_id
    assert main(["promote", "mamba_s", s1, "--data-dir", str(data_dir)]) == EXIT_OK
    with instance_at(data_dir) as instance:
        instance.report_runless_asset_event(dg.AssetMaterialization(
            promoted_key("mamba_s"), description="clicked in the UI"))
        warnings: list[str] = []
        assert read_promotion(instance, "mamba_s", warnings.append).build_id == s1
    [warning] = warnings
    assert "skipped the event on promoted_mamba_s" in warning and "not a promotion" in warning
    capsys.readouterr()
    assert _promoted_json(data_dir, capsys)["mamba_s"]["build_id"] == s1
    assert main(["promote", "mamba_s", s2, "--data-dir", str(data_dir)]) == EXIT_OK
    out = capsys.readouterr()
    assert f"mamba_s: promoted {s2[:12]} (was {s1[:12]})" in out.out
    assert "lvm promote: warning: skipped the event on promoted_mamba_s" in out.err
    assert main(["rollback", "mamba_s", "--data-dir", str(data_dir)]) == EXIT_OK
    capsys.readouterr()
    assert _promoted_json(data_dir, capsys)["mamba_s"]["demoted"] == [s2]


def test_promotions_of_one_variant_at_the_same_instant_are_both_recorded_in_order(untrained):
    """Two `lvm promote` processes started together: each reads, decides and writes under the
    promotion lock, so the second builds on the first and neither is lost."""
    import os
    import subprocess
    import sys

    from lvm_pipeline.cli.runner import PROJECT_ROOT

    data_dir, builds = untrained
    env = {**os.environ, "PYTHONPATH": str(PROJECT_ROOT)}
    processes = [subprocess.Popen(
        [sys.executable, "-m", "lvm_pipeline.cli", "promote", "mamba_s", builds[name].build_id,
         "--data-dir", str(data_dir)], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        for name in ("s1", "s2")]
    assert [p.wait(timeout=120) for p in processes] == [0, 0]
    with instance_at(data_dir) as instance:
        history = [Promotion.from_record(r.asset_materialization.metadata["promotion"].value)
                   for r in instance.fetch_materializations(promoted_key("mamba_s"),
                                                            limit=10).records]
    newest, first = history
    assert {newest.build_id, first.build_id} == {builds["s1"].build_id, builds["s2"].build_id}
    assert first.earlier == () and newest.earlier == (first.build_id,)


def test_a_rollback_during_a_gate_run_waits_for_it_and_is_kept(second_retrain, cli_data,
                                                               monkeypatch, capsys):
    """The gate reads the promotion state, scores, then writes; an `lvm rollback` issued while
    it scores waits for the promotion lock and lands after the gate's promotion, and a later
    gate run never re-promotes the build the rollback demoted. The interleaving is forced: the
    gate pauses after scoring until the rollback is waiting on the lock."""
    import threading
    import types

    from lvm_pipeline.defs import checks, promoted_models

    _, builds, _ = second_retrain
    first_h, nudged = builds["first"]["mamba_h"], builds["nudged"]
    # mamba_h by hand back to its first build: the report's candidate (nudged) differs from it,
    # so the gate promotes nudged, and a rollback then has somewhere to go.
    assert main(["promote", "mamba_h", first_h, "--data-dir", str(cli_data)]) == EXIT_OK
    capsys.readouterr()

    waiting = threading.Event()
    rollback = threading.Thread(target=lambda: codes.append(
        main(["rollback", "mamba_h", "--data-dir", str(cli_data)])))
    codes: list[int] = []
    real_flock = promoted_models.fcntl.flock

    def flock(handle, operation):
        if threading.current_thread() is rollback:
            waiting.set()
        return real_flock(handle, operation)

    monkeypatch.setattr(promoted_models, "fcntl", types.SimpleNamespace(
        flock=flock, LOCK_EX=promoted_models.fcntl.LOCK_EX))
    gate_report = checks.gate_report
    held_the_rollback: list[bool] = []

    def scoring_while_a_rollback_arrives(*args, **kwargs):
        decisions = gate_report(*args, **kwargs)
        rollback.start()
        assert waiting.wait(timeout=60), "the rollback never reached the promotion lock"
        rollback.join(timeout=1.0)
        held_the_rollback.append(rollback.is_alive())
        return decisions

    monkeypatch.setattr(checks, "gate_report", scoring_while_a_rollback_arrives)
    gate = dg.AssetSelection.checks(dg.AssetCheckKey(dg.AssetKey("retrieval_report"),
                                                     "check_candidates_not_worse"))
    result = materialize_all(cli_data, selection=gate, resources=QUICK_CANARY)
    # The gate decided (it holds back the ruined mamba_s, as in every run on this report).
    assert "mamba_h" in check_evaluations(result)["check_candidates_not_worse"].description
    rollback.join(timeout=60)
    assert held_the_rollback == [True] and codes == [EXIT_OK]
    assert f"rolled back from {nudged[:12]} to {first_h[:12]}" in capsys.readouterr().out

    listed = _promoted_json(cli_data, capsys)["mamba_h"]
    assert listed["build_id"] == first_h and listed["action"] == "rollback"
    assert listed["demoted"] == [nudged]  # what the gate had promoted, then the rollback undid
    monkeypatch.setattr(checks, "gate_report", gate_report)
    materialize_all(cli_data, selection=gate, resources=QUICK_CANARY)
    assert _promoted_json(cli_data, capsys)["mamba_h"]["build_id"] == first_h
