"""The retrieval report: every model and baseline scored the same way on the eval split.

Files of a ``report`` build: ``report.json`` (schema below), ``report.md`` (tables and plot
links), ``queries.parquet`` (per query and predictor: rank of truth, the three best impostors,
cosines, paraphrase ratio; what ``lvm diagnose`` reads) and ``plots/*.png``.

``report.json`` (``schema_version`` 1; keys are stable, new keys may be added)::

    {"schema_version", "payload_build_id", "index_id", "eval_id", "train_sequences_id",
     "lineage": {"payload", "index", "sequences/eval", "sequences/train",
                 "models": {variant: checkpoint build id}}  (lvm_pipeline/lineage.py),
     "n_queries" (the queries scored), "exclude_context",
     "search_device" ("cpu" | a torch device), "oracle_ok",
     "query_sample": {"n_eval_windows", "n_queries", "requested" (None: all), "seed",
                      "windows": [eval window indices scored, sorted] | None (all)},
     "warnings": [str],
     "models": {variant: {<metric>: float, ..., "checkpoint_id", "best_epoch", "val_cos",
                          "loss", "n_params"}},
     "baselines": {"copy_last_context" | "mean_of_context" | "ridge" | "learned_blend" |
                   "linear_infonce" | "oracle": {<metric>: float, ...}},
     "trained_baselines": {"learned_blend" | "linear_infonce":
                           {"train_config", "n_train_windows", "best_epoch", "epochs_run",
                            "stopped_early", "best_val_mrr_at_10", "context_mix": [5 floats],
                            "n_params", "train_seconds"}}  (lvm_pipeline/trained_baselines.py),
     "sequence_use": {variant: {"context_mix": [5 floats] | None, "blend_norm_mean",
                                "correction_norm_mean", "correction_to_blend",
                                "network_only": {"mrr_at_10", "r_at_5"},
                                "blend_only": {"mrr_at_10", "r_at_5"} | None,
                                "shuffled_mrr_at_10", "shuffle_drop_mrr_at_10",
                                "shuffle_seed"}}  (lvm_pipeline/sequence_use.py),
     "confidence": {"method", "resamples", "seed", "level", "n_queries", "metrics",
                    "intervals": {predictor: {metric: {"value", "low", "high"}}},
                    "differences": {model: {baseline (not the oracle):
                                    {metric: {"value", "low", "high", "verdict"}}}},
                    "mrr_at_10_resolution", "resolution" (what it is, in words),
                    "mrr_at_10_resolution_per_model"}  (lvm_pipeline/bootstrap.py;
                    metrics mrr_at_10, r_at_1, r_at_5; verdict better | indistinguishable |
                    worse)}

Metrics (snake_case): r_at_1, r_at_5, r_at_10, r_at_50, contain_at_50, eff_at_5, mrr, mrr_at_10,
median_rank, p90_rank, rank_share_top_50 / _500 / _5000, rank_share_beyond_10000,
cos_truth_mean, cos_impostor_mean, margin_mean, margin_positive_share,
margin_above_0_05_share, contrastive_accuracy, paraphrase_ratio, paraphrase_share_above_1,
latency_p50_ms, latency_p95_ms, n_queries.
"""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from lvm_pipeline import bootstrap, sequence_use
from lvm_pipeline.artifacts import ArtifactError, ArtifactStore, Build
from lvm_pipeline.baselines import Predictor, baseline_predictors, oracle
from lvm_pipeline.bootstrap import BootstrapConfig, confidence
from lvm_pipeline.checkpoint import kind_for, load_checkpoint
from lvm_pipeline.evaluation import EvalConfig, QuerySetResult, evaluate, latency_ms
from lvm_pipeline.lineage import EVAL, INDEX, PAYLOAD, TRAIN, report_lineage
from lvm_pipeline.payload import Payload
from lvm_pipeline.progress import Progress, silent
from lvm_pipeline.sequences import SequenceSet, gather
from lvm_pipeline.trained_baselines import fit_trained_baselines, recipe_of
from lvm_pipeline.vectors import sample_rows

