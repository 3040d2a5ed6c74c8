"""Paired bootstrap confidence intervals over eval queries: is a difference real or noise?

Every figure here is a mean of a per-query value (MRR@10: the reciprocal rank, 0 beyond 10;
R@k: 1 when the truth is in the top k), so a bootstrap resample of the Q queries (drawn with
replacement) gives each figure's resampled value as the mean over the drawn queries. The
interval is the percentile interval of ``resamples`` such values (Efron & Tibshirani, *An
Introduction to the Bootstrap*, ch. 13).

*Paired*: one set of resampled query indices serves every predictor, so a model − baseline
difference is computed on the same queries for both. Two predictors that find the same easy
queries and miss the same hard ones are correlated; resampling them independently (the
unpaired interval, :func:`unpaired_difference_interval`, kept for comparison) counts the
query-difficulty spread twice and gives a much wider interval.

Verdict of a difference: ``better`` when its interval lies above 0, ``worse`` below 0,
``indistinguishable`` when it contains 0.

Resolution: the smallest MRR@10 difference the eval set resolves is stated as the largest
half-width of the paired 95 % MRR@10 intervals over every model × baseline pair: a difference
larger than that is resolved for every pair, a smaller one may read as indistinguishable. (Not
model − copy-last alone: a model that has not moved from copy-last ranks every query as it
does, and that interval is a point, which says nothing about the eval set.) It shrinks as
1/sqrt(Q): four times the queries halve it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from lvm_pipeline.evaluation.metrics import reciprocal_ranks

METRICS = ("mrr_at_10", "r_at_1", "r_at_5")
VERDICTS = ("better", "indistinguishable", "worse")
# Resamples drawn at a time: a block's (BLOCK, Q) counts are 36 MB at the reference's 45k
# eval windows, whatever ``resamples`` is.
BLOCK = 100


@dataclass(frozen=True)
class BootstrapConfig:
    # At least 1,000: a 95 % interval's ends are the 2.5 % tails, 25 draws each at 1,000.
    resamples: int = 1000
    seed: int = 0
    level: float = 0.95

    def __post_init__(self) -> None:
        if self.resamples < 1000 or not 0 < self.level < 1:
            raise ValueError(f"bootstrap needs resamples >= 1000 and 0 < level < 1: {self}")


def per_query(ranks: np.ndarray) -> dict[str, np.ndarray]:
    """ranks (Q,) 1-based → each of :data:`METRICS` per query, (Q,) float64 (its mean is the
    report's figure)."""
    ranks = np.asarray(ranks)
    return {"mrr_at_10": reciprocal_ranks(ranks, 10), "r_at_1": (ranks <= 1).astype(np.float64),
            "r_at_5": (ranks <= 5).astype(np.float64)}


def resampled_means(values: np.ndarray, resamples: int, rng: np.random.Generator
                    ) -> np.ndarray:
    """values (Q, C) float → (resamples, C) float64: each column's mean over each resample of
    the Q rows drawn with replacement; the same rows for every column (paired)."""
    if values.ndim != 2 or len(values) == 0:
        raise ValueError(f"bootstrap: values must be (Q, C) with Q >= 1, got {values.shape}")
    n = len(values)
    out = np.empty((resamples, values.shape[1]))
    for lo in range(0, resamples, BLOCK):
        b = min(BLOCK, resamples - lo)
        idx = rng.integers(0, n, size=(b, n))  # (b, Q) drawn query indices
        flat = (idx + n * np.arange(b)[:, None]).ravel()  # (b·Q,) one count row per resample
        counts = np.bincount(flat, minlength=b * n).reshape(b, n)  # (b, Q)
        out[lo:lo + b] = counts @ values / n  # (b, C)
    return out


def _interval(value: float, samples: np.ndarray, level: float) -> dict[str, float]:
    tail = (1 - level) / 2
    low, high = np.quantile(samples, [tail, 1 - tail])
    return {"value": float(value), "low": float(low), "high": float(high)}


def verdict(low: float, high: float) -> str:
    """``better`` above 0, ``worse`` below 0, else ``indistinguishable``."""
    return "better" if low > 0 else "worse" if high < 0 else "indistinguishable"


def confidence(ranks: dict[str, np.ndarray], models: list[str], baselines: list[str],
               config: BootstrapConfig = BootstrapConfig()) -> dict[str, Any]:
    """Intervals of every predictor in ``ranks`` (name → (Q,) ranks of the same queries) and
    paired differences of every model to every baseline; report.json's ``confidence``."""
    names = list(ranks)
    n = {len(r) for r in ranks.values()}
    if len(n) != 1:
        raise ValueError(f"bootstrap: every predictor must rank the same queries; got "
                         f"{ {name: len(r) for name, r in ranks.items()} }")
    missing = sorted((set(models) | set(baselines)) - set(names))
    if missing:
        raise ValueError(f"bootstrap: no ranks for {missing}; have {names}")
    columns = [(name, metric) for name in names for metric in METRICS]
    pairs = [(model, base, metric) for model in models for base in baselines for metric in METRICS]
    per = {name: per_query(r) for name, r in ranks.items()}
    # Each difference is resampled as the mean of its per-query differences, in the same draws
    # as the figures (paired): equal to the difference of the two means, but exact where the
    # two predictors rank alike (the BLAS sums of two equal columns may differ in the last bit).
    values = np.stack([per[name][metric] for name, metric in columns]
                      + [per[model][m] - per[base][m] for model, base, m in pairs],
                      axis=1)  # (Q, P·M + pairs)
    samples = resampled_means(values, config.resamples, np.random.default_rng(config.seed))
    point = values.mean(axis=0)  # (P·M + pairs,)
    col = {key: i for i, key in enumerate([*columns, *pairs])}
    intervals = {name: {m: _interval(point[col[name, m]], samples[:, col[name, m]], config.level)
                        for m in METRICS} for name in names}
    differences: dict[str, dict[str, Any]] = {}
    for model in models:
        differences[model] = {}
        for base in baselines:
            out = {}
            for m in METRICS:
                i = col[model, base, m]
                out[m] = _interval(point[i], samples[:, i], config.level)
                out[m]["verdict"] = verdict(out[m]["low"], out[m]["high"])
            differences[model][base] = out
    half = {model: max(((i["mrr_at_10"]["high"] - i["mrr_at_10"]["low"]) / 2
                        for i in by_base.values()), default=0.0)
            for model, by_base in differences.items()}
    return {"method": "paired bootstrap over eval queries, percentile intervals",
            "resamples": config.resamples, "seed": config.seed, "level": config.level,
            "n_queries": n.pop(), "metrics": list(METRICS), "intervals": intervals,
            "differences": differences,
            "mrr_at_10_resolution": max(half.values()) if half else None,
            "resolution": f"the largest half-width of the paired {config.level:.0%} MRR@10 "
                          "intervals over every model × baseline pair",
            "mrr_at_10_resolution_per_model": half}


def paired_differences(a: np.ndarray, b: np.ndarray,
                       config: BootstrapConfig = BootstrapConfig()) -> dict[str, dict[str, Any]]:
    """Each of :data:`METRICS` of a − b, a and b (Q,) ranks of the same queries by two
    predictors: ``{metric: {"value", "low", "high", "verdict"}}`` (the promotion gate's
    candidate − promoted, a report against an earlier one on the same eval set)."""
    return confidence({"a": a, "b": b}, ["a"], ["b"], config)["differences"]["a"]["b"]


def unpaired_difference_interval(a: np.ndarray, b: np.ndarray,
                                 config: BootstrapConfig = BootstrapConfig()) -> tuple[float, float]:
    """The interval of mean(a) − mean(b) with a and b (Q,) resampled independently: what the
    paired design improves on, kept for comparison (tests, docs)."""
    ma = resampled_means(np.asarray(a, np.float64)[:, None], config.resamples,
                         np.random.default_rng([config.seed, 0]))[:, 0]
    mb = resampled_means(np.asarray(b, np.float64)[:, None], config.resamples,
                         np.random.default_rng([config.seed, 1]))[:, 0]
    tail = (1 - config.level) / 2
    low, high = np.quantile(ma - mb, [tail, 1 - tail])
    return float(low), float(high)


# --------------------------------------------------------------------------- rendering


def _signed(i: dict[str, float]) -> str:
    return f"{i['value']:+.3f} [{i['low']:+.3f}, {i['high']:+.3f}]"


def confidence_markdown(conf: dict[str, Any]) -> str:
    """The intervals and verdicts as Markdown (report.md, the asset's metadata, `lvm report`)."""
    level = f"{conf['level']:.0%}"
    lines = [f"{conf['n_queries']} queries, {conf['resamples']} paired bootstrap resamples "
             f"(seed {conf['seed']}), {level} percentile intervals.", ""]
    resolution = conf["mrr_at_10_resolution"]
    if resolution is not None:
        lines += [f"**Resolution:** this eval set resolves MRR@10 differences of about "
                  f"±{resolution:.3f} ({conf['resolution']}); a smaller difference reads as "
                  "indistinguishable. More queries (`sample_queries`) narrow it as 1/√n.", ""]
    lines += ["| | " + " | ".join(conf["metrics"]) + " |",
              "|" + "---|" * (len(conf["metrics"]) + 1)]
    for name, by_metric in conf["intervals"].items():
        lines.append(f"| {name} | " + " | ".join(
            f"{i['value']:.3f} [{i['low']:.3f}, {i['high']:.3f}]" for i in by_metric.values())
            + " |")
    for metric in ("mrr_at_10", "r_at_5"):
        baselines = next(iter(conf["differences"].values()), {})
        if not baselines:
            break
        lines += ["", f"Paired difference model − baseline, {metric} (verdict at {level}):", "",
                  "| model | " + " | ".join(baselines) + " |", "|" + "---|" * (len(baselines) + 1)]
        for model, by_base in conf["differences"].items():
            lines.append(f"| {model} | " + " | ".join(
                f"{_signed(d[metric])} **{d[metric]['verdict']}**" for d in by_base.values())
                + " |")
    return "\n".join(lines)
