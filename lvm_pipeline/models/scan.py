"""The selective scan of Mamba: ``h_t = exp(Δ_t A) h_{t-1} + Δ_t B_t u_t``, ``y_t = C_t h_t + D u_t``.

Backends, chosen explicitly by name (never a silent fallback):

- ``ref`` — :func:`selective_scan_ref`, the slow readable loop (mamba_ssm's
  ``selective_scan_ref`` semantics), the parity reference of every other backend;
- ``torch`` — the naive portable path: the recurrence one step at a time under autograd, which
  stores every step's (B, D, N) state for backward (its size at the reference's shape: the
  backends table in README.md);
- ``recompute`` — :class:`RecomputeScan`, a custom autograd function that keeps only its
  (B, D, L) inputs and recomputes the states in backward, in channel chunks of bounded size
  (CPU, MPS, any GPU);
- ``triton`` — the same recompute scheme as a Triton kernel whose state lives in registers
  (:mod:`lvm_pipeline.models.scan_triton`; CUDA, or Triton's interpreter for tests);
- ``mamba_ssm`` — mamba_ssm's fused CUDA kernel (optional ``cuda`` extra, CUDA only);
- ``auto`` — the fastest backend that can run on the tensor's device: ``mamba_ssm``, then
  ``triton`` on CUDA, else ``recompute``. :func:`resolve_backend` says what it chose, and
  training records that in the checkpoint.

All backends compute in float32 (float64 stays float64 in ``ref``) and return ``u``'s dtype.
"""

from __future__ import annotations

import functools
import os

import torch
import torch.nn.functional as F

BACKENDS = ("auto", "ref", "torch", "recompute", "triton", "mamba_ssm")
MAMBA_SSM_HINT = ("pip install -e '.[cuda]' (mamba-ssm builds only on a CUDA machine)")
TRITON_HINT = ("pip install triton (CUDA builds of torch ship it), and run on a CUDA GPU; on a "
               "CPU only Triton's interpreter runs it (TRITON_INTERPRET=1, for tests)")


def _prepare_delta(delta: torch.Tensor, delta_bias: torch.Tensor | None,
                   delta_softplus: bool) -> torch.Tensor:
    delta = delta.float()
    if delta_bias is not None:
        delta = delta + delta_bias[..., None].float()
    return F.softplus(delta) if delta_softplus else delta


# --------------------------------------------------------------------------- choosing a backend


@functools.cache
def _import_error(module: str) -> str | None:
    """Why ``module`` cannot be imported, or None (cached: availability is fixed per process)."""
    try:
        __import__(module)
    except Exception as err:  # mamba_ssm raises more than ImportError without CUDA
        return f"{type(err).__name__}: {err}"
    return None


def triton_interpreted() -> bool:
    """True when Triton runs kernels in its CPU interpreter (``TRITON_INTERPRET=1``)."""
    return os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")


def resolve_backend(requested: str, device: str | torch.device) -> str:
    """The backend that will run on ``device`` for ``requested``.

    ``auto`` picks the fastest that can run there; a named backend that cannot run raises
    with the reason and the install command, instead of falling back.
    """
    if requested not in BACKENDS:
        raise ValueError(f"unknown scan backend {requested!r}; valid: {', '.join(BACKENDS)}")
    kind = torch.device(device).type
    if requested == "auto":
        if kind == "cuda" and _import_error("mamba_ssm") is None:
            return "mamba_ssm"
        if kind == "cuda" and _import_error("triton") is None:
            return "triton"
        return "recompute"
    if requested == "mamba_ssm":
        reason = _import_error("mamba_ssm")
        if reason is not None:
            raise ImportError(f"scan backend 'mamba_ssm' needs the fused CUDA kernels, and "
                              f"mamba_ssm does not import ({reason}): {MAMBA_SSM_HINT}")
        if kind != "cuda":
            raise ValueError(f"scan backend 'mamba_ssm' runs on CUDA only, not on {kind!r}; "
                             "use 'recompute' or 'auto'")
    if requested == "triton":
        reason = _import_error("triton")
        if reason is not None:
            raise ImportError(f"scan backend 'triton' needs triton, which does not import "
                              f"({reason}): {TRITON_HINT}")
        if kind != "cuda" and not (kind == "cpu" and triton_interpreted()):
            raise ValueError(f"scan backend 'triton' runs on CUDA, not on {kind!r} "
                             f"(TRITON_INTERPRET is not set); use 'recompute' or 'auto'")
    return requested


# --------------------------------------------------------------------------- reference


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