KIND = "report"
SCHEMA_VERSION = 1
# R@1 of the oracle (the truth searched for itself) below this means the index or the keys
# are broken; 0.99 leaves room only for exact duplicate vectors.
ORACLE_MIN_R_AT_1 = 0.99
# The figures the UI plots across retrains (numeric metadata of every materialization).
HEADLINE_METRICS = ("mrr_at_10", "r_at_1", "r_at_5", "contain_at_50")
TABLE_METRICS = ("r_at_1", "r_at_5", "r_at_10", "r_at_50", "contain_at_50", "eff_at_5",
                 "mrr_at_10", "median_rank", "contrastive_accuracy", "paraphrase_ratio",
                 "margin_positive_share", "latency_p95_ms")


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
    them, a seeded sorted sample (S,) int64 (:func:`lvm_pipeline.vectors.sample_rows`)."""
    if config.sample_queries is None or config.sample_queries >= n_windows:
        return None
    return sample_rows(n_windows, config.sample_queries, config.sample_seed)


def build_report(
    payload: Payload,
    index_build: Build,
    index,
    eval_build: Build,
    eval_set: SequenceSet,
    train_build: Build,
    train_sets: dict[str, SequenceSet],
    model_builds: dict[str, Build],
    config: EvalConfig | None = None,
    progress: Progress = silent,
    bootstrap_config: BootstrapConfig | None = None,
) -> tuple[dict[str, Any], dict[str, QuerySetResult]]:
    """Score every checkpoint, the baselines and the oracle on ``eval_set`` (or the seeded
    sample of it that ``config.sample_queries`` asks for) in one pass, with paired bootstrap
    intervals of every figure and of every model − baseline difference.

    Refuses (:class:`~lvm_pipeline.lineage.LineageError`) inputs made from different payloads
    or training sets. Returns report.json's content and the per-query results (for
    queries.parquet and plots).
    """
    config = config or EvalConfig()
    lineage = report_lineage(index_build, eval_build, train_build, model_builds)
    if lineage["payload"] != payload.build_id:
        raise ArtifactError(f"the report was given payload {payload.build_id[:12]}, but its "
                            f"index {index_build.build_id[:12]} holds {lineage['payload'][:12]}")
    predictors: dict[str, Predictor] = {}
    models: dict[str, torch.nn.Module] = {}
    model_info: dict[str, dict[str, Any]] = {}
    recipes = []
    for name, build in model_builds.items():
        models[name], info = load_checkpoint(build)
        recipes.append(info["train_config"])
        predictors[name] = model_predictor(models[name])
        best = info["history"][info["best_epoch"]]
        model_info[name] = {"checkpoint_id": build.build_id, "best_epoch": info["best_epoch"],
                            "val_cos": best["val_cos"], "loss": info["train_config"]["loss"],
                            "n_params": info["n_params"]}
    windows = query_sample(len(eval_set), config)
    scored = eval_set if windows is None else eval_set.subset(windows)
    baselines = baseline_predictors(payload.vectors, train_sets["train"], train_sets["val"])
    trained = fit_trained_baselines(payload.vectors, train_sets["train"], train_sets["val"],
                                    recipe_of(recipes))
    baselines.update({name: model_predictor(fit.model) for name, fit in trained.items()})
    predictions = {name: _predict_all(p, payload.vectors, scored, config.batch_size)
                   for name, p in {**predictors, **baselines}.items()}
    predictions["oracle"] = oracle(payload.vectors, scored)
    results = evaluate(predictions, payload.vectors, index, scored, config, progress)
    latency = {name: latency_ms(p, index, payload.vectors, scored, config.latency_queries,
                                config.exclude_context)
               for name, p in {**predictors, **baselines}.items()}
    oracle_r1 = results["oracle"].metrics["r_at_1"]
    warnings = []
    if oracle_r1 < ORACLE_MIN_R_AT_1:
        warnings.append(
            f"ORACLE FAILED: searching with the truth vectors themselves gives R@1 "
            f"{oracle_r1:.3f} < {ORACLE_MIN_R_AT_1}; the index or the truth keys are broken and "
            "no number below can be trusted")
    report = {
        "schema_version": SCHEMA_VERSION,
        "payload_build_id": payload.build_id,
        "index_id": index_build.build_id,
        "eval_id": eval_build.build_id,
        "train_sequences_id": train_build.build_id,
        "lineage": lineage,
        "n_queries": len(scored),
        "query_sample": {"n_eval_windows": len(eval_set), "n_queries": len(scored),
                         "requested": config.sample_queries, "seed": config.sample_seed,
                         "windows": None if windows is None else windows.tolist()},
        "exclude_context": config.exclude_context,
        "search_device": config.device,
        "oracle_ok": oracle_r1 >= ORACLE_MIN_R_AT_1,
        "warnings": warnings,
        "models": {n: {**results[n].metrics, **latency[n], **model_info[n]} for n in predictors},
        "baselines": {n: {**results[n].metrics, **latency.get(n, {})}
                      for n in [*baselines, "oracle"]},
        "trained_baselines": {name: fit.record() for name, fit in trained.items()},
        "sequence_use": sequence_use.sequence_use(
            models, payload.vectors, scored,
            {n: results[n].metrics["mrr_at_10"] for n in models}, config),
        # The oracle is a sanity check, not a baseline to beat: no differences against it.
        "confidence": confidence({n: r.ranks for n, r in results.items()}, list(predictors),
                                 list(baselines), bootstrap_config or BootstrapConfig()),
    }
    return report, results


# --------------------------------------------------------------------------- rendering


def _fmt(key: str, value: Any) -> str:
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return "–"
    if key in ("median_rank",):
        return f"{value:.0f}"
    if key.endswith("_ms"):
        return f"{value:.2f}"
    return f"{value:.3f}"


def markdown_table(report: dict[str, Any], metrics: tuple[str, ...] = TABLE_METRICS) -> str:
    lines = ["| | " + " | ".join(metrics) + " |", "|" + "---|" * (len(metrics) + 1)]
    for group in ("models", "baselines"):
        for name, m in report[group].items():
            label = name if group == "models" else f"*{name}*"
            lines.append(f"| {label} | " + " | ".join(_fmt(k, m.get(k)) for k in metrics) + " |")
    return "\n".join(lines)


def render_markdown(report: dict[str, Any], plots: list[str] | None = None) -> str:
    warnings = "".join(f"> **{w}**\n\n" for w in report["warnings"])
    cos_rows = "\n".join(
        f"| {n} | {m['val_cos']:.3f} | {m['cos_truth_mean']:.3f} | {m['cos_impostor_mean']:.3f} "
        f"| {m['loss']} |" for n, m in report["models"].items())
    text = (
        "# Retrieval report\n\n" + warnings
        + f"{report['n_queries']} eval queries from articles no training window comes from"
        + _sample_note(report) + "; "
        f"payload `{report['payload_build_id'][:12]}`, index `{report['index_id'][:12]}`, eval "
        f"set `{report['eval_id'][:12]}`; the query's context rows are "
        f"{'excluded from' if report['exclude_context'] else 'kept in'} the candidates. "
        "Baselines in *italics*; the oracle must be 1.000 at R@1.\n\n"
        + markdown_table(report)
        + "\n\n## Cosine is not retrieval\n\n"
        "Validation cosine (what training saw) next to the cosine to the payload truth and to "
        "the best impostor on the eval split; a model retrieves only where the truth beats the "
        "impostor.\n\n| model | val cos | cos to truth | cos to rank-1 impostor | loss |\n"
        "|---|---|---|---|---|\n" + cos_rows + "\n")
    if "sequence_use" in report:  # reports before these schema additions have none
        text += ("\n## Does each model use the sequence?\n\n"
                 "The network's correction against the learned blend of its five inputs, each "
                 "path's retrieval alone, and MRR@10 with the contexts' order shuffled.\n\n"
                 + sequence_use.markdown(report["sequence_use"]) + "\n")
    if "confidence" in report:
        text += "\n## Confidence intervals and verdicts\n\n" + bootstrap.markdown(
            report["confidence"]) + "\n"
    for plot in plots or []:
        text += f"\n![{Path(plot).stem}]({plot})\n"
    return text


def write_plots(report: dict[str, Any], results: dict[str, QuerySetResult], folder: Path
                ) -> list[str]:
    """Rank-of-truth histograms, margin distributions, R@5 / MRR@10 bars → PNG paths."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    folder.mkdir(parents=True, exist_ok=True)
    names = [n for n in [*report["models"], *report["baselines"]] if n != "oracle"]
    max_rank = max(int(results[n].ranks.max()) for n in names)
    bins = np.unique(np.geomspace(1, max(max_rank, 2) + 1, num=30).astype(int))
    fig, ax = plt.subplots(figsize=(8, 4.5))
    for n in names:
        ax.hist(results[n].ranks, bins=bins, histtype="step", linewidth=1.5, label=n)
    ax.set(xscale="log", xlabel="rank of the true next chunk (log)", ylabel="queries",
           title="Rank of truth")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(folder / "rank_of_truth.png", dpi=110)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(8, 4.5))
    for n in names:
        ax.hist(results[n].cos_truth - results[n].cos_impostor, bins=40, histtype="step",
                linewidth=1.5, label=n)
    ax.axvline(0, color="black", linewidth=0.8)
    ax.set(xlabel="cos(prediction, truth) − cos(prediction, best impostor)", ylabel="queries",
           title="Margin of truth over the rank-1 impostor (> 0: retrieved first)")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(folder / "margins.png", dpi=110)
    plt.close(fig)

    fig, axes = plt.subplots(1, 2, figsize=(10, 4.5))
    colors = ["tab:blue" if n in report["models"] else "tab:gray" for n in names]
    for ax, key, label in ((axes[0], "r_at_5", "R@5"), (axes[1], "mrr_at_10", "MRR@10")):
        values = [({**report["models"], **report["baselines"]})[n][key] for n in names]
        ax.bar(range(len(names)), values, color=colors)
        ax.set_xticks(range(len(names)), names, rotation=45, ha="right", fontsize=8)
        ax.set_title(f"{label}: models (blue) vs baselines (gray)")
    fig.tight_layout()
    fig.savefig(folder / "r5_mrr_bars.png", dpi=110)
    plt.close(fig)
    return [f"plots/{p}" for p in ("rank_of_truth.png", "margins.png", "r5_mrr_bars.png")]


