"""Timing and parity helpers shared by bench_train.py and gpu_train.py.

Imports only torch and ``lvm_pipeline.models`` (no numpy, pandas, faiss or Dagster), so it runs
on a bare GPU image that has torch and triton and a checkout of this repository.

A train step here is the product's step (models/lvm.py forward, InfoNCE over the batch, AdamW
with no decay on norms/biases/A_log/D, grad clip 1.0, bf16 autocast on CUDA) on synthetic
unit vectors already on the device, so the timings measure the model, not data loading.
"""

from __future__ import annotations

import contextlib
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # run as `python benchmarks/x.py` from a bare checkout
    sys.path.insert(0, str(REPO))

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from lvm_pipeline.models import LVM, LVMConfig  # noqa: E402
from lvm_pipeline.models.mamba import use_scan_backend  # noqa: E402
from lvm_pipeline.models.scan import resolve_backend, selective_scan, selective_scan_ref  # noqa: E402

CONTEXT = 5  # chunks per window, as in the product


class Budget:
    """Wall-clock budget of a prepared GPU run: late stages are skipped rather than overrun."""

    def __init__(self, seconds: float) -> None:
        self.start, self.seconds = time.perf_counter(), seconds

    def elapsed(self) -> float:
        return time.perf_counter() - self.start

    def allows(self, needed_s: float) -> bool:
        return self.elapsed() + needed_s <= self.seconds


def env_info() -> dict[str, Any]:
    """Hardware and versions, written first into every result file."""
    info: dict[str, Any] = {
        "python": platform.python_version(), "torch": torch.__version__,
        "platform": platform.platform(), "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "cuda": torch.cuda.is_available(),
    }
    with contextlib.suppress(OSError):
        info["load_average"] = os.getloadavg()
    try:
        import triton

        info["triton"] = triton.__version__
    except ImportError as err:
        info["triton"] = f"not importable: {err}"
    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        info |= {"gpu": props.name, "gpu_memory_gb": round(props.total_memory / 2**30, 1),
                 "cuda_version": torch.version.cuda}
    return info


# --------------------------------------------------------------------------- parity


def scan_parity(backend: str, device: str, shape: tuple[int, int, int, int],
                dtype: torch.dtype, seed: int = 0) -> dict[str, float]:
    """Relative errors of ``backend`` against selective_scan_ref: y, last state, every grad."""
    batch, dim, length, n = shape
    g = torch.Generator().manual_seed(seed)

    def r(*size: int) -> torch.Tensor:
        return torch.randn(*size, generator=g)

    inputs = {"u": r(batch, dim, length).to(dtype), "delta": r(batch, dim, length).to(dtype),
              "A": -torch.rand(dim, n, generator=g) * 2, "B": r(batch, n, length).to(dtype),
              "C": r(batch, n, length).to(dtype), "D": r(dim),
              "z": r(batch, dim, length).to(dtype), "delta_bias": r(dim)}
    inputs = {k: v.to(device) for k, v in inputs.items()}
    fast = {k: v.clone().requires_grad_(True) for k, v in inputs.items()}
    ref = {k: v.clone().requires_grad_(True) for k, v in inputs.items()}
    y, last = selective_scan(**fast, delta_softplus=True, backend=backend, return_last_state=True)
    y_ref, last_ref = selective_scan_ref(**ref, delta_softplus=True, return_last_state=True)
    grad = torch.randn(y_ref.shape, generator=g).to(device)
    (y.float() * grad).sum().backward()
    (y_ref.float() * grad).sum().backward()

    def rel(a: torch.Tensor, b: torch.Tensor) -> float:
        a, b = a.detach().double(), b.detach().double()
        return float((a - b).norm() / b.norm().clamp_min(1e-30))

    errors = {"y": rel(y, y_ref), "last_state": rel(last, last_ref)}
    errors |= {f"grad_{k}": rel(fast[k].grad, ref[k].grad) for k in inputs
               if ref[k].grad.abs().max() > 0}
    return errors


def model_parity(backend: str, config: LVMConfig, batch: int, device: str) -> dict[str, float]:
    """One LVM, same weights, ``backend`` against the naive ``torch`` scan under the training
    autocast: relative error of the predictions and of the full gradient vector."""
    context, target = synthetic_batch(batch, config.d_in, device)
    outputs = {}
    for name in ("torch", backend):
        model, _ = make_model(config, name, device)  # seeded: identical weights
        autocast = (torch.autocast("cuda", dtype=torch.bfloat16) if device == "cuda"
                    else contextlib.nullcontext())
        with autocast:
            pred = model(context)
        (pred.float() * target).sum().backward()
        grads = torch.cat([p.grad.flatten() for p in model.parameters()])
        outputs[name] = (pred.detach().float(), grads)
    (p0, g0), (p1, g1) = outputs["torch"], outputs[backend]
    return {"pred": float((p1 - p0).norm() / p0.norm()), "grads": float((g1 - g0).norm() / g0.norm())}


