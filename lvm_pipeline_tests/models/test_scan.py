"""The fast scans against ``selective_scan_ref``: outputs, last state and gradients.

``recompute`` runs on the CPU; ``triton`` runs on a CUDA GPU where there is one, else in Triton's
CPU interpreter (``TRITON_INTERPRET=1``), and is skipped, saying why, where triton is absent.
Tolerances follow the dtype: float32 relative error < 1e-5; bfloat16 inputs are compared in
bfloat16, whose rounding alone is ~4e-3.
"""

from __future__ import annotations

import pytest
import torch

from lvm_pipeline.models import LVM, preset
from lvm_pipeline.models import scan as scan_mod
from lvm_pipeline.models.scan import (
    resolve_backend,
    selective_scan,
    selective_scan_ref,
    triton_interpreted,
)

TOLERANCE = {torch.float32: 1e-5, torch.bfloat16: 2e-2}
# (batch, D, L, N): odd sizes catch masking; L = 20 spans two 16-step recompute segments.
SHAPES = [(2, 6, 5, 4), (3, 19, 20, 5), (2, 8, 1, 16)]


def _inputs(shape, dtype, device, seed=0):
    batch, dim, length, n = shape
    g = torch.Generator().manual_seed(seed)

    def r(*size):
        return torch.randn(*size, generator=g)

    # As in the model: activations in the autocast dtype, A, D and the dt bias in float32.
    inputs = {"u": r(batch, dim, length).to(dtype), "delta": r(batch, dim, length).to(dtype),
              "A": -torch.rand(dim, n, generator=g) * 2, "B": r(batch, n, length).to(dtype),
              "C": r(batch, n, length).to(dtype), "D": r(dim),
              "z": r(batch, dim, length).to(dtype), "delta_bias": r(dim)}
    return {k: v.to(device) for k, v in inputs.items()}


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.detach().double(), b.detach().double()
    return float((a - b).norm() / b.norm().clamp_min(1e-30))


def assert_matches_ref(backend: str, shape, dtype, device: str) -> None:
    inputs = _inputs(shape, dtype, device)
    fast = {k: v.clone().requires_grad_(True) for k, v in inputs.items()}
    ref = {k: v.clone().requires_grad_(True) for k, v in inputs.items()}
    y, last = selective_scan(**fast, delta_softplus=True, backend=backend, return_last_state=True)
    y_ref, last_ref = selective_scan_ref(**ref, delta_softplus=True, return_last_state=True)
    assert y.dtype == y_ref.dtype == dtype and y.shape == y_ref.shape
    grad = torch.randn(y_ref.shape, generator=torch.Generator().manual_seed(9)).to(y.device, dtype)
    (y.float() * grad.float()).sum().backward()
    (y_ref.float() * grad.float()).sum().backward()
    errors = {"y": _rel(y, y_ref), "last_state": _rel(last, last_ref)}
    errors |= {f"grad_{k}": _rel(fast[k].grad, ref[k].grad) for k in inputs
               if ref[k].grad.abs().max() > 0}  # grad A is exactly 0 when L = 1
    print(f"{backend} {shape} {dtype}: max rel err {max(errors.values()):.2e} "
          + " ".join(f"{k}={v:.1e}" for k, v in errors.items()))
    tol = TOLERANCE[dtype]
    bad = {k: v for k, v in errors.items() if not v < tol}
    assert not bad, f"relative error above {tol}: {bad}"


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
def test_recompute_scan_matches_reference(shape, dtype, monkeypatch):
    # A small chunk budget makes the backward walk several channel chunks.
    monkeypatch.setattr(scan_mod, "RECOMPUTE_CHUNK_ELEMENTS", 64)
    assert_matches_ref("recompute", shape, dtype, "cpu")


@pytest.fixture
def triton_device() -> str:
    """CUDA when present, else Triton's interpreter on the CPU (conftest sets TRITON_INTERPRET
    before anything imports triton: ``@triton.jit`` reads it when it decorates)."""
    pytest.importorskip("triton", reason="triton is not installed: pip install triton "
                                         "(CUDA builds of torch ship it)")
    if torch.cuda.is_available():
        return "cuda"
    if not triton_interpreted():
        pytest.skip("no CUDA GPU, and TRITON_INTERPRET was not set before triton was imported")
    return "cpu"


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
def test_triton_scan_matches_reference(shape, dtype, triton_device):
    assert_matches_ref("triton", shape, dtype, triton_device)


