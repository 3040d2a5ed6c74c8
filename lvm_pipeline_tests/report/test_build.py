"""build_report on a synthetic payload with one tiny checkpoint: the trained baselines, the
paired bootstrap and the query sample in report.json, report.md and queries.parquet; trends
between two reports and the promotion gate on the same artifacts."""

from __future__ import annotations

import copy
import json

import numpy as np
import pandas as pd
import pytest
import torch

from lvm_pipeline.evaluation import forward_signal_per_window
from lvm_pipeline.evaluation.bootstrap import VERDICTS
from lvm_pipeline.evaluation.metrics import EvalConfig
from lvm_pipeline.report.build import (
    ReportInputs,
    build_report,
    fit_report_baselines,
    publish_report,
    query_ranks,
    read_report,
    report_latency,
    report_predictors,
    rescore,
)
from lvm_pipeline.report.diagnosis import diagnose
from lvm_pipeline.report.promotion import Promotion, PromotionConfig, gate_report
from lvm_pipeline.report.render import (
    NBSP,
    RESULT_COLUMNS,
    figure_decimals,
    lineage_markdown,
    render_markdown,
    results_rows,
    trend_figures,
)
from lvm_pipeline.report.trends import PAIRED, UNPAIRED, compare_reports
from lvm_pipeline.report.trends import comparison_markdown as trends_markdown
from lvm_pipeline.search.index import IndexConfig, load_index, publish_index
from lvm_pipeline.sequences.windows import (
    SplitConfig,
    build_windows,
    load_sets,
    native_info,
    publish_sequences,
)
from lvm_pipeline.store import kinds
from lvm_pipeline.store.artifacts import ArtifactStore
from lvm_pipeline.training.checkpoint import load_checkpoint, publish_checkpoint
from lvm_pipeline.training.config import TrainConfig
from lvm_pipeline.training.loop import train_variant
from lvm_pipeline_tests.conftest import publish_synthetic_payload


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    """A published payload, train and eval sets, flat index and a one-epoch mamba_s."""
    store = ArtifactStore(tmp_path_factory.mktemp("report") / "data")
    lengths = [int(n) for n in np.random.default_rng(2).integers(8, 17, size=50)]
    payload = publish_synthetic_payload(store, lengths)
    sets = build_windows(payload, SplitConfig())
    train = publish_sequences(store, kinds.TRAIN_SEQUENCES, payload, sets, native_info(SplitConfig()))
    ev = publish_sequences(store, kinds.EVAL_SEQUENCES, payload, sets, native_info(SplitConfig()))
    index = publish_index(store, payload, IndexConfig())
    model, _ = train_variant(store, "mamba_s", "tiny", payload, train,
                             TrainConfig(epochs=1, batch_size=32), 0.99)
    return store, payload, index, ev, train, {"mamba_s": model}


def _report_inputs(inputs) -> ReportInputs:
    _, payload, index, ev, train, models = inputs
    return ReportInputs(payload, index, load_index(index, payload), ev, load_sets(ev)["eval"],
                        train, load_sets(train), models)


def _report(inputs, config=None):
    report_inputs = _report_inputs(inputs)
    predictors = report_predictors(report_inputs, fit_report_baselines(report_inputs))
    report, results = build_report(report_inputs, predictors, config)
    return report, results, report_inputs.eval_set


@pytest.fixture(scope="module")
def built(inputs):
    """One report over ``inputs``: its inputs, predictors, content and per-query results."""
    report_inputs = _report_inputs(inputs)
    predictors = report_predictors(report_inputs, fit_report_baselines(report_inputs))
    report, results = build_report(report_inputs, predictors)
    return report_inputs, predictors, report, results


