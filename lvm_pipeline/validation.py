"""The end-of-epoch validation pass: val loss and cosine, and val retrieval for early stopping.

Early stopping and the best epoch use val MRR@10 by exact retrieval over the whole payload,
not val loss: on the default corpus val InfoNCE kept falling while val retrieval got worse
(docs/evaluation.md). Retrieval is scored like the report (:func:`evaluation.truth_ranks`,
the query's context rows excluded), on an evenly spaced subset of the windows because one exact
pass per epoch over every val window would cost more than the epoch.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from lvm_pipeline.batching import autocast, batches
from lvm_pipeline.evaluation import mrr_at_k, truth_ranks
from lvm_pipeline.losses import compute_loss
from lvm_pipeline.models import LVM
from lvm_pipeline.sequences import SequenceSet
from lvm_pipeline.train_config import TrainConfig


@torch.no_grad()
def evaluate_val(model: LVM, vectors: np.ndarray, seqs: SequenceSet, config: TrainConfig,
                 device: str) -> dict[str, float]:
    """Val loss and cosine over every window, val MRR@10 / R@5 by exact retrieval over the
    whole payload (context rows excluded) on up to ``config.val_queries`` evenly spaced windows.

    The loss is the mean over the windows it scored: a last batch of one window has no
    InfoNCE negative, so it counts for the cosine only (NaN if no batch could be scored).
    In data-parallel training every rank runs this on the whole split: the figures, and so the
    early-stopping decision, are the same on every rank without any communication.
    """
    model.eval()
    loss_sum, n_scored, cos_sum, n = 0.0, 0, 0.0, 0
    predictions = []
    for _, context, target in batches(vectors, seqs, config.batch_size):
        context, target = context.to(device), target.to(device)
        with autocast(device):
            pred = model(context).float()
        if len(pred) > 1:
            loss_sum += float(compute_loss(pred, target, config)) * len(pred)
            n_scored += len(pred)
        cos_sum += float(F.cosine_similarity(pred, target, dim=-1).sum())
        n += len(pred)
        predictions.append(pred.cpu().numpy())
    model.train()
    picked = np.unique(np.linspace(0, len(seqs) - 1, num=min(config.val_queries, len(seqs)),
                                   dtype=np.int64))
    queries = np.concatenate(predictions)[picked]
    ranks = truth_ranks(queries, vectors, seqs.target_row[picked].astype(np.int64),
                        seqs.context_rows[picked].astype(np.int64))
    return {"loss": loss_sum / n_scored if n_scored else math.nan, "cos": cos_sum / max(n, 1),
            "mrr_at_10": mrr_at_k(ranks, 10), "r_at_5": float(np.mean(ranks <= 5))}
