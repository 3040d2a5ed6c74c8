"""End to end through Dagster: the small default graph, and the blocking alignment check."""

from __future__ import annotations

import json
from pathlib import Path

import dagster as dg
import numpy as np

from lvm_pipeline.cli.run_config import TrainingSequencesParams
from lvm_pipeline.defs.code_versions import code_version
from lvm_pipeline.interop.reference_npz import export_training_npz
from lvm_pipeline.models import VARIANTS
from lvm_pipeline.payload.payload import current_payload
from lvm_pipeline.sequences.windows import load_sets
from lvm_pipeline.store import kinds
from lvm_pipeline.store.artifacts import ArtifactStore, sha256_file
from lvm_pipeline_tests.conftest import (
    check_evaluations,
    materialize_all,
    materialized,
    snapshot_files,
)

ALL_KEYS = {"corpus", "payload", "aligned_training_sequences", "aligned_eval", "faiss_index",
            "retrieval_report", *VARIANTS}
CHECKS = {"check_payload_integrity@payload", "check_payload_embedder_canary@payload",
          "check_training_sequences_aligned@aligned_training_sequences",
          "check_training_truth_keys@aligned_training_sequences",
          "check_training_learnable@aligned_training_sequences",
          "check_splits_disjoint@aligned_training_sequences",
          "check_eval_sequences_aligned@aligned_eval", "check_eval_truth_keys@aligned_eval",
          "check_splits_disjoint@aligned_eval", "check_index_matches_payload@faiss_index",
          "check_report_lineage@retrieval_report", "check_report_oracle@retrieval_report",
          "check_candidates_not_worse@retrieval_report",
          *(f"{check}@{variant}" for variant in VARIANTS
            for check in ("check_weights_finite", "check_trained_on_its_sequences",
                          "check_beats_copy_last_on_val"))}
# A finding, not a data defect: it warns and blocks nothing.
WARNINGS = {f"check_beats_copy_last_on_val@{variant}" for variant in VARIANTS}
# External assets: the promotion records (defs/promotion.py), written by the gate, not a step.
PROMOTED_KEYS = {f"promoted_{v}" for v in VARIANTS}


def test_definitions_load_with_every_asset_check_and_job():
    from lvm_pipeline.definitions import defs

    keys = {k.to_user_string() for k in defs().resolve_asset_graph().get_all_asset_keys()}
    assert keys == ALL_KEYS | PROMOTED_KEYS
    graph = defs().resolve_asset_graph()
    checks = {f"{c.name}@{c.asset_key.to_user_string()}" for c in graph.asset_check_keys}
    assert checks == CHECKS
    # Everything training or evaluation reads is guarded by a blocking check.
    assert {f"{c.name}@{c.asset_key.to_user_string()}" for c in graph.asset_check_keys
            if not graph.get_check_spec(c).blocking} == WARNINGS
    assert defs().resolve_job_def("full_retrain").description