def test_every_model_gets_intervals_and_a_verdict_against_every_baseline(built):
    report_inputs, _, report, _ = built
    eval_set = report_inputs.eval_set
    assert {"learned_blend", "linear_infonce"} <= set(report["baselines"])
    assert report["trained_baselines"]["learned_blend"]["n_params"] == 5
    conf = report["confidence"]
    assert conf["resamples"] == 1000 and conf["n_queries"] == len(eval_set) == report["n_queries"]
    assert set(conf["intervals"]) == {"mamba_s", *report["baselines"]}
    assert set(conf["differences"]["mamba_s"]) == set(report["baselines"]) - {"oracle"}
    for name, by_metric in conf["intervals"].items():
        group = "models" if name == "mamba_s" else "baselines"
        for metric, i in by_metric.items():
            assert i["low"] <= i["value"] <= i["high"]
            assert i["value"] == pytest.approx(report[group][name][metric])
    for d in conf["differences"]["mamba_s"].values():
        assert {m["verdict"] for m in d.values()} <= set(VERDICTS)
    assert conf["mrr_at_10_resolution"] > 0
    assert report["query_sample"]["windows"] is None
    use = report["sequence_use"]["mamba_s"]
    assert len(use["context_mix"]) == 5 and use["correction_norm_mean"] > 0
    assert set(use["network_only"]) == set(use["blend_only"]) == {"mrr_at_10", "r_at_5"}
    assert use["shuffle_drop_mrr_at_10"] == pytest.approx(
        report["models"]["mamba_s"]["mrr_at_10"] - use["shuffled_mrr_at_10"])
    text = render_markdown(report)
    assert "## Confidence intervals and verdicts" in text and "**Resolution:**" in text
    assert "## Does each model use the sequence?" in text
    json.dumps(report)  # report.json must serialise


# Schema 1's columns that were one number in every row of every report (one truth per query,
# exact search) or a timing (another number on every run).
DROPPED = {"r_at_50", "rank_share_top_50", "margin_positive_share", "n_queries",
           "latency_p50_ms", "latency_p95_ms"}


def _keys(value) -> set[str]:
    """Every key at any depth of a JSON value."""
    if isinstance(value, dict):
        return set(value) | {k for v in value.values() for k in _keys(v)}
    if isinstance(value, list):
        return {k for v in value for k in _keys(v)}
    return set()


def test_report_json_has_one_column_per_figure_no_timing_and_the_forward_signal(built):
    report_inputs, _, report, results = built
    assert report["schema_version"] == 2
    for name, row in [*report["models"].items(), *report["baselines"].items()]:
        assert not DROPPED & set(row), name
        # With the flat index Contain@50 is the exact top-50 share: the one column for it.
        assert row["contain_at_50"] == pytest.approx(np.mean(results[name].ranks <= 50)), name
    assert not {k for k in _keys(report) if k.endswith(("_ms", "seconds"))}
    signal = report["forward_signal"]
    assert signal["n_windows"] == report["n_queries"]
    assert signal["low"] <= signal["value"] <= signal["high"]
    assert signal["value"] == pytest.approx(forward_signal_per_window(
        report_inputs.payload.vectors, report_inputs.eval_set).mean())
    assert f"**Forward signal {signal['value']:+.4f}**" in render_markdown(report)


def test_a_report_over_the_same_inputs_is_the_same_build(inputs, built, tmp_path):
    """Everything a report build holds is a function of its inputs: rebuilt from scratch (the
    baselines trained again, the plots drawn again) into another store, it is the same bytes,
    so the same build id and the same data version in Dagster."""
    _, _, report, results = built
    first = publish_report(inputs[0], report, results, built[0].eval_set)
    again, again_results, eval_set = _report(inputs)
    second = publish_report(ArtifactStore(tmp_path / "again"), again, again_results, eval_set)
    assert second.manifest["files"] == first.manifest["files"]
    assert second.build_id == first.build_id


