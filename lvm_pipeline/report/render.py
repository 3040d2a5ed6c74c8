"""The retrieval report as people read it: the Markdown of ``report.md`` (and of `lvm
report`), the plots, and the table and images the report asset shows in Dagster's UI. What the
report *contains* (report.json) is :mod:`lvm_pipeline.report`'s."""

from __future__ import annotations

import base64
import math
from pathlib import Path
from typing import Any

import numpy as np

from lvm_pipeline.evaluation import (
    QuerySetResult,
    confidence_markdown,
    forward_signal_text,
    sequence_use_markdown,
)
from lvm_pipeline.store import Build

TABLE_METRICS = ("r_at_1", "r_at_5", "r_at_10", "contain_at_50", "eff_at_5", "mrr_at_10",
                 "median_rank", "contrastive_accuracy", "paraphrase_ratio")
# What the UI's Plots tab draws across retrains: each model's MRR@10 and R@5, and the MRR@10 of
# the two baselines a model must beat. Not every metric of every predictor: the oracle's
# constant 1.0 and the number of queries are no trend, and 45 charts hide the few that are.
MODEL_TRENDS = ("mrr_at_10", "r_at_5")
BASELINE_TRENDS = {"copy_last_context": ("mrr_at_10",), "learned_blend": ("mrr_at_10",)}
# The baselines every model's MRR@10 is compared with in the UI's results table.
COMPARED_WITH = ("copy_last_context", "learned_blend")
# The UI's results table: (column, Dagster type, what it holds). Figures are text, rounded to
# what the eval set resolves (:func:`figure_decimals`), with their interval where the report
# has one.
RESULT_COLUMNS = (
    ("predictor", "string", "the five models, then the baselines; the oracle (the truth searched "
                            "for itself) last, which must be 1 at R@1"),
    ("MRR@10", "string", "mean reciprocal rank, 0 beyond rank 10 [95 % paired-bootstrap interval]"),
    ("R@1", "string", "share of queries whose truth ranks first [95 % interval]"),
    ("R@5", "string", "share whose truth ranks in the top 5 [95 % interval]"),
    ("R@10", "string", "share whose truth ranks in the top 10"),
    ("Contain@50", "string", "share whose truth is among the index's 50 candidates"),
    ("median rank", "float", "median rank of the truth among every payload row"),
    *((f"MRR@10 − {base}", "string", f"the model's MRR@10 minus {base}'s, paired 95 % interval "
       "and verdict (better / indistinguishable / worse)") for base in COMPARED_WITH),
    ("latency ms p50 / p95", "string", "one query end to end (predict, search the top 50), "
                                       "timed by this materialization, not part of the report"),
)


# Matplotlib writes its version into every PNG ("Software"): dropped, so that an upgrade
# which draws the same pixels leaves the report's build id alone.
PNG_METADATA = {"Software": None}


def figure_decimals(resolution: float | None) -> int:
    """Decimals a figure is shown with: the first place the eval set resolves (the last digit
    is no larger than the MRR@10 resolution), at least 3 and at most 4. Finer digits are noise
    in every run: 455 queries resolve about ±0.007."""
    if resolution is None:
        return 3
    if resolution <= 0:
        return 4
    return min(4, max(3, math.ceil(-math.log10(resolution))))


def _decimals(report: dict[str, Any]) -> int:
    return figure_decimals(report.get("confidence", {}).get("mrr_at_10_resolution"))