# --------------------------------------------------------------------------- naive step loop


def _scan_torch(u, delta, A, B, C, need_last):
    """Step-at-a-time core scan under autograd; per step only (B, D, N) tensors exist, but
    autograd keeps each of them for backward. delta already has bias and softplus applied.
    The last state is returned whether or not ``need_last`` (it exists anyway)."""
    A, B, C = A.float(), B.float(), C.float()
    state = u.new_zeros(u.shape[0], u.shape[1], A.shape[1], dtype=torch.float32)  # (B, D, N)
    ys = []
    for t in range(u.shape[2]):
        d_t = delta[:, :, t, None]  # (B, D, 1)
        state = torch.exp(d_t * A) * state + (d_t * u[:, :, t, None].float()) * B[:, None, :, t]
        ys.append(torch.einsum("bdn,bn->bd", state, C[:, :, t]))
    return torch.stack(ys, dim=2), state  # (B, D, L), (B, D, N)


# --------------------------------------------------------------------------- recompute


# Elements of one (B, d_chunk, L, N) block in the recompute backward: 2^24 float32 = 64 MiB per
# tensor, about six of them live at once. Bounds memory whatever the batch and width. A GPU
# takes 4x larger blocks: fewer, larger kernel launches, ~1.5 GB transient at most.
RECOMPUTE_CHUNK_ELEMENTS = 1 << 24