def test_the_ui_table_rounds_to_what_the_eval_set_resolves(built):
    report_inputs, predictors, report, _ = built
    latency = report_latency(report_inputs, predictors)
    assert set(latency) == set(report["models"]) | set(report["baselines"]) - {"oracle"}
    assert all(0 < t["latency_p50_ms"] <= t["latency_p95_ms"] for t in latency.values())
    rows = results_rows(report, latency)
    assert [r["predictor"] for r in rows] == [*report["models"], *report["baselines"]]
    assert rows[-1]["predictor"] == "oracle"
    assert all(list(r) == [name for name, _, _ in RESULT_COLUMNS] for r in rows)
    conf = report["confidence"]
    d = figure_decimals(conf["mrr_at_10_resolution"])
    i = conf["intervals"]["mamba_s"]["mrr_at_10"]
    # One line per cell in the UI: no space a table could wrap at.
    assert rows[0]["MRR@10"] == f"{i['value']:.{d}f} [{i['low']:.{d}f}, {i['high']:.{d}f}]" \
        .replace(" ", NBSP)
    diff = conf["differences"]["mamba_s"]["learned_blend"]["mrr_at_10"]
    assert rows[0]["MRR@10 − learned_blend"] == (
        f"{diff['value']:+.{d}f} [{diff['low']:+.{d}f}, {diff['high']:+.{d}f}] {diff['verdict']}"
        .replace(" ", NBSP))
    assert rows[-1]["MRR@10 − copy_last_context"] == "" and rows[-1]["latency ms p50 / p95"] == ""
    assert rows[-1]["median rank"] == 1.0
    assert [figure_decimals(r) for r in (None, 0.03, 0.007, 0.001, 0.0007, 1e-6)] == [
        3, 3, 3, 3, 4, 4]
    assert set(trend_figures(report)) == {"mamba_s/mrr_at_10", "mamba_s/r_at_5",
                                          "copy_last_context/mrr_at_10",
                                          "learned_blend/mrr_at_10"}
    assert f"eval set `{report['eval_id'][:12]}`" in lineage_markdown(report)


def _as_schema_1(report: dict) -> dict:
    """``report`` as schema 1 wrote it: the duplicate columns, the timings, no forward signal."""
    old = copy.deepcopy(report)
    old["schema_version"] = 1
    del old["forward_signal"]
    for row in [*old["models"].values(), *old["baselines"].values()]:
        row.update(r_at_50=row["contain_at_50"], rank_share_top_50=row["contain_at_50"],
                   margin_positive_share=row["r_at_1"], n_queries=old["n_queries"],
                   latency_p50_ms=0.5, latency_p95_ms=0.9)
    for record in old["trained_baselines"].values():
        record["train_seconds"] = 1.0
    return old


def test_a_schema_1_report_still_renders_compares_and_diagnoses(inputs, built):
    store = inputs[0]
    report_inputs, _, report, results = built
    v1 = publish_report(store, _as_schema_1(report), results, report_inputs.eval_set)
    v2 = publish_report(store, report, results, report_inputs.eval_set)
    old = read_report(v1)
    assert old["schema_version"] == 1
    text = render_markdown(old)
    assert "| mamba_s |" in text and "Forward signal" not in text
    # Read back, report.json's keys are sorted: the tables still end on the oracle.
    assert results_rows(old)[0]["predictor"] == "mamba_s"
    assert results_rows(old)[-1]["predictor"] == "oracle"
    table = [line for line in text.split("## Cosine")[0].splitlines() if line.startswith("| ")]
    assert table[-1].startswith("| *oracle* |")
    for now, before in ((v2, v1), (v1, v2)):
        comparison = compare_reports(now, before)
        assert comparison["paired"]
        assert comparison["figures"]["mamba_s"]["mrr_at_10"]["change"] == 0
        assert "| mamba_s |" in trends_markdown(comparison)
    store.set_current(v1)
    assert "MRR@10 − learned_blend:" in diagnose(store, "mamba_s", n_examples=1)


def test_a_query_sample_is_seeded_recorded_and_keeps_window_indices(inputs):
    store = inputs[0]
    config = EvalConfig(sample_queries=15, sample_seed=3)
    report, results, eval_set = _report(inputs, config)
    sample = report["query_sample"]
    assert report["n_queries"] == sample["n_queries"] == 15 == report["confidence"]["n_queries"]
    assert sample["n_eval_windows"] == len(eval_set) > 15 and sample["seed"] == 3
    windows = np.asarray(sample["windows"])
    assert len(np.unique(windows)) == 15 and windows.max() < len(eval_set)
    again, _, _ = _report(inputs, config)
    assert again["query_sample"]["windows"] == sample["windows"]
    assert again["confidence"] == report["confidence"]
    build = publish_report(store, report, results, eval_set)
    queries = pd.read_parquet(build.file("queries.parquet"))
    oracle = queries[queries["predictor"] == "oracle"]
    np.testing.assert_array_equal(oracle["query"], windows)
    np.testing.assert_array_equal(oracle["target_row"], eval_set.target_row[windows])
    assert "a seeded sample, seed 3" in (build.path / "report.md").read_text()
    store.set_current(build)  # `lvm diagnose` reads the current report, sampled or not
    text = diagnose(store, "mamba_s", n_examples=1)
    assert "15 eval queries" in text and "Does mamba_s use the sequence?" in text
    assert "MRR@10 − learned_blend:" in text
    with pytest.raises(ValueError, match="sample_queries must be None"):
        EvalConfig(sample_queries=0)