def test_small_default_run_materializes_everything_with_verifiable_metadata(small_run):
    data_dir, result = small_run
    assert materialized(result) == ALL_KEYS
    evaluations = check_evaluations(result)
    assert {k for k in evaluations if "@" in k} == CHECKS
    blocking = {k: c for k, c in evaluations.items() if "@" in k and k not in WARNINGS}
    assert all(c.passed for c in blocking.values()), [
        c.description for c in blocking.values() if not c.passed]
    for name in WARNINGS:  # a two-epoch model may or may not beat copy-last; it says which
        warning = evaluations[name]
        assert warning.severity == dg.AssetCheckSeverity.WARN
        assert ("copy-last" in warning.description) and "best_val_mrr_at_10" in warning.metadata

    store = ArtifactStore(data_dir)
    payload = current_payload(store)
    # Every materialization's sha256 metadata is the hash of the file on disk, and the
    # downstream assets name the payload they were built from.
    for event in result.get_asset_materialization_events():
        meta = event.materialization.metadata
        folder = Path(meta["path"].value)
        files = meta["files"].value  # one JSON entry, not two rows per file
        assert files, event.asset_key
        manifest = json.loads((folder / "manifest.json").read_text())
        assert files == manifest["files"]
        for name, info in manifest["files"].items():
            assert sha256_file(folder / name) == info["sha256"]
        # Each asset's own code version, the one Dagster compares for "code version changed".
        asset = event.asset_key.to_user_string()
        assert event.materialization.tags["dagster/code_version"] == code_version(asset)
        # The build id is the materialization's data version: Dagster's staleness is ours.
        assert event.materialization.tags["dagster/data_version"] == meta["build_id"].value
        if event.asset_key.to_user_string() not in ("corpus",):
            assert meta["payload_build_id"].value == payload.build_id

    report = json.loads(store.current("report").file("report.json").read_text())
    assert report["schema_version"] == 2 and report["oracle_ok"] and not report["warnings"]
    assert report["payload_build_id"] == payload.build_id
    assert set(report["models"]) == set(VARIANTS)
    assert set(report["baselines"]) == {"copy_last_context", "mean_of_context", "ridge",
                                        "learned_blend", "linear_infonce", "oracle"}
    assert set(report["trained_baselines"]) == {"learned_blend", "linear_infonce"}
    assert report["baselines"]["oracle"]["r_at_1"] == 1.0
    assert report["n_queries"] > 0
    required = {"r_at_1", "r_at_5", "r_at_10", "contain_at_50", "eff_at_5", "mrr_at_10",
                "median_rank", "contrastive_accuracy", "paraphrase_ratio"}
    for name, metrics in [*report["models"].items(), *report["baselines"].items()]:
        assert required <= set(metrics), name
        assert 0 <= metrics["r_at_1"] <= metrics["r_at_5"] <= metrics["r_at_10"] <= 1
        assert metrics["median_rank"] >= 1
    for metrics in report["models"].values():
        assert metrics["val_cos"] > 0
    assert report["forward_signal"]["n_windows"] == report["n_queries"]
    report_build = store.current("report")
    md = (report_build.path / "report.md").read_text()
    assert "copy_last_context" in md and "mamba_sandwich" in md and "plots/margins.png" in md
    assert {"plots/rank_of_truth.png", "plots/margins.png", "plots/r5_mrr_bars.png",
            "queries.parquet"} <= set(report_build.manifest["files"])
    event = next(e for e in result.get_asset_materialization_events()
                 if e.asset_key.to_user_string() == "retrieval_report")
    meta = event.materialization.metadata
    _assert_report_page(meta, report)
    conf = report["confidence"]
    assert set(conf["differences"]) == set(VARIANTS) and conf["resamples"] >= 1000
    assert set(report["sequence_use"]) == set(VARIANTS)
    assert "## Confidence intervals and verdicts" in md and "use the sequence" in md
    manifest = store.current("payload").manifest
    assert manifest["embedder"]["weights_sha256"] and manifest["norm"] == "l2"
    assert 0.2 < manifest["adjacent_cosine_mean"] < 0.9


def _assert_report_page(meta: dict, report: dict) -> None:
    """The report's page in the UI: the results table first (a table, drawn without a click),
    then the forward signal, one lineage block and the plots; numbers only for the figures
    worth plotting across retrains; the per-file hashes last."""
    labels = list(meta)
    assert labels[:4] == ["results", "forward_signal", "lineage", "plots"]
    assert labels[-1] == "files" and "upstream" not in meta  # the lineage block says it once
    table = meta["results"]
    assert isinstance(table, dg.TableMetadataValue)
    assert [c.name for c in table.schema.columns] == [
        "predictor", "MRR@10", "R@1", "R@5", "R@10", "Contain@50", "median rank",
        "MRR@10 − copy_last_context", "MRR@10 − learned_blend", "latency ms p50 / p95"]
    rows = [record.data for record in table.records]
    # report.json's keys are sorted; the table keeps the models first and the oracle last.
    assert {r["predictor"] for r in rows[:len(VARIANTS)]} == set(VARIANTS)
    assert {r["predictor"] for r in rows[len(VARIANTS):-1]} == set(report["baselines"]) - {"oracle"}
    assert rows[-1]["predictor"] == "oracle" and rows[-1]["R@1"].startswith("1.000")
    assert all(r["MRR@10 − learned_blend"].split()[-1] in ("better", "indistinguishable", "worse")
               and r["latency ms p50 / p95"] for r in rows[:len(VARIANTS)])
    assert "Forward signal" in meta["forward_signal"].value
    assert report["lineage"]["payload"][:12] in meta["lineage"].value
    assert "data:image/png;base64," in meta["plots"].value
    numbers = {k for k, v in meta.items()
               if isinstance(v, dg.FloatMetadataValue | dg.IntMetadataValue)}
    assert numbers == {*(f"{v}/{m}" for v in VARIANTS for m in ("mrr_at_10", "r_at_5")),
                       "copy_last_context/mrr_at_10", "learned_blend/mrr_at_10"}
    for label in numbers:
        name, metric = label.split("/")
        group = "models" if name in VARIANTS else "baselines"
        assert meta[label].value == report[group][name][metric]
    assert set(meta["baseline_train_seconds"].value) == {"learned_blend", "linear_infonce"}
    assert "**Resolution:**" in meta["confidence"].value and "| mamba_s |" in meta["confidence"].value
    assert "| mamba_gr |" in meta["sequence_use"].value