def test_triton_backward_walks_several_sequences_per_program(triton_device, monkeypatch):
    from lvm_pipeline.models import scan_triton

    # 2 programs for 3 sequences: one walks two, the other one and a masked-out slot.
    monkeypatch.setattr(scan_triton, "BWD_PROGRAMS", 2)
    assert_matches_ref("triton", (3, 19, 20, 5), torch.float32, triton_device)


def test_triton_skips_the_last_state_unless_asked_with_the_same_results(triton_device):
    """Training never asks for the last state, so the kernel does not write it (0.8 GB per
    layer at the reference size); output and gradients must not depend on that."""
    inputs = _inputs((2, 6, 5, 4), torch.float32, triton_device)
    runs = []
    for want_last in (True, False):
        x = {k: v.clone().requires_grad_(True) for k, v in inputs.items()}
        out = selective_scan(**x, delta_softplus=True, backend="triton",
                             return_last_state=want_last)
        y = out[0] if want_last else out
        y.square().sum().backward()
        runs.append((y, {k: v.grad for k, v in x.items()}))
    (y_last, g_last), (y, g) = runs
    torch.testing.assert_close(y, y_last, rtol=0, atol=0)
    for k in g:
        torch.testing.assert_close(g[k], g_last[k], rtol=0, atol=0)


@pytest.mark.parametrize("backend", ["torch", "recompute"])
def test_scan_stays_float32_under_bf16_autocast(backend):
    inputs = _inputs((2, 8, 5, 4), torch.float32, "cpu")
    plain = selective_scan(**inputs, delta_softplus=True, backend=backend)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        autocast = selective_scan(**inputs, delta_softplus=True, backend=backend)
    assert autocast.dtype == torch.float32
    torch.testing.assert_close(autocast, plain, rtol=1e-6, atol=1e-7)


def _saved_bytes(backend: str) -> int:
    """Bytes autograd keeps for backward across one scan call."""
    inputs = {k: v.requires_grad_(True) for k, v in _inputs((4, 32, 5, 64), torch.float32,
                                                            "cpu").items()}
    saved: list[int] = []

    def pack(t: torch.Tensor) -> torch.Tensor:
        saved.append(t.numel() * t.element_size())
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        selective_scan(**inputs, delta_softplus=True, backend=backend)
    return sum(saved)


def test_recompute_keeps_no_per_step_state_for_backward():
    batch, dim, length, n = 4, 32, 5, 64
    states = batch * dim * length * n * 4  # every step's (B, D, N) state, float32
    naive, recompute = _saved_bytes("torch"), _saved_bytes("recompute")
    print(f"saved for backward: torch {naive} B, recompute {recompute} B, states {states} B")
    assert naive >= states  # the naive loop's memory problem
    # Only O(B·D·L) inputs and elementwise terms (plus A, B, C) remain.
    assert recompute < states / 4


def test_backends_are_interchangeable_on_one_checkpoint():
    torch.manual_seed(0)
    a = LVM(preset("mamba_h", "tiny", d_in=24, scan_backend="torch"))
    b = LVM(preset("mamba_h", "tiny", d_in=24, scan_backend="recompute"))
    assert a.state_dict().keys() == b.state_dict().keys()
    b.load_state_dict(a.state_dict(), strict=True)
    x = torch.randn(3, 5, 24)
    ya, yb = a(x), b(x)
    torch.testing.assert_close(ya, yb, rtol=1e-5, atol=1e-6)
    ya.sum().backward()
    yb.sum().backward()
    for (name, pa), pb in zip(a.named_parameters(), b.parameters(), strict=True):
        torch.testing.assert_close(pa.grad, pb.grad, rtol=1e-4, atol=1e-6, msg=name)


def test_auto_picks_recompute_on_cpu_and_named_backends_never_fall_back(monkeypatch):
    assert resolve_backend("auto", "cpu") == "recompute"
    assert resolve_backend("recompute", "cpu") == "recompute"
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    with pytest.raises((ImportError, ValueError), match="triton"):
        resolve_backend("triton", "cpu")
    with pytest.raises(ValueError, match="unknown scan backend 'fast'; valid: auto, ref, torch"):
        resolve_backend("fast", "cpu")


def test_auto_prefers_fused_kernels_on_cuda(monkeypatch):
    available = {"mamba_ssm": None, "triton": None}
    monkeypatch.setattr(scan_mod, "_import_error", lambda m: available[m])
    assert resolve_backend("auto", "cuda") == "mamba_ssm"
    available["mamba_ssm"] = "ImportError: no module"
    assert resolve_backend("auto", "cuda") == "triton"
    available["triton"] = "ImportError: no module"
    assert resolve_backend("auto", "cuda") == "recompute"
    with pytest.raises(ImportError, match=r"pip install triton"):
        resolve_backend("triton", "cuda")
