"""The retrieval report as people read it: the Markdown of ``report.md`` (and of `lvm
report`), the plots, and the table and images the report asset shows in Dagster's UI. What the
report *contains* (report.json) is :mod:`lvm_pipeline.report`'s."""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

import numpy as np

from lvm_pipeline.evaluation import QuerySetResult, confidence_markdown, sequence_use_markdown
from lvm_pipeline.store import Build

TABLE_METRICS = ("r_at_1", "r_at_5", "r_at_10", "r_at_50", "contain_at_50", "eff_at_5",
                 "mrr_at_10", "median_rank", "contrastive_accuracy", "paraphrase_ratio",
                 "margin_positive_share", "latency_p95_ms")


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
                 + sequence_use_markdown(report["sequence_use"]) + "\n")
    if "confidence" in report:
        text += "\n## Confidence intervals and verdicts\n\n" + confidence_markdown(
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


def embedded_images_markdown(build: Build) -> str:
    """The plots inlined as base64 images, so Dagster's UI shows them in the metadata panel."""
    parts = []
    for name in sorted(n for n in build.manifest["files"] if n.startswith("plots/")):
        data = base64.b64encode(build.file(name).read_bytes()).decode()
        parts.append(f"![{Path(name).stem}](data:image/png;base64,{data})")
    return "\n\n".join(parts)
