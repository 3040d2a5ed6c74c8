"""Exact search: every query's rank of truth among all payload rows, and the top-k, in one
pass over the (memory-mapped) payload; and the top-k of a FAISS index with excluded rows removed.
"""

from __future__ import annotations

import faiss
import numpy as np

from lvm_pipeline.payload import gather, release_pages
from lvm_pipeline.runtime import Progress, silent

QUERY_BLOCK = 1024

PAYLOAD_BLOCK = 65536


def truth_ranks(queries: np.ndarray, vectors: np.ndarray, truth_rows: np.ndarray,
                exclude_rows: np.ndarray | None, progress: Progress = silent) -> np.ndarray:
    """Exact 1-based rank of each query's truth row among all payload rows (see
    :func:`exact_pass`, which this is without the top-k)."""
    return exact_pass(queries, vectors, truth_rows, exclude_rows, 0, progress)[2]


def exact_pass(queries: np.ndarray, vectors: np.ndarray, truth_rows: np.ndarray,
               exclude_rows: np.ndarray | None, k: int, progress: Progress = silent
               ) -> tuple[np.ndarray | None, np.ndarray | None, np.ndarray]:
    """Every query's exact rank of truth and, if ``k``, its exact top-k, in one pass.

    queries: (Q, D) float32; vectors: (R, D), typically the memory-mapped payload; truth_rows:
    (Q,); exclude_rows: (Q, E) or None, rows that are never candidates (the query's context).
    Rank = 1 + number of non-excluded rows scoring strictly higher than the truth (ties count
    in the truth's favour). The truth's own score and the excluded rows are masked inside each
    block's score matrix, so one GEMM's rounding decides every comparison. The top-k (what a
    flat index returns, excluded rows removed) is kept in FAISS's heaps from the same scores.
    Returns scores (Q, k) float32 and rows (Q, k) int64, best first (None, None if k is 0),
    and ranks (Q,) int64. Each payload block is copied, then its mapped pages are released:
    a pass adds one block to the process's memory, not the payload.
    """
    if (queries.ndim != 2 or queries.shape[1] != vectors.shape[1]
            or truth_rows.shape != (len(queries),)):
        raise ValueError(f"exact pass: queries {queries.shape} and truth rows "
                         f"{truth_rows.shape} must be (Q, {vectors.shape[1]}) and (Q,)")
    if exclude_rows is not None and (exclude_rows.ndim != 2 or len(exclude_rows) != len(queries)):
        raise ValueError(f"exact pass: exclude rows {exclude_rows.shape} must be (Q, E) with "
                         f"Q = {len(queries)}")
    n_q = len(queries)
    truth_scores = np.einsum("qd,qd->q", queries, gather(vectors, truth_rows))  # (Q,)
    above = np.zeros(n_q, dtype=np.int64)
    top_s = top_i = heaps = None
    if k:
        top_s, top_i = np.empty((n_q, k), np.float32), np.empty((n_q, k), np.int64)
        heaps = faiss.float_minheap_array_t()  # a min-heap per query keeps the k largest
        heaps.k, heaps.nh = k, n_q
        heaps.val, heaps.ids = faiss.swig_ptr(top_s), faiss.swig_ptr(top_i)
        heaps.heapify()
    n_rows = vectors.shape[0]
    for lo in range(0, n_rows, PAYLOAD_BLOCK):
        block = np.array(vectors[lo:lo + PAYLOAD_BLOCK], dtype=np.float32)  # (P, D), a copy
        release_pages(vectors)
        for qlo in range(0, n_q, QUERY_BLOCK):
            q = slice(qlo, qlo + QUERY_BLOCK)
            scores = np.ascontiguousarray(queries[q] @ block.T, dtype=np.float32)  # (q, P)
            rows = np.arange(len(scores))
            own = truth_rows[q] - lo  # column of each query's truth in this block
            inside = (own >= 0) & (own < len(block))
            # The truth's score from this same GEMM (einsum may round it differently).
            ref = np.where(inside, scores[rows, np.clip(own, 0, len(block) - 1)],
                           truth_scores[q])
            if exclude_rows is not None:
                cols = exclude_rows[q] - lo  # (q, E)
                hit = (cols >= 0) & (cols < len(block))
                scores[np.nonzero(hit)[0], cols[hit]] = -np.inf
            if heaps is not None:
                heaps.addn(len(block), faiss.swig_ptr(scores), lo, qlo, len(scores))
            scores[rows[inside], own[inside]] = -np.inf
            above[q] += (scores > ref[:, None]).sum(axis=1)
        progress(min(lo + PAYLOAD_BLOCK, n_rows), n_rows)
    if heaps is not None:
        heaps.reorder()  # best first
    return top_s, top_i, above + 1


def top_k(index: faiss.Index, queries: np.ndarray, k: int,
           exclude_rows: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    """Top-k payload rows per query from the index, excluded rows removed.

    Returns scores (Q, k) float32 and rows (Q, k) int64, best first.
    """
    extra = 0 if exclude_rows is None else exclude_rows.shape[1]
    scores, ids = index.search(np.ascontiguousarray(queries, dtype=np.float32), k + extra)
    if exclude_rows is None:
        return scores[:, :k], ids[:, :k]
    keep = ~(ids[:, :, None] == exclude_rows[:, None, :]).any(axis=2)  # (Q, k+E)
    order = np.argsort(~keep, axis=1, kind="stable")[:, :k]  # kept ids first, in order
    return np.take_along_axis(scores, order, axis=1), np.take_along_axis(ids, order, axis=1)

