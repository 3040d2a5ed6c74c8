"""Near-duplicate chunks between two sets of payload rows: the search behind leak-free splits.

Articles are not the only way text leaks between splits: boilerplate paragraphs (the
docstring sample repeats "Indices can be obtained using [`AutoTokenizer`]…" across models with
a word changed) embed at cosine >= 0.995 in different articles. :func:`near_duplicates` finds,
for every row of one set, its nearest row in the other and keeps the pairs above a threshold;
the split construction (:func:`sequences.drop_near_duplicate_windows`) and the leakage guard
both call it. Exact (every pair) up to ``EXACT_PAIRS``, k-means cells above; the costs of both
at the reference's scale are in benchmarks/RESULTS.md, the method in docs/guards.md.
:func:`near_duplicates_ref` is the slow reference the parity tests compare against.
"""

from __future__ import annotations

import faiss
import numpy as np

from lvm_pipeline.embedding import sample_rows, unit_rows
from lvm_pipeline.payload import gather
from lvm_pipeline.search import MIN_POINTS_PER_CELL

# Two chunks at cosine >= 0.995 are the same text with a word or two changed, far above
# unrelated chunks of one article (the measured cosines: docs/guards.md, near_duplicate_cosine).
# A pair above it in two splits is leakage.
NEAR_DUPLICATE_COSINE = 0.995
# Rows added to / searched in the FAISS index per call: bounds the temporary float32 copies.
SEARCH_BLOCK = 65536
# Near-duplicate search: exact (every pair) up to this many row pairs, i.e. any payload up to
# ~80k rows at the default split, the default run included. Above it, cells: a k-means costs a
# fixed amount that the exact search's A·B·D multiply-adds overtake (both timed at the
# reference's 584k rows in benchmarks/RESULTS.md, "Reference scale on 2 CPU cores").
EXACT_PAIRS = 1_000_000_000
# Cells of the IVF search and cells probed per row. A pair at cosine >= 0.995 is <= 0.1 apart,
# so both rows almost always fall in the same cell: one probe already found every planted pair
# of the planted-pair test (benchmarks/RESULTS.md, "Figures behind code defaults"); 2 is the margin.
# The cost is linear in the probes (each probe is one GEMM of the queries in a cell against its
# rows, see _cell_nearest).
NEAR_DUPLICATE_CELLS = 1024
NEAR_DUPLICATE_PROBES = 2
NEAR_DUPLICATE_TRAIN = 65536


