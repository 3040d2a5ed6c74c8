"""The retrieval report: every model and baseline scored the same way on the eval split.

Files of a ``report`` build: ``report.json`` (schema below), ``report.md`` (tables and plot
links), ``queries.parquet`` (per query and predictor: rank of truth, the three best impostors,
cosines, paraphrase ratio; what ``lvm diagnose`` reads) and ``plots/*.png``.

``report.json`` (``schema_version`` 2; keys are stable, new keys may be added; a report's
bytes are a function of its inputs alone, so a rebuild over the same inputs is the same build:
no timings, which the asset records as metadata instead)::

    {"schema_version", "payload_build_id", "index_id", "eval_id", "train_sequences_id",
     "lineage": {"payload", "index", "sequences/eval", "sequences/train",
                 "models": {variant: checkpoint build id}}  (lvm_pipeline/store/lineage.py),
     "n_queries" (the queries scored), "exclude_context",
     "search_device" ("cpu" | a torch device), "oracle_ok",
     "query_sample": {"n_eval_windows", "n_queries", "requested" (None: all), "seed",
                      "windows": [eval window indices scored, sorted] | None (all)},
     "warnings": [str],
     "models": {variant: {<metric>: float, ..., "checkpoint_id", "best_epoch", "val_cos",
                          "loss", "n_params"}},
     "baselines": {"copy_last_context" | "mean_of_context" | "ridge" | "learned_blend" |
                   "linear_infonce" | "oracle": {<metric>: float, ...}},
     "forward_signal": {"value", "low", "high", "level", "n_windows"}  (the scored windows'
                       mean cos(last, next) − cos(last, previous) with its bootstrap interval;
                       lvm_pipeline/evaluation/forward_signal.py),
     "trained_baselines": {"learned_blend" | "linear_infonce":
                           {"train_config", "n_train_windows", "best_epoch", "epochs_run",
                            "stopped_early", "best_val_mrr_at_10", "context_mix": [5 floats],
                            "n_params"}}  (lvm_pipeline/report/trained_baselines.py),
     "sequence_use": {variant: {"context_mix": [5 floats] | None, "blend_norm_mean",
                                "correction_norm_mean", "correction_to_blend",
                                "network_only": {"mrr_at_10", "r_at_5"},
                                "blend_only": {"mrr_at_10", "r_at_5"} | None,
                                "shuffled_mrr_at_10", "shuffle_drop_mrr_at_10",
                                "shuffle_seed"}}  (lvm_pipeline/evaluation/sequence_use.py),
     "confidence": {"method", "resamples", "seed", "level", "n_queries", "metrics",
                    "intervals": {predictor: {metric: {"value", "low", "high"}}},
                    "differences": {model: {baseline (not the oracle):
                                    {metric: {"value", "low", "high", "verdict"}}}},
                    "mrr_at_10_resolution", "resolution" (what it is, in words),
                    "mrr_at_10_resolution_per_model"}  (lvm_pipeline/evaluation/bootstrap.py;
                    metrics mrr_at_10, r_at_1, r_at_5; verdict better | indistinguishable |
                    worse)}

Metrics (snake_case): r_at_1, r_at_5, r_at_10, contain_at_50, eff_at_5, mrr, mrr_at_10,
median_rank, p90_rank, rank_share_top_500 / _5000, rank_share_beyond_10000, cos_truth_mean,
cos_impostor_mean, margin_mean, margin_above_0_05_share, contrastive_accuracy,
paraphrase_ratio, paraphrase_share_above_1.

Version 1 (every reader here still reads it: `lvm report`, ``--compare``, `lvm diagnose`) had
no forward_signal and, besides, r_at_50 and rank_share_top_50 (with an exact index, the default,
both equal contain_at_50), margin_positive_share (then equal to r_at_1), n_queries in every row,
latency_p50_ms / latency_p95_ms in every row and train_seconds per trained baseline.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import faiss
import numpy as np
import pandas as pd
import torch

from lvm_pipeline.embedding import sample_rows
from lvm_pipeline.evaluation import (
    BootstrapConfig,
    EvalConfig,
    Predictor,
    QuerySetResult,
    baseline_predictors,
    confidence,
    evaluate,
    latency_ms,
    measure_forward_signal,
    measure_sequence_use,
    oracle,
)
from lvm_pipeline.payload import Payload, gather, payload_of
from lvm_pipeline.report.render import render_markdown, write_plots
from lvm_pipeline.report.trained_baselines import (
    TrainedBaseline,
    fit_trained_baselines,
    recipe_of,
)
from lvm_pipeline.runtime import Progress, silent
from lvm_pipeline.search import load_index
from lvm_pipeline.sequences import SequenceSet, load_sets
from lvm_pipeline.store import (
    ArtifactError,
    ArtifactStore,
    Build,
    as_upstream,
    kinds,
    recorded_inputs,
    report_lineage,
)
from lvm_pipeline.training import TrainConfig, checkpoint_info, load_checkpoint

SCHEMA_VERSION = 2
# R@1 of the oracle (the truth searched for itself) below this means the index or the keys
# are broken; 0.99 leaves room only for exact duplicate vectors.
ORACLE_MIN_R_AT_1 = 0.99
# Every predictor's figures that `lvm report --compare` follows across retrains and the
# report's MLflow run logs (the UI plots fewer: lvm_pipeline/report/render.py, MODEL_TRENDS).
HEADLINE_METRICS = ("mrr_at_10", "r_at_1", "r_at_5", "contain_at_50")


def model_predictor(model: torch.nn.Module) -> Predictor:
    @torch.no_grad()
    def run(context: np.ndarray) -> np.ndarray:
        return model(torch.from_numpy(np.ascontiguousarray(context))).float().numpy()

    return run


def _predict_all(predictor: Predictor, vectors: np.ndarray, seqs: SequenceSet,
                 batch_size: int) -> np.ndarray:
    out = [predictor(gather(vectors, seqs.context_rows[lo:lo + batch_size]))
           for lo in range(0, len(seqs), batch_size)]
    return np.concatenate(out) if out else np.empty((0, vectors.shape[1]), np.float32)


def query_sample(n_windows: int, config: EvalConfig) -> np.ndarray | None:
    """The eval windows a report scores: None (all of them) or ``config.sample_queries`` of
    them, a seeded sorted sample (S,) int64 (:func:`lvm_pipeline.embedding.vectors.sample_rows`)."""
    if config.sample_queries is None or config.sample_queries >= n_windows:
        return None
    return sample_rows(n_windows, config.sample_queries, config.sample_seed)


@dataclass(frozen=True)
class ReportInputs:
    """What one report scores: the payload and its index, the eval windows it queries, the
    training set its models were trained on (the baselines are fit on it too) and the
    checkpoints, each as its build (for the lineage) and loaded."""

    payload: Payload
    index_build: Build
    index: faiss.Index  # index_build loaded over payload
    eval_build: Build
    eval_set: SequenceSet  # the "eval" split of eval_build
    train_build: Build
    train_sets: dict[str, SequenceSet]  # the "train" and "val" splits of train_build
    model_builds: dict[str, Build]  # variant → checkpoint build


def report_baseline_recipe(inputs: ReportInputs) -> TrainConfig:
    """What the report's baselines are trained with: their models' own recipe
    (:func:`recipe_of` of the checkpoints' train configs)."""
    return recipe_of([checkpoint_info(build)["train_config"]
                      for build in inputs.model_builds.values()])


def fit_report_baselines(inputs: ReportInputs, progress: Progress = silent
                         ) -> dict[str, TrainedBaseline]:
    """The trained baselines :func:`build_report` judges ``inputs``' models against: fit on
    their training set with :func:`report_baseline_recipe`. A step of its own: the report
    scores predictors, this trains two of them."""
    return fit_trained_baselines(inputs.payload.vectors, inputs.train_sets["train"],
                                 inputs.train_sets["val"], report_baseline_recipe(inputs),
                                 progress=progress,
                                 article_of_row=inputs.payload.chunks["article_index"].to_numpy())


@dataclass(frozen=True)
class ReportPredictors:
    """Every predictor a report scores but the oracle, built once, so that the asset can time
    the very predictors :func:`build_report` scored (:func:`report_latency`) without loading
    the checkpoints or fitting ridge again."""

    models: dict[str, torch.nn.Module]  # variant → its checkpoint, loaded
    model_info: dict[str, dict[str, Any]]  # variant → what report.json records beside metrics
    baselines: dict[str, Predictor]  # copy-last, mean, ridge, then the trained ones
    trained: dict[str, TrainedBaseline]

    def all(self) -> dict[str, Predictor]:
        """Name → context (N, 5, D) → prediction (N, D): the models first, then the baselines."""
        return {**{name: model_predictor(m) for name, m in self.models.items()},
                **self.baselines}


def report_predictors(inputs: ReportInputs, trained: dict[str, TrainedBaseline]
                      ) -> ReportPredictors:
    """The checkpoints of ``inputs`` loaded, and the baselines: the untrained ones and ridge
    fit on ``inputs``' training set, and ``trained`` (:func:`fit_report_baselines`)."""
    models, model_info = _load_models(inputs.model_builds)
    baselines = baseline_predictors(inputs.payload.vectors, inputs.train_sets["train"],
                                    inputs.train_sets["val"])
    baselines.update({name: model_predictor(fit.model) for name, fit in trained.items()})
    return ReportPredictors(models, model_info, baselines, trained)


def build_report(
    inputs: ReportInputs,
    predictors: ReportPredictors,
    config: EvalConfig | None = None,
    progress: Progress = silent,
    bootstrap_config: BootstrapConfig | None = None,
) -> tuple[dict[str, Any], dict[str, QuerySetResult]]:
    """Score every checkpoint, the baselines (``predictors``: :func:`report_predictors`) and
    the oracle on ``inputs.eval_set`` (or the seeded sample of it that
    ``config.sample_queries`` asks for) in one pass, with paired bootstrap intervals of every
    figure and of every model − baseline difference, and the payload's forward signal on the
    same windows.

    Refuses (:class:`~lvm_pipeline.store.lineage.LineageError`) inputs made from different payloads
    or training sets. Returns report.json's content and the per-query results (for
    queries.parquet and plots). The content is a function of the inputs alone (seeded
    sampling, training and resampling; no timings): the same inputs give the same bytes.
    """
    config = config or EvalConfig()
    bootstrap_config = bootstrap_config or BootstrapConfig()
    payload, eval_set = inputs.payload, inputs.eval_set
    lineage = report_lineage(inputs.index_build, inputs.eval_build, inputs.train_build,
                             inputs.model_builds)
    if lineage["payload"] != payload.build_id:
        raise ArtifactError(f"the report was given payload {payload.build_id[:12]}, but its "
                            f"index {inputs.index_build.build_id[:12]} holds "
                            f"{lineage['payload'][:12]}")
    windows = query_sample(len(eval_set), config)
    scored = eval_set if windows is None else eval_set.subset(windows)
    predictions = {name: _predict_all(p, payload.vectors, scored, config.batch_size)
                   for name, p in predictors.all().items()}
    predictions["oracle"] = oracle(payload.vectors, scored)
    results = evaluate(predictions, payload.vectors, inputs.index, scored, config, progress)
    oracle_r1 = results["oracle"].metrics["r_at_1"]
    models = predictors.models
    report = {
        "schema_version": SCHEMA_VERSION,
        "payload_build_id": payload.build_id,
        "index_id": inputs.index_build.build_id,
        "eval_id": inputs.eval_build.build_id,
        "train_sequences_id": inputs.train_build.build_id,
        "lineage": lineage,
        "n_queries": len(scored),
        "query_sample": {"n_eval_windows": len(eval_set), "n_queries": len(scored),
                         "requested": config.sample_queries, "seed": config.sample_seed,
                         "windows": None if windows is None else windows.tolist()},
        "exclude_context": config.exclude_context,
        "search_device": config.device,
        "oracle_ok": oracle_r1 >= ORACLE_MIN_R_AT_1,
        "warnings": _oracle_warnings(oracle_r1),
        "models": {n: {**results[n].metrics, **predictors.model_info[n]} for n in models},
        "baselines": {n: results[n].metrics for n in [*predictors.baselines, "oracle"]},
        "forward_signal": measure_forward_signal(payload.vectors, scored, bootstrap_config),
        "trained_baselines": {name: fit.record() for name, fit in predictors.trained.items()},
        "sequence_use": measure_sequence_use(
            models, payload.vectors, scored,
            {n: results[n].metrics["mrr_at_10"] for n in models}, config),
        # The oracle is a sanity check, not a baseline to beat: no differences against it.
        "confidence": confidence({n: r.ranks for n, r in results.items()}, list(models),
                                 list(predictors.baselines), bootstrap_config),
    }
    return report, results


def report_latency(inputs: ReportInputs, predictors: ReportPredictors,
                   config: EvalConfig | None = None) -> dict[str, dict[str, float]]:
    """Each predictor's p50 / p95 milliseconds per query end to end (predict, search the top
    50 in ``inputs.index``) on ``config.latency_queries`` of the windows :func:`build_report`
    scores: ``{name: {"latency_p50_ms", "latency_p95_ms"}}``. Apart from the report: a timing
    differs on every run, and in report.json it would make every rebuild another build."""
    config = config or EvalConfig()
    windows = query_sample(len(inputs.eval_set), config)
    scored = inputs.eval_set if windows is None else inputs.eval_set.subset(windows)
    return {name: latency_ms(p, inputs.index, inputs.payload.vectors, scored,
                             config.latency_queries, config.exclude_context)
            for name, p in predictors.all().items()}


def _load_models(model_builds: dict[str, Build]
                 ) -> tuple[dict[str, torch.nn.Module], dict[str, dict[str, Any]]]:
    """Each checkpoint's model, and what report.json records of it beside its metrics."""
    models: dict[str, torch.nn.Module] = {}
    model_info: dict[str, dict[str, Any]] = {}
    for name, build in model_builds.items():
        models[name], info = load_checkpoint(build)
        best = info["history"][info["best_epoch"]]
        model_info[name] = {"checkpoint_id": build.build_id, "best_epoch": info["best_epoch"],
                            "val_cos": best["val_cos"], "loss": info["train_config"]["loss"],
                            "n_params": info["n_params"]}
    return models, model_info


def _oracle_warnings(oracle_r1: float) -> list[str]:
    """The warning of an oracle below :data:`ORACLE_MIN_R_AT_1`, or none."""
    if oracle_r1 >= ORACLE_MIN_R_AT_1:
        return []
    return [f"ORACLE FAILED: searching with the truth vectors themselves gives R@1 "
            f"{oracle_r1:.3f} < {ORACLE_MIN_R_AT_1}; the index or the truth keys are broken and "
            "no number below can be trusted"]


def query_table(eval_set: SequenceSet, results: dict[str, QuerySetResult],
                windows: np.ndarray | None = None) -> pd.DataFrame:
    """One row per (predictor, query): what `lvm diagnose` shows. ``query`` is the window's
    index in ``eval_set``; ``windows`` (S,) the windows scored (None: all)."""
    windows = np.arange(len(eval_set)) if windows is None else np.asarray(windows)
    frames = []
    for name, r in results.items():
        frames.append(pd.DataFrame({
            "predictor": name, "query": windows,
            "target_row": eval_set.target_row[windows], "rank": r.ranks,
            **{f"impostor_{i + 1}_row": r.impostor_rows[:, i]
               for i in range(r.impostor_rows.shape[1])},
            "cos_truth": r.cos_truth, "cos_impostor": r.cos_impostor,
            "paraphrase_ratio": r.paraphrase}))
    return pd.concat(frames, ignore_index=True)


def publish_report(store: ArtifactStore, report: dict[str, Any],
                   results: dict[str, QuerySetResult], eval_set: SequenceSet,
                   recipe: dict[str, Any] | None = None) -> Build:
    """Write report.json, report.md, the plots and the per-query table as one build
    (``recipe``: what made it, so the same recipe can reuse it)."""
    upstream = as_upstream(report["lineage"])
    with store.stage(kinds.REPORT) as staged:
        plots = write_plots(report, results, staged / "plots")
        (staged / "report.json").write_text(json.dumps(report, indent=2, sort_keys=True) + "\n")
        (staged / "report.md").write_text(render_markdown(report, plots))
        query_table(eval_set, results, report["query_sample"]["windows"]).to_parquet(
            staged / "queries.parquet", index=False)
        return store.publish(kinds.REPORT, staged, {"n_queries": report["n_queries"],
                                                    "oracle_ok": report["oracle_ok"]},
                             upstream, recipe=recipe)


def read_report(build: Build) -> dict[str, Any]:
    return json.loads(build.file("report.json").read_text())


def scored_queries(report: dict[str, Any], eval_set: SequenceSet) -> SequenceSet:
    """The eval windows ``report`` scored, in its order (all, or its recorded sample)."""
    windows = report["query_sample"]["windows"]
    return eval_set if windows is None else eval_set.subset(np.asarray(windows))


def query_ranks(build: Build) -> dict[str, np.ndarray]:
    """Each predictor of a report build → its rank of truth (Q,) per scored query, in the
    report's query order (from queries.parquet)."""
    table = pd.read_parquet(build.file("queries.parquet"), columns=["predictor", "rank"])
    return {name: group["rank"].to_numpy() for name, group in table.groupby("predictor", sort=False)}


def rescore(store: ArtifactStore, report_build: Build, checkpoints: dict[str, Build],
            progress: Progress = silent) -> dict[str, np.ndarray]:
    """Ranks of truth (Q,) of other checkpoints on a published report's queries, through its
    index and with its search settings, exactly as :func:`build_report` scored its models (same
    predictor, batching and :func:`~lvm_pipeline.evaluation.evaluate`), so they pair query by
    query with :func:`query_ranks` (the promotion gate scores the promoted model this way)."""
    report = read_report(report_build)
    inputs = recorded_inputs(store, report["lineage"])
    payload = payload_of(store, inputs["index"])
    index = load_index(inputs["index"], payload)
    scored = scored_queries(report, load_sets(inputs["eval_set"])["eval"])
    config = EvalConfig(exclude_context=report["exclude_context"], device=report["search_device"])
    predictions = {name: _predict_all(model_predictor(load_checkpoint(build)[0]),
                                      payload.vectors, scored, config.batch_size)
                   for name, build in checkpoints.items()}
    results = evaluate(predictions, payload.vectors, index, scored, config, progress)
    return {name: r.ranks for name, r in results.items()}


def current_report(store: ArtifactStore) -> dict[str, Any]:
    return read_report(store.current(kinds.REPORT))
