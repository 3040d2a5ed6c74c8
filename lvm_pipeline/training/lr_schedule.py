"""The learning-rate schedule: linear warmup, then cosine decay to a floor (nanoGPT's ``get_lr``).

Warmup because AdamW's first steps are taken before its moment estimates settle; the floor
(``min_lr_ratio``) keeps the last epochs learning rather than stalling at 0.
"""

from __future__ import annotations

import math

from lvm_pipeline.training.config import TrainConfig


def lr_at(step: int, total_steps: int, config: TrainConfig) -> float:
    """1) linear warmup over the first warmup_fraction of steps, 2) cosine decay to min_lr."""
    warmup = max(1, int(config.warmup_fraction * total_steps))
    if step < warmup:
        return config.lr * (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total_steps - warmup))
    min_lr = config.lr * config.min_lr_ratio
    return min_lr + 0.5 * (1 + math.cos(math.pi * progress)) * (config.lr - min_lr)