# --------------------------------------------------------------------------- training


def optimizer_for(model: LVM) -> torch.optim.Optimizer:
    """AdamW as training.py builds it (no decay on 1-d params, A_log and D)."""
    decay = [p for p in model.parameters()
             if p.dim() >= 2 and not getattr(p, "_no_weight_decay", False)]
    no_decay = [p for p in model.parameters()
                if p.dim() < 2 or getattr(p, "_no_weight_decay", False)]
    # foreach=True: one fused launch per group instead of one per tensor (CUDA).
    return torch.optim.AdamW([{"params": decay, "weight_decay": 1e-4},
                              {"params": no_decay, "weight_decay": 0.0}], lr=1e-3,
                             foreach=True)


def synthetic_batch(batch: int, d_in: int, device: str, seed: int = 0
                    ) -> tuple[torch.Tensor, torch.Tensor]:
    """context (B, 5, d_in), target (B, d_in): unit vectors, as payload rows are."""
    g = torch.Generator(device=device).manual_seed(seed)
    context = F.normalize(torch.randn(batch, CONTEXT, d_in, generator=g, device=device), dim=-1)
    target = F.normalize(torch.randn(batch, d_in, generator=g, device=device), dim=-1)
    return context, target


def make_model(config: LVMConfig, backend: str, device: str, compile_model: bool = False
               ) -> tuple[LVM, torch.nn.Module]:
    """The model with ``backend`` resolved for ``device`` (raises if it cannot run there),
    and the module to call (compiled or not)."""
    torch.manual_seed(0)
    model = LVM(config)
    use_scan_backend(model, resolve_backend(backend, device))
    model.to(device)
    return model, (torch.compile(model) if compile_model else model)


def train_step(net: torch.nn.Module, model: LVM, optimizer: torch.optim.Optimizer,
               context: torch.Tensor, target: torch.Tensor, device: str) -> torch.Tensor:
    """One optimizer step; returns the loss (not synced)."""
    autocast = (torch.autocast("cuda", dtype=torch.bfloat16) if device == "cuda"
                else contextlib.nullcontext())
    with autocast:
        pred = net(context)
    logits = pred.float() @ target.t() / 0.05  # InfoNCE, in-batch negatives
    loss = F.cross_entropy(logits, torch.arange(len(pred), device=pred.device))
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    optimizer.step()
    return loss


def _sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def time_training(config: LVMConfig, backend: str, batch: int, device: str,
                  compile_model: bool = False, warmup: int = 2, min_time_s: float = 2.0,
                  max_steps: int = 50, min_steps: int = 3,
                  measure_activations: bool = True) -> dict[str, Any]:
    """Train steps per second on one fixed batch: warmup (compilation included, timed
    separately), then steps until ``min_time_s`` or ``max_steps``. CUDA peak memory is the
    allocator's peak over the timed steps, with the model and optimizer state included."""
    model, net = make_model(config, backend, device, compile_model)
    optimizer = optimizer_for(model)
    context, target = synthetic_batch(batch, config.d_in, device)
    if device == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    for _ in range(warmup):
        train_step(net, model, optimizer, context, target, device)
    _sync(device)
    warmup_s = time.perf_counter() - start
    steps, start = 0, time.perf_counter()
    while steps < min_steps or (steps < max_steps and time.perf_counter() - start < min_time_s):
        loss = train_step(net, model, optimizer, context, target, device)
        steps += 1
    _sync(device)
    seconds = time.perf_counter() - start
    result = {"backend": resolve_backend(backend, device), "requested_backend": backend,
              "compiled": compile_model, "batch": batch, "steps": steps, "seconds": seconds,
              "warmup_s": warmup_s, "seq_per_s": steps * batch / seconds,
              "ms_per_step": 1000 * seconds / steps, "n_params": model.num_params(),
              "final_loss": float(loss.detach())}
    if measure_activations:
        result["activation_bytes"] = activation_bytes(model, context, device)
    if device == "cuda":
        result["peak_gb"] = torch.cuda.max_memory_allocated() / 2**30
    return result


def activation_bytes(model: LVM, context: torch.Tensor, device: str) -> int:
    """Bytes autograd keeps for backward over one forward (distinct storages): the memory
    that grows with the batch, and what the recompute scans cut."""
    seen: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        with contextlib.suppress(RuntimeError, NotImplementedError):  # e.g. tensor subclasses
            storage = t.untyped_storage()
            seen[storage.data_ptr()] = storage.nbytes()
        return t

    autocast = (torch.autocast("cuda", dtype=torch.bfloat16) if device == "cuda"
                else contextlib.nullcontext())
    params = {p.untyped_storage().data_ptr() for p in model.parameters()}
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t), autocast:
        model(context)
    return sum(size for ptr, size in seen.items() if ptr not in params)


def free(device: str) -> None:
    """Drop cached blocks between cases so each peak is its own."""
    import gc

    gc.collect()
    if device == "cuda":
        torch.cuda.empty_cache()
