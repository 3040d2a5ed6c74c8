"""The latent vector model: 5 context embeddings in, the next chunk's unit embedding out.

Layout: input projection (embedder dim → d_model), pre-norm residual blocks (Mamba, local
attention or GRU gate, per :class:`LVMConfig.layout`), final RMSNorm, a head back to the
embedder dim at the last position, L2-normalised so the output lives where the payload does.
With ``context_skip`` a learned mix of the context vectors is added before normalising, so the
network predicts a correction to a blend of its inputs rather than a vector from scratch.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from lvm_pipeline.models.attention import LocalAttention
from lvm_pipeline.models.config import LVMConfig
from lvm_pipeline.models.gru_gate import GRUGate
from lvm_pipeline.models.mamba import Mamba


class Block(nn.Module):
    """Pre-norm residual wrapper: ``x + mixer(norm(x))`` (mamba_ssm's ``Block`` layout)."""

    def __init__(self, config: LVMConfig, kind: str) -> None:
        super().__init__()
        self.norm = nn.RMSNorm(config.d_model, eps=1e-5)
        if kind == "mamba":
            self.mixer: nn.Module = Mamba(config.d_model, d_state=config.d_state,
                                          d_conv=config.d_conv, expand=config.expand,
                                          scan_backend=config.scan_backend)
        elif kind == "attn":
            self.mixer = LocalAttention(config.d_model, config.attn_heads, config.attn_window)
        else:
            self.mixer = GRUGate(config.d_model, config.gru_hidden)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.mixer(self.norm(x))


class LVM(nn.Module):
    """``forward``: context (B, L, d_in) float → prediction (B, d_in), unit norm."""

    def __init__(self, config: LVMConfig) -> None:
        super().__init__()
        self.config = config
        self.in_proj = nn.Linear(config.d_in, config.d_model)
        self.blocks = nn.ModuleList(Block(config, kind) for kind in config.layout)
        self.norm_f = nn.RMSNorm(config.d_model, eps=1e-5)
        self.head = nn.Linear(config.d_model, config.d_in)
        self.apply(self._init_linear_bias)
        if config.context_skip:
            mix = torch.zeros(config.context)
            mix[-1] = 1.0  # starts as the copy-last-context baseline
            self.context_mix = nn.Parameter(mix)
            self.context_mix._no_weight_decay = True
            nn.init.zeros_(self.head.weight)  # ... with no correction yet
        # GPT-2 / mamba_ssm rescale: each residual branch's output projection is shrunk by
        # sqrt(n_layers) so the residual stream's variance does not grow with depth.
        for name, param in self.named_parameters():
            if name.endswith("out_proj.weight"):
                nn.init.kaiming_uniform_(param, a=math.sqrt(5))
                with torch.no_grad():
                    param /= math.sqrt(len(config.layout))

    @staticmethod
    def _init_linear_bias(module: nn.Module) -> None:
        if isinstance(module, nn.Linear) and module.bias is not None \
                and not getattr(module.bias, "_no_reinit", False):
            nn.init.zeros_(module.bias)

    def forward(self, context: torch.Tensor) -> torch.Tensor:
        blend, correction = self.forward_parts(context)
        return F.normalize(correction + blend, dim=-1)

    def forward_parts(self, context: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """context (B, L, d_in) → (blend, correction), each (B, d_in), before normalising:
        ``forward`` is ``normalize(correction + blend)``. ``blend`` is ``context_mix · context``
        (zeros without ``context_skip``), ``correction`` the network's head output; what the
        report's diagnostics compare (lvm_pipeline/evaluation/sequence_use.py)."""
        h = self.in_proj(context)  # (B, L, d_model)
        for block in self.blocks:
            h = block(h)  # (B, L, d_model)
        h = self.norm_f(h[:, -1])  # (B, d_model): only the last position predicts
        correction = self.head(h)  # (B, d_in)
        if not self.config.context_skip:
            return torch.zeros_like(correction), correction
        return torch.einsum("l,bld->bd", self.context_mix, context), correction  # (B, d_in)

    def num_params(self) -> int:
        return sum(p.numel() for p in self.parameters())