def test_a_report_over_the_same_builds_has_the_same_data_version(small_run, small_run_copy):
    """Rematerialized over the same builds, the report is the same build: Dagster sees the
    same data version, and nothing downstream of it turns stale."""
    _, first_run = small_run
    [first] = [e for e in first_run.get_asset_materialization_events()
               if e.asset_key.to_user_string() == "retrieval_report"]
    result = materialize_all(small_run_copy, selection=["retrieval_report"])
    assert result.success
    [again] = result.get_asset_materialization_events()
    assert again.materialization.tags["dagster/data_version"] == \
        first.materialization.tags["dagster/data_version"]


def _misaligned_npz(data_dir: Path, tmp_path: Path, how: str) -> Path:
    """Our own training windows exported, then broken the way the reference's were."""
    store = ArtifactStore(data_dir)
    payload = current_payload(store)
    sets = load_sets(store.current(kinds.TRAIN_SEQUENCES))
    path = export_training_npz(tmp_path / "train.npz", payload, sets, {"test": how})
    with np.load(path) as npz:
        data = dict(npz)
    rng = np.random.default_rng(0)
    if how == "shuffled":
        data["target_vectors"] = data["target_vectors"][rng.permutation(len(data["target_vectors"]))]
    else:  # another embedding: same geometry, other coordinates (a random rotation)
        q, _ = np.linalg.qr(rng.standard_normal((payload.dim, payload.dim)))
        data["target_vectors"] = (data["target_vectors"] @ q).astype(np.float32)
    np.savez(path, **data)
    return path


def test_misaligned_training_set_is_blocked_before_any_checkpoint(small_run_copy, tmp_path):
    data_dir = small_run_copy
    before = snapshot_files(data_dir / "models") | snapshot_files(data_dir / "report")
    for how in ("shuffled", "other_embedding"):
        npz = _misaligned_npz(data_dir, tmp_path, how)
        result = materialize_all(
            data_dir, selection=["aligned_training_sequences", *VARIANTS],
            ops={"aligned_training_sequences": TrainingSequencesParams(import_npz=str(npz))})
        check = check_evaluations(result)["check_training_sequences_aligned"]
        assert not check.passed, how
        assert "MISALIGNED" in check.description and "threshold 0.99" in check.description
        assert check.metadata["min_cosine_to_payload"].value < 0.99
        assert not result.success
        assert materialized(result) == {"aligned_training_sequences"}, how
    # The checkpoints and report that were good before are untouched, and no new one appeared.
    assert snapshot_files(data_dir / "models") | snapshot_files(data_dir / "report") == before


def test_trainer_refuses_misaligned_sequences_in_a_run_without_the_check(small_run_copy,
                                                                          tmp_path):
    data_dir = small_run_copy
    npz = _misaligned_npz(data_dir, tmp_path, "shuffled")
    materialize_all(data_dir, selection=["aligned_training_sequences"],
                    ops={"aligned_training_sequences": TrainingSequencesParams(import_npz=str(npz))})
    before = snapshot_files(data_dir / "models")
    result = materialize_all(data_dir, selection=["mamba_s"])
    assert not result.success
    failure = next(e for e in result.all_events if e.event_type_value == "STEP_FAILURE")
    assert "MISALIGNED" in str(failure.event_specific_data.error.to_string())
    assert snapshot_files(data_dir / "models") == before


def test_diagnose_shows_texts_of_context_truth_and_impostors(small_run, capsys):
    from lvm_pipeline.cli import main

    data_dir, _ = small_run
    assert main(["diagnose", "mamba_s", "--data-dir", str(data_dir), "--examples", "2"]) == 0
    out = capsys.readouterr().out
    assert "Rank of the true next chunk" in out and "Margin cos(truth)" in out
    assert out.count("TRUTH [") == 2 and "impostor 1 [" in out and "context -5 [" in out
    assert main(["diagnose", "nope", "--data-dir", str(data_dir)]) == 1
    assert "valid: copy_last_context" in capsys.readouterr().err
