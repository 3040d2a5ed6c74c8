"""The selective scan of Mamba: ``h_t = exp(Δ_t A) h_{t-1} + Δ_t B_t u_t``, ``y_t = C_t h_t + D u_t``.

Backends, chosen explicitly (never a silent fallback):

- ``ref`` — :func:`selective_scan_ref`, the slow readable loop (mamba_ssm's
  ``selective_scan_ref`` semantics), used as the parity reference;
- ``torch`` — the portable path: the same recurrence one step at a time, never materialising
  the (B, D, L, N) tensors at once;
- ``mamba_ssm`` — mamba_ssm's fused CUDA kernel (optional ``cuda`` extra, CUDA only).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

BACKENDS = ("ref", "torch", "mamba_ssm")


def _prepare_delta(delta: torch.Tensor, delta_bias: torch.Tensor | None,
                   delta_softplus: bool) -> torch.Tensor:
    delta = delta.float()
    if delta_bias is not None:
        delta = delta + delta_bias[..., None].float()
    return F.softplus(delta) if delta_softplus else delta


def selective_scan_ref(
    u: torch.Tensor,
    delta: torch.Tensor,
    A: torch.Tensor,
    B: torch.Tensor,
    C: torch.Tensor,
    D: torch.Tensor | None = None,
    z: torch.Tensor | None = None,
    delta_bias: torch.Tensor | None = None,
    delta_softplus: bool = False,
    return_last_state: bool = False,
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """Reference scan, written for clarity.

    u, delta: (B, D, L); A: (D, N); B, C: (B, N, L); D: (D,); z: (B, D, L); delta_bias: (D,).
    Returns y (B, D, L) in u's dtype, and the last state (B, D, N) if ``return_last_state``.
    """
    dtype_in = u.dtype
    u = u.float() if u.dtype != torch.float64 else u
    delta = _prepare_delta(delta, delta_bias, delta_softplus).to(u.dtype)
    A, B, C = A.to(u.dtype), B.to(u.dtype), C.to(u.dtype)
    batch, dim, length = u.shape
    delta_a = torch.exp(torch.einsum("bdl,dn->bdln", delta, A))  # (B, D, L, N)
    delta_b_u = torch.einsum("bdl,bnl,bdl->bdln", delta, B, u)  # (B, D, L, N)
    state = u.new_zeros(batch, dim, A.shape[1])  # (B, D, N)
    ys = []
    for t in range(length):
        state = delta_a[:, :, t] * state + delta_b_u[:, :, t]
        ys.append(torch.einsum("bdn,bn->bd", state, C[:, :, t]))
    y = torch.stack(ys, dim=2)  # (B, D, L)
    out = y if D is None else y + u * D.to(u.dtype)[:, None]
    if z is not None:
        out = out * F.silu(z.to(out.dtype))
    out = out.to(dtype_in)
    return (out, state) if return_last_state else out


def _scan_torch(u, delta, A, B, C, D, z, delta_bias, delta_softplus):
    """Step-at-a-time scan: per step only (B, D, N) tensors exist, not (B, D, L, N)."""
    dtype_in = u.dtype
    u = u.float()
    delta = _prepare_delta(delta, delta_bias, delta_softplus)  # (B, D, L)
    A, B, C = A.float(), B.float(), C.float()
    state = u.new_zeros(u.shape[0], u.shape[1], A.shape[1])  # (B, D, N)
    ys = []
    for t in range(u.shape[2]):
        d_t = delta[:, :, t, None]  # (B, D, 1)
        state = torch.exp(d_t * A) * state + (d_t * u[:, :, t, None]) * B[:, None, :, t]
        ys.append(torch.einsum("bdn,bn->bd", state, C[:, :, t]))
    y = torch.stack(ys, dim=2)  # (B, D, L)
    if D is not None:
        y = y + u * D.float()[:, None]
    if z is not None:
        y = y * F.silu(z.float())
    return y.to(dtype_in)


def _scan_mamba_ssm(u, delta, A, B, C, D, z, delta_bias, delta_softplus):
    try:
        from mamba_ssm.ops.selective_scan_interface import selective_scan_fn
    except ImportError as err:
        raise ImportError(
            "scan backend 'mamba_ssm' needs the fused CUDA kernels: "
            "pip install -e '.[cuda]' (mamba-ssm builds only on a CUDA machine)"
        ) from err
    return selective_scan_fn(u, delta, A, B.contiguous(), C.contiguous(), D, z=z,
                             delta_bias=delta_bias, delta_softplus=delta_softplus)


def selective_scan(u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False,
                   backend: str = "torch") -> torch.Tensor:
    """Dispatch to the named backend; shapes as in :func:`selective_scan_ref`."""
    if backend == "torch":
        return _scan_torch(u, delta, A, B, C, D, z, delta_bias, delta_softplus)
    if backend == "ref":
        return selective_scan_ref(u, delta, A, B, C, D, z, delta_bias, delta_softplus)
    if backend == "mamba_ssm":
        return _scan_mamba_ssm(u, delta, A, B, C, D, z, delta_bias, delta_softplus)
    raise ValueError(f"unknown scan backend {backend!r}; valid: {', '.join(BACKENDS)}")