def _channel_chunks(batch: int, dim: int, length: int, n: int, device: torch.device
                    ) -> list[slice]:
    per_channel = max(1, batch * length * n)
    budget = RECOMPUTE_CHUNK_ELEMENTS * (4 if device.type == "cuda" else 1)
    step = max(1, min(dim, budget // per_channel))
    return [slice(lo, min(lo + step, dim)) for lo in range(0, dim, step)]


def _time_major(x: torch.Tensor) -> torch.Tensor:
    """(B, X, L) → (L, B, X) contiguous, so that every step below reads one contiguous slab."""
    return x.permute(2, 0, 1).contiguous()


def _states(u, delta, A, B):
    """Every state of one channel chunk, time-major. u, delta: (L, B, d); A: (d, N);
    B: (L, B, N) → dA = exp(Δ A) and h, both (L, B, d, N)."""
    dA = torch.exp(delta[..., None] * A)  # (L, B, d, N)
    h = (delta * u)[..., None] * B[:, :, None, :]  # (L, B, d, N), Δ B u, becomes h in place
    for t in range(1, u.shape[0]):
        h[t] += dA[t] * h[t - 1]
    return dA, h


class RecomputeScan(torch.autograd.Function):
    """Core scan y = C·h with states recomputed in backward instead of stored.

    Saves only u, delta (B, D, L), A (D, N), B, C (B, N, L); backward rebuilds the states of one
    channel chunk at a time, so the (B, D, L, N) states never exist at once. Gradients are the
    analytic ones of the recurrence (the Triton kernel follows the same lines):
    g_h[t] = g_y[t] C[t] + exp(Δ[t+1] A) g_h[t+1]; g_A = Σ g_h h[t-1] exp(ΔA) Δ; and so on.
    Works time-major, (L, B, d, N), so each step touches contiguous memory.
    """

    @staticmethod
    def forward(ctx, u, delta, A, B, C):
        batch, dim, length = u.shape
        n = A.shape[1]
        u_l, d_l = _time_major(u.float()), _time_major(delta.float())  # (L, B, D)
        B_l, C_l = _time_major(B.float()), _time_major(C.float())  # (L, B, N)
        y = u_l.new_empty(length, batch, dim)  # (L, B, D)
        last = u_l.new_empty(batch, dim, n)  # (B, D, N)
        for ch in _channel_chunks(batch, dim, 1, n, u.device):  # the forward holds one step
            a = A[ch].float()  # (d, N)
            state = u_l.new_zeros(batch, ch.stop - ch.start, n)  # (B, d, N)
            for t in range(length):
                d_t = d_l[t, :, ch, None]  # (B, d, 1)
                state = torch.exp(d_t * a) * state + (d_t * u_l[t, :, ch, None]) * B_l[t, :, None]
                y[t, :, ch] = (state @ C_l[t, :, :, None]).squeeze(-1)  # (B, d)
            last[:, ch] = state
        ctx.save_for_backward(u, delta, A, B, C)
        ctx.mark_non_differentiable(last)
        return y.permute(1, 2, 0), last  # (B, D, L), (B, D, N)

    @staticmethod
    def backward(ctx, g_y, _g_last):
        u, delta, A, B, C = ctx.saved_tensors
        batch, dim, length = u.shape
        n = A.shape[1]
        u_l, d_l, gy_l = (_time_major(t.float()) for t in (u, delta, g_y))  # (L, B, D)
        B_l, C_l = _time_major(B.float()), _time_major(C.float())  # (L, B, N)
        g_u, g_delta = torch.empty_like(u_l), torch.empty_like(d_l)  # (L, B, D)
        g_A = torch.empty_like(A, dtype=torch.float32)  # (D, N)
        g_B, g_C = torch.zeros_like(B_l), torch.zeros_like(C_l)  # (L, B, N)
        for ch in _channel_chunks(batch, dim, length, n, u.device):
            d, uu, gy, a = d_l[:, :, ch], u_l[:, :, ch], gy_l[:, :, ch], A[ch].float()
            dA, h = _states(uu, d, a, B_l)  # (L, B, d, N) each
            g_C += (gy[:, :, None, :] @ h).squeeze(-2)  # Σ_d g_y h, (L, B, N)
            # g_h[t] = g_y[t] C[t] + dA[t+1] g_h[t+1], accumulated in place, backwards in time.
            g_h = gy[..., None] * C_l[:, :, None, :]  # (L, B, d, N)
            for t in reversed(range(length - 1)):
                g_h[t] += dA[t + 1] * g_h[t + 1]
            g_dA = g_h * dA  # (L, B, d, N); × h[t-1] next (h[-1] = 0)
            g_dA[1:] *= h[:-1]
            g_dA[0] = 0
            del h
            g_A[ch] = (g_dA * d[..., None]).sum((0, 1))
            g_hB = (g_h @ B_l[..., None]).squeeze(-1)  # Σ_n g_h B, (L, B, d)
            g_delta[:, :, ch] = (g_dA * a).sum(-1) + uu * g_hB
            g_u[:, :, ch] = d * g_hB
            g_B += ((d * uu)[:, :, None, :] @ g_h).squeeze(-2)  # Σ_d g_h Δ u, (L, B, N)
        return (g_u.permute(1, 2, 0).to(u.dtype), g_delta.permute(1, 2, 0), g_A,
                g_B.permute(1, 2, 0), g_C.permute(1, 2, 0))


def _scan_recompute(u, delta, A, B, C, need_last):
    return RecomputeScan.apply(u, delta, A.float(), B.float(), C.float())  # last: held anyway


def _scan_triton(u, delta, A, B, C, need_last):
    from lvm_pipeline.models.scan_triton import TritonScan

    return TritonScan.apply(u, delta, A.float(), B, C, need_last)  # last: stored only if needed


def _scan_mamba_ssm(u, delta, A, B, C, D, z, delta_bias, delta_softplus, return_last_state):
    from mamba_ssm.ops.selective_scan_interface import selective_scan_fn

    return selective_scan_fn(u, delta, A, B.contiguous(), C.contiguous(), D, z=z,
                             delta_bias=delta_bias, delta_softplus=delta_softplus,
                             return_last_state=return_last_state)


_CORE = {"torch": _scan_torch, "recompute": _scan_recompute, "triton": _scan_triton}


def selective_scan(u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False,
                   backend: str = "auto", return_last_state: bool = False):
    """Dispatch to the backend :func:`resolve_backend` names for ``u``'s device; shapes and
    return value as in :func:`selective_scan_ref`."""
    backend = resolve_backend(backend, u.device)
    if backend == "mamba_ssm":  # computes in float32 inside its kernel
        return _scan_mamba_ssm(u, delta, A, B, C, D, z, delta_bias, delta_softplus,
                               return_last_state)
    # Every backend computes the scan in float32 as mamba_ssm does, also under bf16 autocast
    # (which would otherwise run its C·h products in bf16).
    with torch.autocast(u.device.type, enabled=False):
        if backend == "ref":
            return selective_scan_ref(u, delta, A, B, C, D, z, delta_bias, delta_softplus,
                                      return_last_state)
        # Bias, softplus, the D skip and the z gate are O(B·D·L) elementwise ops that
        # autograd handles at no real memory cost; the core scan is the backend's.
        delta = _prepare_delta(delta, delta_bias, delta_softplus)  # (B, D, L) float32
        y, last = _CORE[backend](u, delta, A, B, C, return_last_state)  # (B, D, L), (B, D, N)
        if D is not None:
            y = y + u.float() * D.float()[:, None]
        if z is not None:
            y = y * F.silu(z.float())
    y = y.to(u.dtype)
    return (y, last) if return_last_state else y
