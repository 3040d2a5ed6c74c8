"""The selective scan as Triton kernels: state in registers, states recomputed in backward.

The scheme of mamba_ssm's CUDA kernel (``csrc/selective_scan``), written in Triton so it needs
no build step: one program owns a block of channels × all N states of one sequence and walks
the L steps with the state in registers, so the (B, D, L, N) states never reach memory. The
forward stores only y (and, for L > CHUNK, the state at every CHUNK-th step); the backward
recomputes the states of each CHUNK-step segment from its stored start and runs the reverse
recurrence of :class:`lvm_pipeline.models.scan.RecomputeScan` (same formulas, same names).
Within a segment the state before step t is recomputed from the segment start, O(CHUNK²)
steps: nothing to store, and with this product's L = 5 it is 15 steps instead of 5.

Imported only when the ``triton`` backend runs (``scan.resolve_backend`` checks first). With
``TRITON_INTERPRET=1`` set before this module is imported, the kernels run in Triton's CPU
interpreter: that is how the parity test runs without a GPU.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

# Steps per recompute segment: the backward recomputes O(CHUNK²) steps per segment and the
# forward stores one (B, D, N) state per segment after the first. 16 covers L = 5 in one
# segment with no stored state.
CHUNK = 16
# Programs the backward aims for: enough to fill a large GPU, each walking several sequences so
# that the per-group partial sums of g_A, (groups, D, N), stay small.
BWD_PROGRAMS = 2048
# Launch shape, for benchmarks/gpu_train.py to compare on a GPU: block_d None = _blocks' choice.
TUNING: dict[str, int | None] = {"block_d": None, "num_warps": 4}


@triton.jit
def _scan_fwd_kernel(
    u_ptr, delta_ptr, A_ptr, B_ptr, C_ptr, y_ptr, last_ptr, ckpt_ptr,
    D, L, N, n_ckpt,
    CHUNK: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_N: tl.constexpr, STORE_LAST: tl.constexpr,
):
    """Grid (batch, D blocks). u, delta, y: (B, D, L); A: (D, N); B, C: (B, N, L);
    last: (B, D, N), written only if STORE_LAST; ckpt: (B, D, n_ckpt, N), the state before
    steps CHUNK, 2·CHUNK, … All contiguous."""
    b = tl.program_id(0)
    offs_d = tl.program_id(1) * BLOCK_D + tl.arange(0, BLOCK_D)
    offs_n = tl.arange(0, BLOCK_N)
    mask_d, mask_n = offs_d < D, offs_n < N
    mask_dn = mask_d[:, None] & mask_n[None, :]
    # Masked lanes load A = 0, B = C = 0: their state stays 0 and adds nothing.
    A = tl.load(A_ptr + offs_d[:, None] * N + offs_n[None, :], mask=mask_dn, other=0.0)
    h = tl.zeros((BLOCK_D, BLOCK_N), dtype=tl.float32)
    row = (b * D + offs_d) * L  # (BLOCK_D,) offsets of u[b, d, 0]
    col = b * N * L + offs_n * L  # (BLOCK_N,) offsets of B[b, n, 0]
    for t in range(L):
        if (t % CHUNK == 0) & (t > 0):
            ck = ((b * D + offs_d[:, None]) * n_ckpt + (t // CHUNK - 1)) * N + offs_n[None, :]
            tl.store(ckpt_ptr + ck, h, mask=mask_dn)
        u_t = tl.load(u_ptr + row + t, mask=mask_d, other=0.0).to(tl.float32)
        dt_t = tl.load(delta_ptr + row + t, mask=mask_d, other=0.0).to(tl.float32)
        B_t = tl.load(B_ptr + col + t, mask=mask_n, other=0.0).to(tl.float32)
        C_t = tl.load(C_ptr + col + t, mask=mask_n, other=0.0).to(tl.float32)
        h = tl.exp(dt_t[:, None] * A) * h + (dt_t * u_t)[:, None] * B_t[None, :]
        tl.store(y_ptr + row + t, tl.sum(h * C_t[None, :], axis=1), mask=mask_d)
    if STORE_LAST:
        tl.store(last_ptr + (b * D + offs_d[:, None]) * N + offs_n[None, :], h, mask=mask_dn)


@triton.jit
def _scan_bwd_kernel(
    u_ptr, delta_ptr, A_ptr, B_ptr, C_ptr, gy_ptr, ckpt_ptr,
    gu_ptr, gdelta_ptr, gA_ptr, gB_ptr, gC_ptr,
    n_batch, D, L, N, n_ckpt, batch_per_prog,
    CHUNK: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_N: tl.constexpr,
):
    """Grid (D blocks, batch groups). gu, gdelta: (B, D, L); gA: (groups, D, N) partial sums
    over this group's sequences; gB, gC: (B, D blocks, N, L) partial sums over this block's
    channels (summed by the caller: deterministic, no atomics)."""
    pid_d, pid_g = tl.program_id(0), tl.program_id(1)
    n_dblocks = tl.num_programs(0)
    offs_d = pid_d * BLOCK_D + tl.arange(0, BLOCK_D)
    offs_n = tl.arange(0, BLOCK_N)
    mask_d, mask_n = offs_d < D, offs_n < N
    mask_dn = mask_d[:, None] & mask_n[None, :]
    A = tl.load(A_ptr + offs_d[:, None] * N + offs_n[None, :], mask=mask_dn, other=0.0)
    g_A = tl.zeros((BLOCK_D, BLOCK_N), dtype=tl.float32)
    n_seg = tl.cdiv(L, CHUNK)
    for bi in range(batch_per_prog):
        b = pid_g * batch_per_prog + bi
        if b < n_batch:
            row = (b * D + offs_d) * L
            col = b * N * L + offs_n * L
            part = ((b * n_dblocks + pid_d) * N + offs_n) * L  # gB/gC partial of (b, block)
            carry = tl.zeros((BLOCK_D, BLOCK_N), dtype=tl.float32)  # exp(Δ[t+1]A) g_h[t+1]
            for si in range(n_seg):
                seg = n_seg - 1 - si
                t0 = seg * CHUNK
                h0 = tl.zeros((BLOCK_D, BLOCK_N), dtype=tl.float32)
                if seg > 0:
                    ck = ((b * D + offs_d[:, None]) * n_ckpt + (seg - 1)) * N + offs_n[None, :]
                    h0 = tl.load(ckpt_ptr + ck, mask=mask_dn, other=0.0)
                for ti in range(tl.minimum(L - t0, CHUNK)):
                    t = tl.minimum(L, t0 + CHUNK) - 1 - ti
                    h_prev = h0  # recompute the state before step t from the segment start
                    for s in range(t0, t):
                        u_s = tl.load(u_ptr + row + s, mask=mask_d, other=0.0).to(tl.float32)
                        dt_s = tl.load(delta_ptr + row + s, mask=mask_d, other=0.0).to(tl.float32)
                        B_s = tl.load(B_ptr + col + s, mask=mask_n, other=0.0).to(tl.float32)
                        h_prev = (tl.exp(dt_s[:, None] * A) * h_prev
                                  + (dt_s * u_s)[:, None] * B_s[None, :])
                    u_t = tl.load(u_ptr + row + t, mask=mask_d, other=0.0).to(tl.float32)
                    dt_t = tl.load(delta_ptr + row + t, mask=mask_d, other=0.0).to(tl.float32)
                    B_t = tl.load(B_ptr + col + t, mask=mask_n, other=0.0).to(tl.float32)
                    C_t = tl.load(C_ptr + col + t, mask=mask_n, other=0.0).to(tl.float32)
                    gy_t = tl.load(gy_ptr + row + t, mask=mask_d, other=0.0).to(tl.float32)
                    dA = tl.exp(dt_t[:, None] * A)
                    h = dA * h_prev + (dt_t * u_t)[:, None] * B_t[None, :]
                    g_h = gy_t[:, None] * C_t[None, :] + carry
                    g_dA = g_h * h_prev * dA
                    g_A += g_dA * dt_t[:, None]
                    g_hB = tl.sum(g_h * B_t[None, :], axis=1)  # (BLOCK_D,)
                    tl.store(gdelta_ptr + row + t, tl.sum(g_dA * A, axis=1) + u_t * g_hB,
                             mask=mask_d)
                    tl.store(gu_ptr + row + t, dt_t * g_hB, mask=mask_d)
                    tl.store(gB_ptr + part + t, tl.sum(g_h * (dt_t * u_t)[:, None], axis=0),
                             mask=mask_n)
                    tl.store(gC_ptr + part + t, tl.sum(h * gy_t[:, None], axis=0), mask=mask_n)
                    carry = g_h * dA
    tl.store(gA_ptr + (pid_g * D + offs_d[:, None]) * N + offs_n[None, :], g_A, mask=mask_dn)


def _blocks(n: int) -> tuple[int, int]:
    """(BLOCK_D, BLOCK_N): all N states in one tile, ~2048 fp32 per tile so that the
    backward's half-dozen live tiles fit in the registers of 4 warps."""
    block_n = triton.next_power_of_2(n)
    return TUNING["block_d"] or max(4, min(64, 2048 // block_n)), block_n


class TritonScan(torch.autograd.Function):
    """Core scan y = C·h (see :class:`lvm_pipeline.models.scan.RecomputeScan`) in Triton.

    u, delta: (B, D, L) (delta after bias and softplus); A: (D, N) float32; B, C: (B, N, L).
    Returns y (B, D, L) float32 and, if ``need_last``, the last state (B, D, N) float32 (not
    differentiable; else None). Training never needs it, and at d_model 768 / d_state 128 /
    batch 1024 it is 0.8 GB written per layer per forward.
    """

    @staticmethod
    def forward(ctx, u, delta, A, B, C, need_last):
        u, delta, A, B, C = (t.contiguous() for t in (u, delta, A, B, C))
        batch, dim, length = u.shape
        n = A.shape[1]
        block_d, block_n = _blocks(n)
        n_ckpt = max(0, (length - 1) // CHUNK)
        y = torch.empty(batch, dim, length, device=u.device, dtype=torch.float32)
        last = torch.empty(batch, dim, n, device=u.device, dtype=torch.float32) if need_last else y
        # One dummy element keeps the pointer valid when no checkpoint is needed (L <= CHUNK).
        ckpt = torch.empty(max(1, batch * dim * n_ckpt * n), device=u.device, dtype=torch.float32)
        grid = (batch, triton.cdiv(dim, block_d))
        _scan_fwd_kernel[grid](u, delta, A, B, C, y, last, ckpt, dim, length, n, n_ckpt,
                               CHUNK=CHUNK, BLOCK_D=block_d, BLOCK_N=block_n, STORE_LAST=need_last,
                               num_warps=TUNING["num_warps"])
        ctx.save_for_backward(u, delta, A, B, C, ckpt)
        ctx.n_ckpt = n_ckpt
        if not need_last:
            return y, None
        ctx.mark_non_differentiable(last)
        return y, last

    @staticmethod
    def backward(ctx, g_y, _g_last):
        u, delta, A, B, C, ckpt = ctx.saved_tensors
        batch, dim, length = u.shape
        n = A.shape[1]
        block_d, block_n = _blocks(n)
        n_dblocks = triton.cdiv(dim, block_d)
        groups = max(1, min(batch, triton.cdiv(BWD_PROGRAMS, n_dblocks)))
        batch_per_prog = triton.cdiv(batch, groups)
        groups = triton.cdiv(batch, batch_per_prog)
        f32 = {"device": u.device, "dtype": torch.float32}
        g_u = torch.empty(batch, dim, length, **f32)
        g_delta = torch.empty(batch, dim, length, **f32)
        g_A = torch.empty(groups, dim, n, **f32)
        g_B = torch.empty(batch, n_dblocks, n, length, **f32)
        g_C = torch.empty(batch, n_dblocks, n, length, **f32)
        _scan_bwd_kernel[(n_dblocks, groups)](
            u, delta, A, B, C, g_y.float().contiguous(), ckpt, g_u, g_delta, g_A, g_B, g_C,
            batch, dim, length, n, ctx.n_ckpt, batch_per_prog,
            CHUNK=CHUNK, BLOCK_D=block_d, BLOCK_N=block_n, num_warps=TUNING["num_warps"])
        return (g_u.to(u.dtype), g_delta.to(delta.dtype), g_A.sum(0),
                g_B.sum(1).to(B.dtype), g_C.sum(1).to(C.dtype), None)
