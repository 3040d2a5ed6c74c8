"""Neighbour statistics of a payload: how hard next-chunk retrieval is on it, model-free.

What decides whether retrieval figures measured on a payload say anything about real data is
not the mean cosine of adjacent chunks but what competes with the truth: how close a chunk's
nearest *non-adjacent* neighbours are, in its own article and in the others, and where the
truth lands when the last context vector itself is the query (copy-last, ranked exactly as the
report ranks: context rows excluded, ties in the truth's favour). These figures are what
:mod:`lvm_pipeline.synthetic.payload` is calibrated to and records in its manifest, and what
``benchmarks/neighbour_stats.py`` prints for any data dir.

Sampled: the queries are a seeded sample of windows (their last context row is the chunk
measured), so one pass over the payload costs ``sample × rows × dim`` multiply-adds.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from lvm_pipeline.evaluation import mrr_at_k
from lvm_pipeline.payload import gather, release_pages
from lvm_pipeline.search import truth_ranks
from lvm_pipeline.sequences import windows

QUANTILES = (0.1, 0.5, 0.9)
# Payload rows scored per step: bounds the (sample, BLOCK) temporaries (~5 × 32 MB at 1,000).
BLOCK = 8192
# The statistics a synthetic payload is calibrated against (what its config's targets name).
CALIBRATED = ("adjacent_cosine", "random_cosine", "own_article_nn_cosine",
              "other_article_nn_cosine", "copy_last_mrr_at_10")


def _summary(values: np.ndarray) -> dict[str, float]:
    values = values[np.isfinite(values)]
    if not len(values):
        return {"mean": float("nan"), "n": 0}
    out = {"mean": float(values.mean())}
    out.update({f"p{round(q * 100)}": float(np.quantile(values, q)) for q in QUANTILES})
    out["n"] = len(values)
    return out


def neighbour_statistics(vectors: np.ndarray, article_index: np.ndarray,
                         chunk_index: np.ndarray, sample: int = 1000,
                         seed: int = 0) -> dict[str, Any]:
    """Model-free neighbour statistics of a payload (see the module doc).

    vectors: (R, D) unit rows (a memory map is fine: read block by block); article_index,
    chunk_index: (R,) the payload table. ``sample`` windows are drawn (seeded); the chunk
    measured is each window's last context row ``q``, its truth the target ``q + 1``.

    Returns, each as mean / p10 / p50 / p90 over the sample: ``adjacent_cosine`` (q to q + 1),
    ``own_article_nn_cosine`` (q's nearest row of its own article more than one chunk away),
    ``other_article_nn_cosine`` (q's nearest row of another article), ``random_cosine`` (two
    random rows of different articles), ``impostor_cosine`` (the best non-truth, non-context
    row for query q); ``impostor_own_article_share``; and copy-last's ``copy_last_mrr_at_10``,
    ``copy_last_r_at_1``, ``copy_last_r_at_5`` and ``copy_last_median_rank``.
    """
    article_index = np.asarray(article_index, dtype=np.int64)
    context_rows, target_row = windows(article_index, chunk_index)
    if not len(target_row):
        raise ValueError("neighbour statistics need at least one window of 6 consecutive chunks")
    rng = np.random.default_rng(seed)
    pick = np.sort(rng.choice(len(target_row), size=min(sample, len(target_row)), replace=False))
    context, truth = context_rows[pick].astype(np.int64), target_row[pick].astype(np.int64)
    query_row = context[:, -1]
    queries = gather(vectors, query_row)  # (S, D) float32
    q_article = article_index[query_row]
    n_rows = vectors.shape[0]
    own = np.full(len(pick), -np.inf)
    other = np.full(len(pick), -np.inf)
    impostor = np.full(len(pick), -np.inf)
    impostor_own = np.zeros(len(pick), dtype=bool)
    for lo in range(0, n_rows, BLOCK):
        block = np.array(vectors[lo:lo + BLOCK], dtype=np.float32)  # (P, D)
        release_pages(vectors)
        scores = queries @ block.T  # (S, P)
        rows = np.arange(lo, lo + len(block))
        same = q_article[:, None] == article_index[rows][None, :]  # (S, P)
        far = np.abs(rows[None, :] - query_row[:, None]) > 1
        own = np.maximum(own, np.where(same & far, scores, -np.inf).max(axis=1))
        other = np.maximum(other, np.where(~same, scores, -np.inf).max(axis=1))
        # The report's candidates: every row but the context; the truth is not an impostor.
        masked = scores.copy()
        for col in np.concatenate([context, truth[:, None]], axis=1).T - lo:  # (S,) each
            inside = (col >= 0) & (col < len(block))
            masked[np.flatnonzero(inside), col[inside]] = -np.inf
        best = masked.argmax(axis=1)
        best_score = masked[np.arange(len(pick)), best]
        better = best_score > impostor
        impostor = np.where(better, best_score, impostor)
        impostor_own = np.where(better, same[np.arange(len(pick)), best], impostor_own)
    adjacent = np.einsum("qd,qd->q", queries, gather(vectors, truth))
    ranks = truth_ranks(queries, vectors, truth, context)
    i, j = rng.integers(0, n_rows, 4 * sample), rng.integers(0, n_rows, 4 * sample)
    keep = article_index[i] != article_index[j]
    random = np.einsum("qd,qd->q", gather(vectors, i[keep]), gather(vectors, j[keep]))
    return {
        "sample": len(pick), "seed": seed, "rows": int(n_rows),
        "articles": len(np.unique(article_index)),
        "adjacent_cosine": _summary(adjacent),
        "own_article_nn_cosine": _summary(own),
        "other_article_nn_cosine": _summary(other),
        "random_cosine": _summary(random),
        "impostor_cosine": _summary(impostor),
        "impostor_own_article_share": float(impostor_own.mean()),
        "truth_beats_impostor_share": float(np.mean(adjacent >= impostor)),
        "copy_last_mrr_at_10": mrr_at_k(ranks, 10),
        "copy_last_r_at_1": float(np.mean(ranks <= 1)),
        "copy_last_r_at_5": float(np.mean(ranks <= 5)),
        "copy_last_median_rank": float(np.median(ranks)),
    }


def headline(stats: dict[str, Any]) -> dict[str, float]:
    """The calibrated statistics as one number each (means; copy-last's MRR@10)."""
    return {name: (stats[name]["mean"] if isinstance(stats[name], dict) else stats[name])
                  for name in CALIBRATED}
