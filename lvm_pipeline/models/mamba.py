"""The Mamba mixer, with the parameter names, shapes and initialisation of mamba_ssm's ``Mamba``.

Source: ``mamba_ssm/modules/mamba_simple.py`` (Gu & Dao, 2023). The parameters are ``in_proj``,
``conv1d``, ``x_proj``, ``dt_proj``, ``A_log``, ``D``, ``out_proj`` with mamba_ssm's shapes, so a
``state_dict`` moves between this portable PyTorch path and mamba_ssm's fused CUDA kernels
unchanged. The scan itself lives in :mod:`lvm_pipeline.models.scan`; ``scan_backend`` picks
how it runs (``auto``: mamba_ssm's fused ``selective_scan_fn`` where mamba_ssm imports on CUDA,
else our Triton kernel on CUDA, else the recompute scan) and never changes the weights.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from lvm_pipeline.models.scan import selective_scan


class Mamba(nn.Module):
    """Selective state-space mixer. ``forward``: (B, L, D) → (B, L, D)."""

    def __init__(
        self,
        d_model: int,
        d_state: int = 16,
        d_conv: int = 4,
        expand: int = 2,
        dt_min: float = 1e-3,
        dt_max: float = 1e-1,
        dt_init_floor: float = 1e-4,
        scan_backend: str = "auto",
    ) -> None:
        super().__init__()
        self.d_model, self.d_state, self.d_conv = d_model, d_state, d_conv
        self.d_inner = expand * d_model
        self.dt_rank = math.ceil(d_model / 16)
        self.scan_backend = scan_backend

        self.in_proj = nn.Linear(d_model, 2 * self.d_inner, bias=False)  # x and the gate z
        # Depthwise causal conv: padding d_conv-1 then keep the first L outputs.
        self.conv1d = nn.Conv1d(self.d_inner, self.d_inner, kernel_size=d_conv,
                                groups=self.d_inner, padding=d_conv - 1, bias=True)
        self.x_proj = nn.Linear(self.d_inner, self.dt_rank + 2 * d_state, bias=False)
        self.dt_proj = nn.Linear(self.dt_rank, self.d_inner, bias=True)

        # dt_proj starts near identity scale: std dt_rank^-0.5 keeps dt's pre-activation O(1).
        dt_init_std = self.dt_rank**-0.5
        nn.init.uniform_(self.dt_proj.weight, -dt_init_std, dt_init_std)
        # Bias = softplus^-1(dt) with dt log-uniform in [dt_min, dt_max], so that at init each
        # channel's step size spans short and long memories (mamba_simple's dt init).
        dt = torch.exp(torch.rand(self.d_inner) * (math.log(dt_max) - math.log(dt_min))
                       + math.log(dt_min)).clamp(min=dt_init_floor)
        inv_dt = dt + torch.log(-torch.expm1(-dt))
        with torch.no_grad():
            self.dt_proj.bias.copy_(inv_dt)
        self.dt_proj.bias._no_reinit = True  # the model-level init must not zero it

        # S4D-real init: A = -(1..d_state) per channel, stored as fp32 log so A stays negative.
        a = torch.arange(1, d_state + 1, dtype=torch.float32).repeat(self.d_inner, 1)
        self.A_log = nn.Parameter(torch.log(a))  # (d_inner, d_state)
        self.A_log._no_weight_decay = True
        self.D = nn.Parameter(torch.ones(self.d_inner))  # skip connection, starts as identity
        self.D._no_weight_decay = True

        self.out_proj = nn.Linear(self.d_inner, d_model, bias=False)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        """hidden: (B, L, D) → (B, L, D)."""
        L = hidden.shape[1]
        xz = self.in_proj(hidden).transpose(1, 2)  # (B, 2*d_inner, L)
        x, z = xz.chunk(2, dim=1)  # (B, d_inner, L) each
        x = F.silu(self.conv1d(x)[..., :L])  # (B, d_inner, L), causal
        x_dbl = self.x_proj(x.transpose(1, 2))  # (B, L, dt_rank + 2*d_state)
        dt, b, c = torch.split(x_dbl, [self.dt_rank, self.d_state, self.d_state], dim=-1)
        dt = (dt @ self.dt_proj.weight.t()).transpose(1, 2)  # (B, d_inner, L), bias in scan
        A = -torch.exp(self.A_log.float())  # (d_inner, d_state)
        y = selective_scan(
            x, dt, A, b.transpose(1, 2), c.transpose(1, 2), self.D.float(), z=z,
            delta_bias=self.dt_proj.bias.float(), delta_softplus=True,
            backend=self.scan_backend,
        )  # (B, d_inner, L)
        return self.out_proj(y.transpose(1, 2))  # (B, L, D)


def use_scan_backend(model: nn.Module, backend: str) -> None:
    """Run every Mamba mixer of ``model`` with ``backend`` (weights are untouched)."""
    for module in model.modules():
        if isinstance(module, Mamba):
            module.scan_backend = backend
