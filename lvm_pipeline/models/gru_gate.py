"""A GRU gate: a small recurrent layer whose output is projected back and added residually.

Mamba-GR follows every Mamba layer with one; the GRU's gating gives a second, nonlinear path
through time next to the scan's linear recurrence.
"""

from __future__ import annotations

import torch
from torch import nn


class GRUGate(nn.Module):
    """``forward``: (B, L, D) → (B, L, D), through a GRU of ``hidden`` units."""

    def __init__(self, d_model: int, hidden: int = 256) -> None:
        super().__init__()
        self.gru = nn.GRU(d_model, hidden, batch_first=True)
        self.out_proj = nn.Linear(hidden, d_model, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, _ = self.gru(x)  # (B, L, hidden)
        return self.out_proj(h)  # (B, L, D)
