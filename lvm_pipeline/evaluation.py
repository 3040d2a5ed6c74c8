"""Retrieval metrics: does the prediction find the true next chunk among every payload row?

Models and baselines go through the same functions. All query sets (one per model or
baseline) are stacked and scored in one pass: one FAISS search gives the candidates (R@k and
Contain@50 as the index returns them), one exact blocked pass gives every query's rank of truth
(the median rank says how far off a model is when R@k is zero). The query's own 5 context rows
are removed from the candidates by default: otherwise "copy the last context" would retrieve
its own input, not the next chunk.
"""

from __future__ import annotations

from dataclasses import dataclass

import faiss
import numpy as np
import torch

from lvm_pipeline.models import LVM
from lvm_pipeline.progress import Progress, silent
from lvm_pipeline.sequences import SequenceSet, gather

KS = (1, 5, 10, 50)
CONTAIN_K = 50
QUERY_BLOCK = 1024
PAYLOAD_BLOCK = 65536


@dataclass(frozen=True)
class EvalConfig:
    exclude_context: bool = True
    batch_size: int = 1024


# --------------------------------------------------------------------------- predictions


@torch.no_grad()
def predict(model: LVM, vectors: np.ndarray, seqs: SequenceSet, batch_size: int = 1024,
            device: str = "cpu") -> np.ndarray:
    """Model predictions for every window: (N, D) float32, unit norm."""
    model.eval().to(device)
    out = []
    for lo in range(0, len(seqs), batch_size):
        context = torch.from_numpy(gather(vectors, seqs.context_rows[lo:lo + batch_size]))
        out.append(model(context.to(device)).float().cpu().numpy())
    return np.concatenate(out) if out else np.empty((0, vectors.shape[1]), np.float32)


def copy_last_context(vectors: np.ndarray, seqs: SequenceSet) -> np.ndarray:
    """Baseline: predict the next chunk as the last context chunk. (N, D)."""
    return gather(vectors, seqs.context_rows[:, -1])


# --------------------------------------------------------------------------- ranking


def truth_ranks(queries: np.ndarray, vectors: np.ndarray, truth_rows: np.ndarray,
                exclude_rows: np.ndarray | None, progress: Progress = silent) -> np.ndarray:
    """Exact 1-based rank of each query's truth row among all payload rows.

    queries: (Q, D) float32; vectors: (R, D); truth_rows: (Q,); exclude_rows: (Q, E) or None.
    Rank = 1 + number of non-excluded rows scoring strictly higher than the truth (ties count
    in the truth's favour). The truth's own score and the excluded rows are masked inside each
    block's score matrix, so one GEMM's rounding decides every comparison.
    """
    assert queries.shape[0] == truth_rows.shape[0], (queries.shape, truth_rows.shape)
    truth_scores = np.einsum("qd,qd->q", queries, gather(vectors, truth_rows))  # (Q,)
    masked = truth_rows[:, None] if exclude_rows is None else np.concatenate(
        [truth_rows[:, None], exclude_rows], axis=1)  # (Q, 1 + E): rows never counted
    above = np.zeros(len(queries), dtype=np.int64)
    n_rows = vectors.shape[0]
    for lo in range(0, n_rows, PAYLOAD_BLOCK):
        block = np.asarray(vectors[lo:lo + PAYLOAD_BLOCK], dtype=np.float32)  # (P, D)
        for qlo in range(0, len(queries), QUERY_BLOCK):
            q = slice(qlo, qlo + QUERY_BLOCK)
            scores = queries[q] @ block.T  # (q, P)
            # The truth's score from this same GEMM: einsum may round it differently.
            own = masked[q] - lo  # (q, 1 + E) column of each masked row in this block
            inside = (own >= 0) & (own < len(block))
            qi = np.nonzero(inside)[0]
            ref = np.where(inside[:, 0], scores[np.arange(len(scores)),
                                                np.clip(own[:, 0], 0, len(block) - 1)],
                           truth_scores[q])
            scores[qi, own[inside]] = -np.inf
            above[q] += (scores > ref[:, None]).sum(axis=1)
        progress(min(lo + PAYLOAD_BLOCK, n_rows), n_rows)
    return above + 1


def search(index: faiss.Index, queries: np.ndarray, k: int,
           exclude_rows: np.ndarray | None) -> np.ndarray:
    """Top-k payload rows per query from the index, excluded rows removed. (Q, k) int64."""
    extra = 0 if exclude_rows is None else exclude_rows.shape[1]
    _, ids = index.search(np.ascontiguousarray(queries, dtype=np.float32), k + extra)
    if exclude_rows is None:
        return ids[:, :k]
    keep = ~(ids[:, :, None] == exclude_rows[:, None, :]).any(axis=2)  # (Q, k+E)
    # Stable sort puts kept ids first in their original order.
    order = np.argsort(~keep, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(ids, order, axis=1)


def metrics_from(ranks: np.ndarray, hits: np.ndarray, truth_rows: np.ndarray) -> dict[str, float]:
    """Metrics of one query set. ranks: (Q,) exact ranks; hits: (Q, 50) index candidates."""
    contained = (hits == truth_rows[:, None]).any(axis=1)
    out = {f"r_at_{k}": float(np.mean(ranks <= k)) for k in KS}
    out.update({
        f"contain_at_{CONTAIN_K}": float(contained.mean()),
        "mrr": float(np.mean(1.0 / ranks)),
        "mrr_at_10": float(np.mean(np.where(ranks <= 10, 1.0 / ranks, 0.0))),
        "median_rank": float(np.median(ranks)),
        "n_queries": len(ranks),
    })
    return out


def evaluate(
    predictions: dict[str, np.ndarray],
    vectors: np.ndarray,
    index: faiss.Index,
    seqs: SequenceSet,
    config: EvalConfig | None = None,
    progress: Progress = silent,
) -> dict[str, dict[str, float]]:
    """Metrics for every named (Q, D) prediction set over the same eval windows, in one pass."""
    config = config or EvalConfig()
    names = list(predictions)
    n = len(seqs)
    for name in names:
        assert predictions[name].shape == (n, vectors.shape[1]), (name, predictions[name].shape)
    queries = np.concatenate([predictions[name] for name in names]).astype(np.float32)
    truth = np.tile(seqs.target_row.astype(np.int64), len(names))
    exclude = (np.tile(seqs.context_rows.astype(np.int64), (len(names), 1))
               if config.exclude_context else None)
    hits = search(index, queries, CONTAIN_K, exclude)
    ranks = truth_ranks(queries, vectors, truth, exclude, progress)
    return {name: metrics_from(ranks[i * n:(i + 1) * n], hits[i * n:(i + 1) * n],
                               truth[i * n:(i + 1) * n])
            for i, name in enumerate(names)}
