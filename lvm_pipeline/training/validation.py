"""The end-of-epoch validation pass: val loss and cosine, and val retrieval for early stopping.

Early stopping and the best epoch use val MRR@10 by exact retrieval over the whole payload,
not val loss: on the default corpus val InfoNCE kept falling while val retrieval got worse
(docs/evaluation.md). Retrieval is scored like the report (:func:`lvm_pipeline.search.truth_ranks`,
the query's context rows excluded), on ``val_queries`` evenly spaced windows, which bounds the
cost of the exact pass each epoch pays.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from lvm_pipeline.evaluation import mrr_at_k
from lvm_pipeline.models import LVM
from lvm_pipeline.payload import gather
from lvm_pipeline.search import truth_ranks
from lvm_pipeline.sequences import SequenceSet
from lvm_pipeline.training.batching import autocast, batches
from lvm_pipeline.training.config import TrainConfig
from lvm_pipeline.training.distributed import SINGLE, Distributed
from lvm_pipeline.training.losses import compute_loss


def picked_windows(n_windows: int, config: TrainConfig) -> np.ndarray:
    """(Q,) int64: the ``config.val_queries`` evenly spaced val windows retrieval is scored on."""
    return np.unique(np.linspace(0, n_windows - 1, num=min(config.val_queries, n_windows),
                                 dtype=np.int64))


def copy_last_val(vectors: np.ndarray, seqs: SequenceSet, config: TrainConfig
                  ) -> dict[str, float]:
    """Copy-last's val MRR@10 and R@5 on the windows :func:`evaluate_val` scores: the bar a
    model must clear, since a model that retrieves no better than copying its last input has
    learned nothing about what comes next. vectors: (R, D) float32 payload."""
    picked = picked_windows(len(seqs), config)
    ranks = truth_ranks(gather(vectors, seqs.context_rows[picked, -1]), vectors,
                        seqs.target_row[picked].astype(np.int64),
                        seqs.context_rows[picked].astype(np.int64))
    return {"mrr_at_10": mrr_at_k(ranks, 10), "r_at_5": float(np.mean(ranks <= 5))}


@torch.no_grad()
def evaluate_val(model: LVM, vectors: np.ndarray, seqs: SequenceSet, config: TrainConfig,
                 device: str, ranks: Distributed = SINGLE) -> dict[str, float]:
    """Val loss and cosine over every window, val MRR@10 / R@5 by exact retrieval over the
    whole payload (context rows excluded) on up to ``config.val_queries`` evenly spaced windows.

    vectors: (R, D) float32 payload. The loss is the mean over the windows it scored: a last
    batch of one window has no InfoNCE negative, so it counts for the cosine only (NaN if no
    batch could be scored at all). In data-parallel training rank r scores batches r,
    r + world_size, … and the sums and the picked windows' ranks are all-reduced through
    ``ranks``: every rank gets the one-process figures (up to float summation order) and so
    takes the same early-stopping decision.
    """
    picked = picked_windows(len(seqs), config)
    loss_sum, n_scored, cos_sum, n = 0.0, 0, 0.0, 0
    positions, queries = [], []  # this rank's picked windows: index into picked, prediction
    model.eval()
    for i, (idx, context, target) in enumerate(batches(vectors, seqs, config.batch_size)):
        if i % ranks.world_size != ranks.rank:
            continue
        context, target = context.to(device), target.to(device)
        with autocast(device):
            pred = model(context).float()  # (B, D)
        if len(pred) > 1:
            loss_sum += float(compute_loss(pred, target, config)) * len(pred)
            n_scored += len(pred)
        cos_sum += float(F.cosine_similarity(pred, target, dim=-1).sum())
        n += len(pred)
        here = np.flatnonzero((picked >= idx[0]) & (picked <= idx[-1]))  # idx is contiguous
        positions.append(here)
        queries.append(pred.cpu().numpy()[picked[here] - idx[0]])
    model.train()
    # The rank of each picked window's truth, 0 where another rank scores it: summed over the
    # ranks this is every rank, exactly (integers in float64).
    query_ranks = np.zeros(len(picked))
    mine = np.concatenate(positions) if positions else np.empty(0, np.int64)
    if len(mine):
        rows = picked[mine]
        query_ranks[mine] = truth_ranks(np.concatenate(queries), vectors,
                                        seqs.target_row[rows].astype(np.int64),
                                        seqs.context_rows[rows].astype(np.int64))
    totals = ranks.sum([loss_sum, n_scored, cos_sum, n, *query_ranks], device)
    loss_sum, n_scored, cos_sum, n = totals[:4]
    query_ranks = np.asarray(totals[4:])
    return {"loss": loss_sum / n_scored if n_scored else math.nan, "cos": cos_sum / max(n, 1),
            "mrr_at_10": mrr_at_k(query_ranks, 10), "r_at_5": float(np.mean(query_ranks <= 5))}
