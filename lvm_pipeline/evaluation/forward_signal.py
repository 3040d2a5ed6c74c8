"""The payload's forward signal: does the embedding know which way the text runs?

Per window: cos(last context, next) − cos(last context, previous), where *next* is the window's
target and *previous* the context chunk before the last one; the forward signal is its mean over
the windows. An encoder trained for similarity is nearly symmetric in time: the chunk after the
last context is about as close to it as the chunk before (the figures measured upstream on
novels, arXiv and Wikipedia: docs/evaluation.md, "The payload's forward signal"). Near zero or
below, the last context says little about which neighbour comes next, which bounds what any
next-chunk predictor can gain over copying the last context: the report states it beside the
baselines, the learnability guard on the training windows.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from lvm_pipeline.evaluation.bootstrap import BootstrapConfig, resampled_means
from lvm_pipeline.payload import gather
from lvm_pipeline.sequences import SequenceSet

# Windows gathered at a time: three (B, D) blocks, 37 MB at 768-d, whatever the set's size.
BLOCK = 4096
EXPLANATION = ("mean over the windows of cos(last context, next) − cos(last context, previous); "
               "near 0 or below, the embedding is nearly symmetric in time and no predictor can "
               "gain much over copying the last context")


def _cos(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Row-wise cosine of (B, D) and (B, D) → (B,) float64 (a zero row: 0)."""
    a, b = a.astype(np.float64), b.astype(np.float64)
    norms = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
    return np.einsum("bd,bd->b", a, b) / np.where(norms > 0, norms, 1.0)


def forward_signal_per_window(vectors: np.ndarray, seqs: SequenceSet,
                              rows: np.ndarray | None = None) -> np.ndarray:
    """Each window's cos(last context, next) − cos(last context, previous): (W,) float64 for
    the windows ``rows`` (W,) of ``seqs`` (None: all), over the payload ``vectors`` (R, D)."""
    rows = np.arange(len(seqs)) if rows is None else np.asarray(rows)
    out = np.empty(len(rows), dtype=np.float64)
    for lo in range(0, len(rows), BLOCK):
        block = rows[lo:lo + BLOCK]
        last = gather(vectors, seqs.context_rows[block, -1])  # (B, D)
        previous = gather(vectors, seqs.context_rows[block, -2])  # (B, D)
        following = gather(vectors, seqs.target_row[block])  # (B, D)
        out[lo:lo + len(block)] = _cos(last, following) - _cos(last, previous)
    return out


def measure_forward_signal(vectors: np.ndarray, seqs: SequenceSet,
                   config: BootstrapConfig | None = None) -> dict[str, Any]:
    """The forward signal of ``seqs`` with its bootstrap interval (a mean of per-window values,
    resampled like the report's figures): ``{"value", "low", "high", "level", "n_windows"}``;
    value, low and high None for an empty set."""
    config = config or BootstrapConfig()
    values = forward_signal_per_window(vectors, seqs)
    if not len(values):
        return {"value": None, "low": None, "high": None, "level": config.level, "n_windows": 0}
    samples = resampled_means(values[:, None], config.resamples,
                              np.random.default_rng(config.seed))[:, 0]
    tail = (1 - config.level) / 2
    low, high = np.quantile(samples, [tail, 1 - tail])
    return {"value": float(values.mean()), "low": float(low), "high": float(high),
            "level": config.level, "n_windows": len(values)}


def forward_signal_text(signal: dict[str, Any]) -> str:
    """One line for report.md and the UI: the figure, its interval and what it means."""
    if signal.get("value") is None:
        return "Forward signal: no windows to measure."
    return (f"**Forward signal {signal['value']:+.4f}** [{signal['low']:+.4f}, "
            f"{signal['high']:+.4f}] ({signal['level']:.0%}, {signal['n_windows']} windows): "
            f"{EXPLANATION}.")
