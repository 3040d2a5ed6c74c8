"""Baselines every report carries, so a model's numbers always have something to beat.

- ``copy_last_context``: the last context chunk is the prediction (strong when adjacent chunks
  are similar; the first thing a model must beat);
- ``mean_of_context``: the normalised mean of the 5 context vectors;
- ``ridge``: a closed-form linear map from the 5 concatenated context vectors to the target
  (:mod:`lvm_pipeline.evaluation.ridge`), fit on the training windows, its penalty picked by val MRR@10
  (by val cosine it picks a large penalty that shrinks every prediction towards one centroid
  and retrieves nothing);
- ``oracle``: the truth vector itself. Not a baseline to beat but a sanity check: searching
  with the truth must return it at rank 1; anything less means the index or the keys are broken.

Two more baselines are trained with the models' own loss and loop, in
:mod:`lvm_pipeline.report.trained_baselines`: ``learned_blend`` (the five mixing weights alone) and
``linear_infonce`` (a full linear map trained with InfoNCE).

Each predictor maps contexts (N, 5, D) to unit vectors (N, D), like a model does.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from lvm_pipeline.embedding import unit_rows
from lvm_pipeline.evaluation.metrics import mrr_at_k
from lvm_pipeline.evaluation.ridge import PENALTIES, normal_equations, solve_ridge
from lvm_pipeline.payload import gather
from lvm_pipeline.search import truth_ranks
from lvm_pipeline.sequences import SequenceSet

Predictor = Callable[[np.ndarray], np.ndarray]


def copy_last_context(context: np.ndarray) -> np.ndarray:
    """context (N, 5, D) → (N, D): the last context vector."""
    return np.ascontiguousarray(context[:, -1], dtype=np.float32)


def mean_of_context(context: np.ndarray) -> np.ndarray:
    """context (N, 5, D) → (N, D): the normalised mean of the context vectors."""
    return unit_rows(context.mean(axis=1))


@dataclass(frozen=True)
class Ridge:
    """Linear predictor ``normalise(flatten(context) @ weight)``; weight (5·D, D) float64.

    ``penalty`` is per training window, as in :data:`lvm_pipeline.evaluation.ridge.PENALTIES`."""

    weight: np.ndarray
    penalty: float
    val_mrr_at_10: float

    def __call__(self, context: np.ndarray) -> np.ndarray:
        flat = context.reshape(len(context), -1).astype(np.float64)  # (N, 5·D)
        return unit_rows(flat @ self.weight)


def fit_ridge(vectors: np.ndarray, train: SequenceSet, val: SequenceSet,
              penalties: tuple[float, ...] = PENALTIES, val_queries: int = 2048) -> Ridge:
    """Closed-form ridge on the training windows; the penalty with the best val MRR@10 (exact
    retrieval over the payload, context rows excluded, up to ``val_queries`` windows) wins."""
    if len(train) == 0 or len(val) == 0 or not penalties:
        raise ValueError(f"the ridge baseline needs train and val windows and a penalty, got "
                         f"{len(train)} train, {len(val)} val windows, penalties {penalties}")
    xtx, xty = normal_equations(vectors, train)
    picked = np.unique(np.linspace(0, len(val) - 1, num=min(val_queries, len(val)),
                                   dtype=np.int64))
    val_context = gather(vectors, val.context_rows[picked])
    best: Ridge | None = None
    for penalty in penalties:
        weight = solve_ridge(xtx, xty, penalty, len(train))  # (5D, D)
        ranks = truth_ranks(Ridge(weight, penalty, 0.0)(val_context), vectors,
                            val.target_row[picked].astype(np.int64),
                            val.context_rows[picked].astype(np.int64))
        mrr = mrr_at_k(ranks)
        if best is None or mrr > best.val_mrr_at_10:
            best = Ridge(weight, penalty, mrr)
    return best  # not None: penalties is non-empty


def baseline_predictors(vectors: np.ndarray, train: SequenceSet, val: SequenceSet
                        ) -> dict[str, Predictor]:
    """The context-based baselines (the oracle needs the truth, see :func:`oracle`)."""
    return {"copy_last_context": copy_last_context, "mean_of_context": mean_of_context,
            "ridge": fit_ridge(vectors, train, val)}


def oracle(vectors: np.ndarray, seqs: SequenceSet) -> np.ndarray:
    """The truth vectors themselves: (N, D)."""
    return gather(vectors, seqs.target_row)