def _rows(report: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    """(group, name, figures) of every predictor: the models, then the baselines, the oracle
    last, whatever the order of report.json's keys (written sorted)."""
    baselines = sorted(report["baselines"].items(), key=lambda item: item[0] == "oracle")
    return ([("models", name, m) for name, m in report["models"].items()]
            + [("baselines", name, m) for name, m in baselines])


def _fmt(key: str, value: Any, decimals: int = 3) -> str:
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return "–"
    if key in ("median_rank",):
        return f"{value:.0f}"
    return f"{value:.{decimals}f}"


def markdown_table(report: dict[str, Any], metrics: tuple[str, ...] = TABLE_METRICS) -> str:
    """Every predictor's ``metrics`` as a Markdown table, baselines in italics. Reads schema
    versions 1 and 2 (a metric a report lacks shows as –)."""
    decimals = _decimals(report)
    lines = ["| | " + " | ".join(metrics) + " |", "|" + "---|" * (len(metrics) + 1)]
    for group, name, m in _rows(report):
        label = name if group == "models" else f"*{name}*"
        lines.append(f"| {label} | " + " | ".join(_fmt(k, m.get(k), decimals)
                                                  for k in metrics) + " |")
    return "\n".join(lines)


def _forward_signal_markdown(report: dict[str, Any]) -> str:
    """The forward signal's line under the table; nothing for a schema 1 report (none)."""
    signal = report.get("forward_signal")
    return "" if signal is None else "\n\n" + forward_signal_text(signal)


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
        + markdown_table(report) + _forward_signal_markdown(report)
        + "\n\n## Cosine is not retrieval\n\n"
        "Validation cosine (what training saw) next to the cosine to the payload truth and to "
        "the best impostor on the eval split; a model retrieves only where the truth beats the "
        "impostor.\n\n| model | val cos | cos to truth | cos to rank-1 impostor | loss |\n"
        "|---|---|---|---|---|\n" + cos_rows + "\n")
    if "sequence_use" in report:  # reports before these schema additions have none
        text += ("\n## Does each model use the sequence?\n\n"
                 "The network's correction against the learned blend of its five inputs, each "
                 "path's retrieval alone, and MRR@10 with the contexts' order shuffled.\n\n"
                 + sequence_use_markdown(report["sequence_use"]) + "\n")
    if "confidence" in report:
        text += "\n## Confidence intervals and verdicts\n\n" + confidence_markdown(
            report["confidence"]) + "\n"
    for plot in plots or []:
        text += f"\n![{Path(plot).stem}]({plot})\n"
    return text


def write_plots(report: dict[str, Any], results: dict[str, QuerySetResult], folder: Path
                ) -> list[str]:
    """Rank-of-truth histograms, margin distributions, R@5 / MRR@10 bars → PNG paths. The
    same report and results give the same bytes (Agg draws deterministically; PNGs carry no
    date and, with :data:`PNG_METADATA`, no version string)."""
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
    fig.savefig(folder / "rank_of_truth.png", dpi=110, metadata=PNG_METADATA)
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
    fig.savefig(folder / "margins.png", dpi=110, metadata=PNG_METADATA)
    plt.close(fig)

    fig, axes = plt.subplots(1, 2, figsize=(10, 4.5))
    colors = ["tab:blue" if n in report["models"] else "tab:gray" for n in names]
    for ax, key, label in ((axes[0], "r_at_5", "R@5"), (axes[1], "mrr_at_10", "MRR@10")):
        values = [({**report["models"], **report["baselines"]})[n][key] for n in names]
        ax.bar(range(len(names)), values, color=colors)
        ax.set_xticks(range(len(names)), names, rotation=45, ha="right", fontsize=8)
        ax.set_title(f"{label}: models (blue) vs baselines (gray)")
    fig.tight_layout()
    fig.savefig(folder / "r5_mrr_bars.png", dpi=110, metadata=PNG_METADATA)
    plt.close(fig)
    return [f"plots/{p}" for p in ("rank_of_truth.png", "margins.png", "r5_mrr_bars.png")]


def _sample_note(report: dict[str, Any]) -> str:
    sample = report.get("query_sample") or {}
    if sample.get("windows") is None:
        return ""
    return (f" (a seeded sample, seed {sample['seed']}, of the {sample['n_eval_windows']} eval "
            "windows)")


def embedded_images_markdown(build: Build) -> str:
    """The plots inlined as base64 images, so Dagster's UI shows them in the metadata panel."""
    parts = []
    for name in sorted(n for n in build.manifest["files"] if n.startswith("plots/")):
        data = base64.b64encode(build.file(name).read_bytes()).decode()
        parts.append(f"![{Path(name).stem}](data:image/png;base64,{data})")
    return "\n\n".join(parts)


