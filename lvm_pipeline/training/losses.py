"""Training losses: the reference project's cosine + MSE regression, InfoNCE, and their mix.

InfoNCE is the default because it pays for being closer to the truth than to *other* chunks,
which is what retrieval measures; the comparison of the three is in docs/evaluation.md (table 1).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from lvm_pipeline.training.config import TrainConfig


def reference_loss(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """The reference project's 0.7·(1 − cos) + 0.3·MSE. pred, target: (B, D) unit vectors."""
    cos = F.cosine_similarity(pred, target, dim=-1)
    return 0.7 * (1 - cos).mean() + 0.3 * F.mse_loss(pred, target)


def infonce_loss(pred: torch.Tensor, target: torch.Tensor, temperature: float,
                 negatives: torch.Tensor | None = None,
                 negative_mask: torch.Tensor | None = None) -> torch.Tensor:
    """Cross-entropy of each prediction against its own target among the batch's targets and
    optional extra ``negatives`` (S, D); ``negative_mask`` (B, S) hides a negative that is the
    query's own target or context.

    Unlike cosine regression this pays for being closer to the truth than to *other* chunks,
    which is what retrieval measures.
    """
    candidates = target if negatives is None else torch.cat([target, negatives])  # (B + S, D)
    logits = pred @ candidates.t() / temperature  # (B, B + S)
    if negative_mask is not None:
        extra = logits[:, len(target):].masked_fill(negative_mask, float("-inf"))
        logits = torch.cat([logits[:, :len(target)], extra], dim=1)
    return F.cross_entropy(logits, torch.arange(len(pred), device=pred.device))


def compute_loss(pred: torch.Tensor, target: torch.Tensor, config: TrainConfig,
                 rank_targets: torch.Tensor | None = None,
                 payload_negatives: torch.Tensor | None = None,
                 payload_mask: torch.Tensor | None = None) -> torch.Tensor:
    """pred, target: (B, D). InfoNCE candidates beyond the batch: ``rank_targets`` (M, D), the
    other ranks' share of the global batch in data-parallel training, and ``payload_negatives``
    (S, D) with ``payload_mask`` (B, S) hiding each query's own target and context rows."""
    pred, target = pred.float(), target.float()
    if config.loss == "reference":
        return reference_loss(pred, target)
    extra, masks = [], []
    if rank_targets is not None:
        extra.append(rank_targets.float())
        masks.append(torch.zeros(len(pred), len(rank_targets), dtype=torch.bool,
                                 device=pred.device))
    if payload_negatives is not None:
        extra.append(payload_negatives.float())
        masks.append(payload_mask)
    nce = infonce_loss(pred, target, config.temperature,
                       torch.cat(extra) if extra else None,
                       torch.cat(masks, dim=1) if masks else None)
    if config.loss == "infonce":
        return nce
    w = config.infonce_weight
    return w * nce + (1 - w) * reference_loss(pred, target)