def near_duplicates(vectors: np.ndarray, rows_a: np.ndarray, rows_b: np.ndarray,
                    threshold: float, exact: bool | None = None
                    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Rows of ``rows_b`` whose nearest row among ``rows_a`` has cosine >= ``threshold``.

    vectors: (R, D) payload; rows_a (A,), rows_b (B,) payload rows. Returns the hits as
    b_rows (H,), their nearest a_rows (H,) and the cosines (H,) float32. Rows are
    re-normalised, so a non-unit payload cannot hide a pair. ``exact`` (default: when A·B <=
    ``EXACT_PAIRS``) compares every pair (``IndexFlatIP``, A·B·D multiply-adds); otherwise
    rows_a go into ``NEAR_DUPLICATE_CELLS`` k-means cells and each row of rows_b is compared
    with the rows of its ``NEAR_DUPLICATE_PROBES`` nearest cells (see the constants for why
    that finds near-duplicates; :func:`_cell_nearest`). Blocked, so rows_b is never copied
    whole.
    """
    rows_a = np.asarray(rows_a, dtype=np.int64)
    rows_b = np.asarray(rows_b, dtype=np.int64)
    empty = (np.empty(0, np.int64), np.empty(0, np.int64), np.empty(0, np.float32))
    if len(rows_a) == 0 or len(rows_b) == 0:
        return empty
    if exact is None:
        exact = len(rows_a) * len(rows_b) <= EXACT_PAIRS
    cells = min(NEAR_DUPLICATE_CELLS, len(rows_a) // MIN_POINTS_PER_CELL)
    if exact or cells < 2:
        best_cos, best_a = _flat_nearest(vectors, rows_a, rows_b)
    else:
        best_cos, best_a = _cell_nearest(vectors, rows_a, rows_b, cells)
    hit = best_cos >= threshold
    return rows_b[hit], rows_a[best_a[hit]], best_cos[hit].astype(np.float32)


def _flat_nearest(vectors: np.ndarray, rows_a: np.ndarray, rows_b: np.ndarray
                  ) -> tuple[np.ndarray, np.ndarray]:
    """Every pair: (B,) best cosine and (B,) index into rows_a of each row of rows_b."""
    index = faiss.IndexFlatIP(vectors.shape[1])
    for lo in range(0, len(rows_a), SEARCH_BLOCK):
        index.add(unit_rows(gather(vectors, rows_a[lo:lo + SEARCH_BLOCK])))
    best_cos, best_a = np.empty(len(rows_b), np.float32), np.empty(len(rows_b), np.int64)
    for lo in range(0, len(rows_b), SEARCH_BLOCK):
        scores, ids = index.search(unit_rows(gather(vectors, rows_b[lo:lo + SEARCH_BLOCK])), 1)
        best_cos[lo:lo + len(scores)], best_a[lo:lo + len(scores)] = scores[:, 0], ids[:, 0]
    return best_cos, best_a


def _cell_nearest(vectors: np.ndarray, rows_a: np.ndarray, rows_b: np.ndarray, cells: int
                  ) -> tuple[np.ndarray, np.ndarray]:
    """As :func:`_flat_nearest`, but each row of rows_b is compared only with the rows_a of its
    ``NEAR_DUPLICATE_PROBES`` nearest k-means cells.

    What an ``IndexIVFFlat`` search does, except that the comparisons are grouped by cell into
    one GEMM each (the queries probing a cell × the cell's rows): FAISS scans cells one query at
    a time without BLAS, which made the scan most of the search at the reference's scale (the
    profile is in benchmarks/RESULTS.md).
    """
    dim = vectors.shape[1]
    ivf = faiss.IndexIVFFlat(faiss.IndexFlatIP(dim), dim, cells, faiss.METRIC_INNER_PRODUCT)
    ivf.train(unit_rows(gather(vectors, rows_a[sample_rows(len(rows_a), NEAR_DUPLICATE_TRAIN,
                                                       seed=0)])))
    quantizer = ivf.quantizer  # the trained k-means centroids; the IVF lists stay empty
    a_cell = np.concatenate([
        quantizer.search(unit_rows(gather(vectors, rows_a[lo:lo + SEARCH_BLOCK])), 1)[1][:, 0]
        for lo in range(0, len(rows_a), SEARCH_BLOCK)])
    a_order = np.argsort(a_cell, kind="stable")  # rows_a grouped by cell
    a_bounds = np.searchsorted(a_cell[a_order], np.arange(cells + 1))
    a_unit = unit_rows(gather(vectors, rows_a[a_order]))  # (A, D), cell by cell
    best_cos = np.full(len(rows_b), -np.inf, np.float32)
    best_a = np.zeros(len(rows_b), np.int64)
    for lo in range(0, len(rows_b), SEARCH_BLOCK):
        queries = unit_rows(gather(vectors, rows_b[lo:lo + SEARCH_BLOCK]))  # (b, D)
        probed = quantizer.search(queries, NEAR_DUPLICATE_PROBES)[1]  # (b, probes)
        cell_of = probed.reshape(-1)
        query_of = np.repeat(np.arange(len(queries)), probed.shape[1])
        order = np.argsort(cell_of, kind="stable")
        cell_of, query_of = cell_of[order], query_of[order]
        q_bounds = np.searchsorted(cell_of, np.arange(cells + 1))
        for cell in np.unique(cell_of[cell_of >= 0]):
            a0, a1 = a_bounds[cell], a_bounds[cell + 1]
            if a0 == a1:
                continue
            q = query_of[q_bounds[cell]:q_bounds[cell + 1]]  # each query probes a cell once
            scores = queries[q] @ a_unit[a0:a1].T  # (q, rows of the cell)
            arg = scores.argmax(axis=1)
            top = scores[np.arange(len(q)), arg]
            better = top > best_cos[lo + q]
            best_cos[lo + q[better]] = top[better]
            best_a[lo + q[better]] = a_order[a0 + arg[better]]
    return best_cos, best_a


def near_duplicates_ref(vectors: np.ndarray, rows_a: np.ndarray, rows_b: np.ndarray,
                        threshold: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Slow, obvious version of :func:`near_duplicates` (a full cosine matrix) for the parity test."""
    a = np.asarray(vectors[np.asarray(rows_a, dtype=np.int64)], dtype=np.float64)
    b = np.asarray(vectors[np.asarray(rows_b, dtype=np.int64)], dtype=np.float64)
    a /= np.linalg.norm(a, axis=1, keepdims=True)
    b /= np.linalg.norm(b, axis=1, keepdims=True)
    cos = b @ a.T  # (B, A)
    best = cos.argmax(axis=1)
    best_cos = cos[np.arange(len(b)), best]
    hit = best_cos >= threshold
    return (np.asarray(rows_b)[hit].astype(np.int64), np.asarray(rows_a)[best[hit]].astype(np.int64),
            best_cos[hit].astype(np.float32))
