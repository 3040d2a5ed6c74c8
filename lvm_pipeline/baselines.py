"""Baselines every report carries, so a model's numbers always have something to beat.

- ``copy_last_context``: the last context chunk is the prediction (strong when adjacent chunks
  are similar; the first thing a model must beat);
- ``mean_of_context``: the normalised mean of the 5 context vectors;
- ``ridge``: a closed-form linear map from the 5 concatenated context vectors to the target, fit
  on the training windows, its ridge penalty picked by val MRR@10 (by val cosine it picks a
  large penalty that shrinks every prediction towards one centroid and retrieves nothing);
- ``oracle``: the truth vector itself. Not a baseline to beat but a sanity check: searching
  with the truth must return it at rank 1; anything less means the index or the keys are broken.

Each predictor maps contexts (N, 5, D) to unit vectors (N, D), like a model does.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from scipy.linalg.blas import dsyrk

from lvm_pipeline.evaluation import truth_ranks
from lvm_pipeline.sequences import SequenceSet, gather

Predictor = Callable[[np.ndarray], np.ndarray]
RIDGE_PENALTIES = (0.1, 1.0, 10.0, 100.0, 1000.0)
BLOCK = 16384


def _unit(x: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(x, axis=-1, keepdims=True)
    return (x / np.maximum(norms, 1e-12)).astype(np.float32)


def copy_last_context(context: np.ndarray) -> np.ndarray:
    """context (N, 5, D) → (N, D): the last context vector."""
    return np.ascontiguousarray(context[:, -1], dtype=np.float32)


def mean_of_context(context: np.ndarray) -> np.ndarray:
    """context (N, 5, D) → (N, D): the normalised mean of the context vectors."""
    return _unit(context.mean(axis=1))


@dataclass(frozen=True)
class Ridge:
    """Linear predictor ``normalise(flatten(context) @ weight)``; weight (5·D, D)."""

    weight: np.ndarray
    penalty: float
    val_mrr_at_10: float

    def __call__(self, context: np.ndarray) -> np.ndarray:
        flat = context.reshape(len(context), -1).astype(np.float64)  # (N, 5·D)
        return _unit(flat @ self.weight)


def _normal_equations(vectors: np.ndarray, seqs: SequenceSet) -> tuple[np.ndarray, np.ndarray]:
    """XᵀX (5D, 5D) and XᵀY (5D, D) in float64, accumulated block by block (no (N, 5D) copy
    at once).

    Float64, because float32 sums over a block put errors of ~0.1 on entries that the smallest
    penalties (0.1) must dominate. XᵀX is symmetric, so BLAS ``dsyrk`` computes one triangle:
    half a GEMM's work, which at 448k windows × 3,840 features is ~100 s of 2 cores.
    """
    dim = vectors.shape[1]
    xtx = np.zeros((5 * dim, 5 * dim), order="F")  # dsyrk accumulates into it in place
    xty = np.zeros((5 * dim, dim))
    for lo in range(0, len(seqs), BLOCK):
        x = gather(vectors, seqs.context_rows[lo:lo + BLOCK]).reshape(-1, 5 * dim)
        x = x.astype(np.float64)  # (n, 5D) C order, so x.T is Fortran order: no copy for BLAS
        xtx = dsyrk(1.0, x.T, beta=1.0, c=xtx, overwrite_c=True)  # upper triangle += xᵀx
        xty += x.T @ gather(vectors, seqs.target_row[lo:lo + BLOCK])
    return np.triu(xtx) + np.triu(xtx, 1).T, xty


def fit_ridge(vectors: np.ndarray, train: SequenceSet, val: SequenceSet,
              penalties: tuple[float, ...] = RIDGE_PENALTIES, val_queries: int = 2048) -> Ridge:
    """Closed-form ridge on the training windows; the penalty with the best val MRR@10 (exact
    retrieval over the payload, context rows excluded, up to ``val_queries`` windows) wins."""
    xtx, xty = _normal_equations(vectors, train)
    picked = np.unique(np.linspace(0, len(val) - 1, num=min(val_queries, len(val)),
                                   dtype=np.int64))
    val_context = gather(vectors, val.context_rows[picked])
    best: Ridge | None = None
    for penalty in penalties:
        weight = np.linalg.solve(xtx + penalty * np.eye(len(xtx)), xty)  # (5D, D)
        ranks = truth_ranks(Ridge(weight, penalty, 0.0)(val_context), vectors,
                            val.target_row[picked].astype(np.int64),
                            val.context_rows[picked].astype(np.int64))
        mrr = float(np.mean(np.where(ranks <= 10, 1.0 / ranks, 0.0)))
        if best is None or mrr > best.val_mrr_at_10:
            best = Ridge(weight, penalty, mrr)
    assert best is not None
    return best


def baseline_predictors(vectors: np.ndarray, train: SequenceSet, val: SequenceSet
                        ) -> dict[str, Predictor]:
    """The context-based baselines (the oracle needs the truth, see :func:`oracle`)."""
    return {"copy_last_context": copy_last_context, "mean_of_context": mean_of_context,
            "ridge": fit_ridge(vectors, train, val)}


def oracle(vectors: np.ndarray, seqs: SequenceSet) -> np.ndarray:
    """The truth vectors themselves: (N, D)."""
    return gather(vectors, seqs.target_row)