def test_reports_of_different_queries_compare_unpaired_from_their_own_intervals(inputs, built):
    store = inputs[0]
    report_inputs, _, full, full_results = built
    eval_set = report_inputs.eval_set
    sampled, sampled_results, _ = _report(inputs, EvalConfig(sample_queries=15, sample_seed=3))
    now = publish_report(store, full, full_results, eval_set)
    before = publish_report(store, sampled, sampled_results, eval_set)
    comparison = compare_reports(now, before)
    assert not comparison["paired"] and comparison["method"] == UNPAIRED
    assert comparison["n_queries"] == {"now": len(eval_set), "before": 15}
    row = comparison["figures"]["mamba_s"]["mrr_at_10"]
    a = full["confidence"]["intervals"]["mamba_s"]["mrr_at_10"]
    b = sampled["confidence"]["intervals"]["mamba_s"]["mrr_at_10"]
    half = np.hypot((a["high"] - a["low"]) / 2, (b["high"] - b["low"]) / 2)
    assert row["change"] == pytest.approx(a["value"] - b["value"])
    assert (row["low"], row["high"]) == pytest.approx((row["change"] - half, row["change"] + half))
    assert "oracle" not in comparison["figures"]
    # The same queries pair: a report against itself changed by exactly nothing.
    same = compare_reports(now, now)
    assert same["paired"] and same["method"] == PAIRED
    assert all(r["change"] == 0 and r["verdict"] in (None, "indistinguishable")
               for by_metric in same["figures"].values() for r in by_metric.values())
    assert "unpaired" in trends_markdown(comparison) and "| mamba_s |" in trends_markdown(same)


def test_the_gate_scores_the_promoted_checkpoint_on_the_reports_queries(inputs):
    """gate_report on real artifacts: the first report promotes; a report over a ruined
    candidate holds it against the promoted one, which is re-scored on the same queries."""
    store, *_, models = inputs
    good = models["mamba_s"]
    report, results, eval_set = _report(inputs)
    first = publish_report(store, report, results, eval_set)
    [decision] = gate_report(store, first, {})
    assert decision.promote and decision.reason == "first promotion of mamba_s"
    promoted = Promotion("mamba_s", good.build_id, "gate", "gate (run r1)", decision.reason)
    # The promoted checkpoint re-scored through the report's index ranks exactly as the report.
    np.testing.assert_array_equal(rescore(store, first, {"mamba_s": good})["mamba_s"],
                                  query_ranks(first)["mamba_s"])
    model, info = load_checkpoint(good)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=torch.Generator().manual_seed(0)))
    ruined = publish_checkpoint(store, model, info, dict(good.manifest["upstream"]))
    worse_inputs = (*inputs[:5], {"mamba_s": ruined})
    report, results, eval_set = _report(worse_inputs)
    second = publish_report(store, report, results, eval_set)
    [held] = gate_report(store, second, {"mamba_s": promoted})
    assert held.held and held.candidate == ruined.build_id and held.promoted == good.build_id
    assert held.difference["high"] < 0 and "stays promoted" in held.reason
    [tolerated] = gate_report(store, second, {"mamba_s": promoted}, PromotionConfig(margin=1.0))
    assert tolerated.promote
    demoted = promoted.succeeded_by(ruined.build_id, "manual", "me", "").rolled_back("me")
    [refused] = gate_report(store, second, {"mamba_s": demoted})
    assert refused.held and "a rollback demoted it" in refused.reason