def _sample_note(report: dict[str, Any]) -> str:
    sample = report.get("query_sample") or {}
    if sample.get("windows") is None:
        return ""
    return (f" (a seeded sample, seed {sample['seed']}, of the {sample['n_eval_windows']} eval "
            "windows)")


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
                   results: dict[str, QuerySetResult], eval_set: SequenceSet) -> Build:
    lineage = report["lineage"]
    # Keyed by kind, like every build's upstream, so lineage readers need no name mapping.
    upstream = {kind: lineage[kind] for kind in (PAYLOAD, INDEX, EVAL, TRAIN)}
    upstream.update({kind_for(name): build_id for name, build_id in lineage["models"].items()})
    with store.stage(KIND) as staged:
        plots = write_plots(report, results, staged / "plots")
        (staged / "report.json").write_text(json.dumps(report, indent=2, sort_keys=True) + "\n")
        (staged / "report.md").write_text(render_markdown(report, plots))
        query_table(eval_set, results, report["query_sample"]["windows"]).to_parquet(
            staged / "queries.parquet", index=False)
        return store.publish(KIND, staged, {"n_queries": report["n_queries"],
                                            "oracle_ok": report["oracle_ok"]}, upstream)


def embedded_images_markdown(build: Build) -> str:
    """The plots inlined as base64 images, so Dagster's UI shows them in the metadata panel."""
    parts = []
    for name in sorted(n for n in build.manifest["files"] if n.startswith("plots/")):
        data = base64.b64encode(build.file(name).read_bytes()).decode()
        parts.append(f"![{Path(name).stem}](data:image/png;base64,{data})")
    return "\n\n".join(parts)


def current_report(store: ArtifactStore) -> dict[str, Any]:
    return json.loads(store.current(KIND).file("report.json").read_text())
