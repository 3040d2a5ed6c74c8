"""Trends across retrains: each headline figure of a report against an earlier report's, with
an interval of the change (``lvm report --compare``).

- **Paired**, when both reports scored the same queries (the same eval build and the same
  windows): the per-query ranks each report saved (queries.parquet) go through one paired
  bootstrap (:func:`lvm_pipeline.evaluation.bootstrap.paired_differences`), the design of the report's own
  model − baseline differences.
- **Unpaired** otherwise (another eval set or query sample: there are no query pairs): the two
  reports' own intervals, taken as independent, give the change's interval as the change
  ± sqrt(h_now² + h_before²), h each interval's half-width (normal approximation). It is wider,
  as unpaired intervals are.

``contain_at_50`` has no per-query value in a report, so its change has no interval.
"""

from __future__ import annotations

import math
from typing import Any

from lvm_pipeline.evaluation import METRICS, BootstrapConfig, paired_differences, verdict
from lvm_pipeline.report.build import HEADLINE_METRICS, query_ranks, read_report
from lvm_pipeline.store import Build

PAIRED = "paired bootstrap over the queries both reports scored"
UNPAIRED = ("unpaired: change ± sqrt(h_now² + h_before²) from each report's own interval "
            "(the reports scored different queries)")


def _figures(report: dict[str, Any]) -> dict[str, dict[str, float]]:
    """Predictor → its figures; models first. The oracle is a sanity check, not a trend."""
    return {name: figures for group in ("models", "baselines")
            for name, figures in report[group].items() if name != "oracle"}


def same_queries(a: dict[str, Any], b: dict[str, Any]) -> bool:
    return (a["eval_id"] == b["eval_id"]
            and a["query_sample"]["windows"] == b["query_sample"]["windows"])


def _unpaired(now: dict[str, float], before: dict[str, float]) -> tuple[float, float]:
    half = math.hypot((now["high"] - now["low"]) / 2, (before["high"] - before["low"]) / 2)
    change = now["value"] - before["value"]
    return change - half, change + half


def compare_reports(current: Build, previous: Build,
                    config: BootstrapConfig | None = None) -> dict[str, Any]:
    """Every headline figure of every predictor in both reports: before, now, change and (where
    there is one) the change's interval with its verdict."""
    config = config or BootstrapConfig()
    now, before = read_report(current), read_report(previous)
    paired = same_queries(now, before)
    ranks_now = query_ranks(current) if paired else {}
    ranks_before = query_ranks(previous) if paired else {}
    old = _figures(before)
    figures: dict[str, dict[str, Any]] = {}
    for name, fig in _figures(now).items():
        if name not in old:
            continue
        diffs = paired_differences(ranks_now[name], ranks_before[name], config) if paired else {}
        figures[name] = {}
        for metric in HEADLINE_METRICS:
            row: dict[str, Any] = {"before": old[name][metric], "now": fig[metric],
                                   "change": fig[metric] - old[name][metric],
                                   "low": None, "high": None, "verdict": None}
            if metric in METRICS:
                low, high = ((diffs[metric]["low"], diffs[metric]["high"]) if paired else
                             _unpaired(now["confidence"]["intervals"][name][metric],
                                       before["confidence"]["intervals"][name][metric]))
                row.update(low=low, high=high, verdict=verdict(low, high))
            figures[name][metric] = row
    return {"current": current.build_id, "previous": previous.build_id,
            "method": PAIRED if paired else UNPAIRED, "paired": paired,
            "level": config.level if paired else now["confidence"]["level"],
            "n_queries": {"now": now["n_queries"], "before": before["n_queries"]},
            "figures": figures}


def comparison_markdown(comparison: dict[str, Any]) -> str:
    """The comparison as one Markdown table per headline figure."""
    lines = [f"# Report {comparison['current'][:12]} against {comparison['previous'][:12]}", "",
             f"Intervals: {comparison['level']:.0%}, {comparison['method']}; queries "
             f"{comparison['n_queries']['before']} before, {comparison['n_queries']['now']} now.",
             ""]
    for metric in HEADLINE_METRICS:
        lines += [f"## {metric}", "", "| predictor | before | now | change | interval | verdict |",
                  "|---|---|---|---|---|---|"]
        for name, by_metric in comparison["figures"].items():
            r = by_metric[metric]
            interval = ("no per-query values" if r["low"] is None else
                        f"[{r['low']:+.4f}, {r['high']:+.4f}]")
            lines.append(f"| {name} | {r['before']:.4f} | {r['now']:.4f} | {r['change']:+.4f} "
                         f"| {interval} | {r['verdict'] or '—'} |")
        lines.append("")
    return "\n".join(lines)