# --------------------------------------------------------------------------- Dagster's UI


# Between a figure and its interval: the UI's table wraps a cell at spaces, which would put a
# figure, its low and its high end on three lines; the row then reads as one line.
NBSP = "\u00a0"


def _interval(value: float, interval: dict[str, float] | None, decimals: int) -> str:
    """``0.166 [0.156, 0.178]``, or the value alone where the report has no interval."""
    if interval is None:
        return f"{value:.{decimals}f}"
    return (f"{value:.{decimals}f}{NBSP}[{interval['low']:.{decimals}f},{NBSP}"
            f"{interval['high']:.{decimals}f}]")


def _difference(d: dict[str, Any] | None, decimals: int) -> str:
    """``+0.013 [+0.004, +0.023] better``; empty where there is no such difference."""
    if d is None:
        return ""
    return (f"{d['value']:+.{decimals}f}{NBSP}[{d['low']:+.{decimals}f},{NBSP}"
            f"{d['high']:+.{decimals}f}]{NBSP}{d['verdict']}")


def _latency(timing: dict[str, float] | None) -> str:
    if not timing or any(np.isnan(v) for v in timing.values()):
        return ""
    return f"{timing['latency_p50_ms']:.2f} / {timing['latency_p95_ms']:.2f}"


def results_rows(report: dict[str, Any], latency: dict[str, dict[str, float]] | None = None
                 ) -> list[dict[str, str | float]]:
    """The UI's results table (:data:`RESULT_COLUMNS`): one row per predictor, models first,
    the oracle last, each figure rounded to what the eval set resolves. ``latency``: each
    predictor's ``latency_p50_ms`` / ``latency_p95_ms``, timed outside the report
    (:func:`lvm_pipeline.report.build.report_latency`)."""
    decimals = _decimals(report)
    conf = report.get("confidence", {})
    intervals, differences = conf.get("intervals", {}), conf.get("differences", {})
    rows: list[dict[str, str | float]] = []
    for _, name, m in _rows(report):
        own = intervals.get(name, {})
        by_base = differences.get(name, {})
        rows.append({
            "predictor": name,
            **{label: _interval(m[key], own.get(key), decimals) for label, key in (
                ("MRR@10", "mrr_at_10"), ("R@1", "r_at_1"), ("R@5", "r_at_5"),
                ("R@10", "r_at_10"), ("Contain@50", "contain_at_50"))},
            "median rank": float(m["median_rank"]),
            **{f"MRR@10 − {base}": _difference(by_base.get(base, {}).get("mrr_at_10"), decimals)
               for base in COMPARED_WITH},
            "latency ms p50 / p95": _latency((latency or {}).get(name)),
        })
    return rows


def trend_figures(report: dict[str, Any]) -> dict[str, float]:
    """The figures the UI plots across retrains (:data:`MODEL_TRENDS`,
    :data:`BASELINE_TRENDS`), labelled ``<predictor>/<metric>`` as MLflow logs them: the Plots
    tab sorts its charts by label, so one predictor's figures sit together."""
    out = {f"{name}/{metric}": float(m[metric])
           for name, m in report["models"].items() for metric in MODEL_TRENDS}
    out.update({f"{name}/{metric}": float(report["baselines"][name][metric])
                for name, metrics in BASELINE_TRENDS.items() if name in report["baselines"]
                for metric in metrics})
    return out


def lineage_markdown(report: dict[str, Any]) -> str:
    """The builds a report scored, short ids (12 characters, as `lvm` prints them), as one
    Markdown list: short enough for the UI to show without a click."""
    lineage = report["lineage"]
    models = ", ".join(f"{name} `{build[:12]}`" for name, build in lineage["models"].items())
    return "\n".join([f"- payload `{lineage['payload'][:12]}`",
                      f"- index `{lineage['index'][:12]}`",
                      f"- eval set `{lineage['sequences/eval'][:12]}`",
                      f"- training set `{lineage['sequences/train'][:12]}`",
                      f"- models: {models or 'none'}"])
