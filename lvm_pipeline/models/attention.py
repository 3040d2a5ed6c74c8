"""Causal local self-attention: each position attends to itself and the ``window - 1`` before it.

Used by Mamba-H (every 4th layer) and Mamba-Sandwich (the bread). With 5-chunk contexts a window
of 8 sees the whole context; the mask keeps the layer correct for longer contexts.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class LocalAttention(nn.Module):
    """Multi-head causal attention within a sliding window. ``forward``: (B, L, D) → (B, L, D)."""

    def __init__(self, d_model: int, n_heads: int = 4, window: int = 8) -> None:
        super().__init__()
        if d_model % n_heads:
            raise ValueError(f"d_model {d_model} is not divisible by n_heads {n_heads}")
        self.n_heads, self.window = n_heads, window
        self.qkv = nn.Linear(d_model, 3 * d_model, bias=False)
        self.out_proj = nn.Linear(d_model, d_model, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, L, D = x.shape
        q, k, v = self.qkv(x).split(D, dim=2)  # (B, L, D) each
        q, k, v = (t.view(B, L, self.n_heads, D // self.n_heads).transpose(1, 2)
                   for t in (q, k, v))  # (B, nh, L, hs)
        pos = torch.arange(L, device=x.device)
        offset = pos[:, None] - pos[None, :]  # (L, L): query minus key position
        allowed = (offset >= 0) & (offset < self.window)  # causal band of width `window`
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=allowed)  # (B, nh, L, hs)
        return self.out_proj(y.transpose(1, 2).reshape(B, L, D))  # (B, L, D)
