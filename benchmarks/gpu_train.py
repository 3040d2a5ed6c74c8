"""One prepared GPU run: scan parity on the GPU, then training speed and memory, then the five
``paper`` presets on 396k synthetic sequences. The goals it measures against, on one
H100/H200:

- d_model 768 / 8 layers / d_state 128 / batch 1024, bf16 autocast: >= 50,000 seq/s, <= 10 GB;
- Mamba-S (paper preset) at batch 1024: >= 150,000 seq/s;
- the five paper presets, 20 epochs on 396k sequences: < 15 minutes in total.

Stages, in order of importance, each skipped (and recorded as skipped) when the remaining time
budget (``--budget-s``) is too short: 1) parity of every available scan backend against
``selective_scan_ref`` on the GPU (fp32 and bf16, outputs, last state, gradients); 2) train
speed of the fast backends and the naive scan at both sizes; 3) each paper preset for at most
``--preset-cap-s`` seconds of training, extrapolated to ``--full-epochs`` epochs from the
measured throughput (the JSON says what was measured and what projected); 4) the naive scan
under ``torch.compile``. Results are written after every stage (a timeout keeps what was done)
to ``$OUT/gpu_train.json`` (else ``benchmarks/results/gpu_train.json``); the table is printed last.

Needs only torch (+ triton for the Triton backend) and this checkout; imports nothing from the
package beyond ``lvm_pipeline.models``. CPU check of the whole script: ``--smoke``.

    python benchmarks/gpu_train.py            # on the GPU (about 5-6 minutes)
    python benchmarks/gpu_train.py --smoke    # tiny sizes, CPU or GPU, under a minute
"""

from __future__ import annotations

import argparse
import json
import os
import time
import traceback
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from harness import (
    Budget,
    env_info,
    free,
    make_model,
    model_parity,
    optimizer_for,
    scan_parity,
    time_training,
    train_step,
)

from lvm_pipeline.models import VARIANTS, LVMConfig, preset
from lvm_pipeline.models.scan import resolve_backend

FAST = ("triton", "mamba_ssm", "recompute")
TOLERANCE = {"fp32": 1e-5, "bf16": 2e-2}
# A whole model: bf16 matmuls around the scan amplify rounding differences between backends.
MODEL_TOLERANCE = {"fp32": 1e-4, "bf16": 5e-2}
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}
# (channels per program, warps) tried beside the default launch shape in the speed stage.
TRITON_SHAPES = [(8, 4), (16, 8), (32, 8)]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--smoke", action="store_true", help="tiny sizes: check the script runs")
    p.add_argument("--budget-s", type=float, default=330.0,
                   help="stop starting new stages after this many seconds")
    p.add_argument("--batch", type=int, default=1024, help="batch of the speed stage")
    p.add_argument("--preset-batch", type=int, default=1024, help="batch of the preset stage")
    p.add_argument("--preset-sequences", type=int, default=396_000,
                   help="training sequences per epoch (the reference's 396k)")
    p.add_argument("--preset-cap-s", type=float, default=10.0,
                   help="seconds of measured training per preset (then extrapolated)")
    p.add_argument("--full-epochs", type=int, default=20, help="epochs the projection is for")
    p.add_argument("--val-ratio", type=float, default=0.125,
                   help="val windows per training window (80/10/10 article split), forward only")
    p.add_argument("--no-compile", action="store_true", help="skip the torch.compile stage")
    p.add_argument("--out", help="result folder (default $OUT, else benchmarks/results)")
    return p.parse_args(argv)


def speed_cases(smoke: bool) -> dict[str, tuple[LVMConfig, dict[str, float]]]:
    """name → (config, goals). Inputs are 768-d (GTR-T5), as in the reference measurements."""
    if smoke:
        return {"mamba_s_tiny": (preset("mamba_s", "tiny", d_in=32), {})}
    return {"d768_l8_n128": (LVMConfig("mamba_s", "paper", ("mamba",) * 8, d_model=768,
                                       d_state=128, d_in=768),
                             {"seq_per_s": 50_000, "peak_gb": 10.0}),
            "mamba_s_paper": (preset("mamba_s", "paper", d_in=768), {"seq_per_s": 150_000})}


# --------------------------------------------------------------------------- stages


def stage_parity(device: str, smoke: bool) -> list[dict[str, Any]]:
    torch.backends.cuda.matmul.allow_tf32 = False  # the reference must be full fp32
    shapes = [(2, 6, 5, 4), (3, 19, 20, 5)] if smoke else [
        (4, 64, 5, 16), (3, 40, 37, 24), (8, 192, 5, 128), (2, 96, 5, 192)]
    rows = []
    for backend in ("torch", *FAST):
        try:
            resolve_backend(backend, device)
        except (ImportError, ValueError) as err:
            rows.append({"backend": backend, "available": False, "reason": str(err)})
            continue
        for shape in shapes:
            for name, dtype in DTYPES.items():
                row: dict[str, Any] = {"backend": backend, "available": True,
                                       "shape_BDLN": list(shape), "dtype": name}
                try:
                    errors = scan_parity(backend, device, shape, dtype)
                    row |= {"max_rel_err": max(errors.values()), "errors": errors,
                            "passed": max(errors.values()) < TOLERANCE[name]}
                except Exception as err:  # recorded; the other stages still run
                    row |= {"passed": False, "error": repr(err),
                            "traceback": traceback.format_exc(limit=4)}
                rows.append(row)
        # The whole model under the training autocast, against the naive scan: catches what
        # the scan-level check cannot (dtypes, autocast, gradient casts).
        config = preset("mamba_s", "tiny" if smoke else "paper", d_in=32 if smoke else 768)
        dtype = "bf16" if device == "cuda" else "fp32"
        row = {"backend": backend, "available": True, "model": config.variant,
               "dtype": f"model+{dtype}"}
        try:
            errors = model_parity(backend, config, 16 if smoke else 256, device)
            row |= {"max_rel_err": max(errors.values()), "errors": errors,
                    "passed": max(errors.values()) < MODEL_TOLERANCE[dtype]}
        except Exception as err:
            row |= {"passed": False, "error": repr(err),
                    "traceback": traceback.format_exc(limit=4)}
        rows.append(row)
    return rows


def stage_speed(device: str, args: argparse.Namespace, budget: Budget, compiled: bool,
                parity_failed: set[str]) -> list[dict[str, Any]]:
    batch = 32 if args.smoke else args.batch
    modes = ["torch"] if compiled else [*FAST, "torch"]
    rows = []
    for case, (config, goals) in speed_cases(args.smoke).items():
        for backend in modes:
            row: dict[str, Any] = {"case": case, "config": config.to_dict(), "goals": goals,
                                   "mode": f"{backend}{'+compile' if compiled else ''}"}
            needed = 90.0 if compiled else 20.0
            try:
                resolve_backend(backend, device)
            except (ImportError, ValueError) as err:
                rows.append(row | {"skipped": f"unavailable: {err}"})
                continue
            if backend in parity_failed:
                rows.append(row | {"skipped": "failed the parity stage"})
                continue
            if not budget.allows(needed):
                rows.append(row | {"skipped": f"time budget ({budget.elapsed():.0f} s used)"})
                continue
            try:
                row |= time_training(config, backend, batch, device, compile_model=compiled,
                                     min_time_s=0.5 if args.smoke else 3.0,
                                     max_steps=5 if args.smoke else 60,
                                     measure_activations=False)
                row["goals_met"] = {k: (row[k] >= v if k == "seq_per_s" else row[k] <= v)
                                    for k, v in goals.items() if k in row}
            except torch.cuda.OutOfMemoryError as err:
                row |= {"error": "out of GPU memory", "detail": str(err)[:300]}
            except Exception as err:
                row |= {"error": repr(err), "traceback": traceback.format_exc(limit=4)}
            free(device)
            rows.append(row)
        if case == "d768_l8_n128" and not compiled and "triton" not in parity_failed:
            rows += tune_triton(case, config, goals, batch, device, budget)
    return rows


def tune_triton(case: str, config: LVMConfig, goals: dict[str, float], batch: int,
                device: str, budget: Budget) -> list[dict[str, Any]]:
    """The Triton kernels at other launch shapes (channels per program, warps): data for
    tuning scan_triton._blocks; the default shape is the plain "triton" row."""
    try:
        resolve_backend("triton", device)
        from lvm_pipeline.models import scan_triton
    except (ImportError, ValueError):
        return []  # the plain "triton" row already says why
    rows = []
    for block_d, warps in TRITON_SHAPES:
        row: dict[str, Any] = {"case": case, "config": config.to_dict(), "goals": goals,
                               "mode": f"triton(bd={block_d},w={warps})"}
        if not budget.allows(15.0):
            rows.append(row | {"skipped": f"time budget ({budget.elapsed():.0f} s used)"})
            continue
        scan_triton.TUNING.update(block_d=block_d, num_warps=warps)
        try:
            row |= time_training(config, "triton", batch, device, min_time_s=2.0,
                                 max_steps=40, measure_activations=False)
            row["goals_met"] = {k: (row[k] >= v if k == "seq_per_s" else row[k] <= v)
                                for k, v in goals.items() if k in row}
        except Exception as err:
            row |= {"error": repr(err)[:300]}
        finally:
            scan_triton.TUNING.update(block_d=None, num_warps=4)
        free(device)
        rows.append(row)
    return rows


def _windows(n_rows: int, n: int, device: str, seed: int) -> torch.Tensor:
    """(n, 6) payload rows of synthetic windows: 5 context rows, then the target."""
    g = torch.Generator(device=device).manual_seed(seed)
    start = torch.randint(0, n_rows - 6, (n,), generator=g, device=device)
    return start[:, None] + torch.arange(6, device=device)


def time_preset(variant: str, backend: str, args: argparse.Namespace, device: str
                ) -> dict[str, Any]:
    """Train one preset on synthetic windows for at most --preset-cap-s; measure throughput
    of training and of the val pass; project --full-epochs epochs of --preset-sequences."""
    size = "tiny" if args.smoke else "paper"
    n_train = 256 if args.smoke else args.preset_sequences
    batch = 32 if args.smoke else args.preset_batch
    cap = 0.5 if args.smoke else args.preset_cap_s
    d_in = 32 if args.smoke else 768
    config = preset(variant, size, d_in=d_in)
    model, net = make_model(config, backend, device)
    optimizer = optimizer_for(model)
    g = torch.Generator(device=device).manual_seed(0)
    vectors = F.normalize(torch.randn(n_train + 6, d_in, generator=g, device=device), dim=-1)
    windows = _windows(len(vectors), n_train, device, seed=1)
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    # Warmup (kernel compilation, allocator): one step, not counted.
    start = time.perf_counter()
    rows = vectors[windows[:batch]]  # (B, 6, d_in)
    train_step(net, model, optimizer, rows[:, :5], rows[:, 5], device)
    if device == "cuda":
        torch.cuda.synchronize()
    warmup_s = time.perf_counter() - start
    seen, start = 0, time.perf_counter()
    order = torch.randperm(n_train, generator=g, device=device)
    for lo in range(0, n_train - batch + 1, batch):  # drop_last, as training does
        rows = vectors[windows[order[lo:lo + batch]]]  # (B, 6, d_in)
        loss = train_step(net, model, optimizer, rows[:, :5], rows[:, 5], device)
        seen += batch
        if time.perf_counter() - start > cap:
            break
    float(loss)  # sync
    train_s = time.perf_counter() - start
    model.eval()
    n_val, val_start = 0, time.perf_counter()
    with torch.no_grad(), (torch.autocast("cuda", dtype=torch.bfloat16) if device == "cuda"
                           else torch.autocast("cpu", enabled=False)):
        for lo in range(0, min(n_train, seen), 4 * batch):
            rows = vectors[windows[lo:lo + 4 * batch]]
            net(rows[:, :5]).float().sum().item()
            n_val += len(rows)
            if time.perf_counter() - val_start > cap / 4:
                break
    val_s = time.perf_counter() - val_start
    train_rate, val_rate = seen / train_s, n_val / val_s
    epoch_s = n_train / train_rate + args.val_ratio * n_train / val_rate
    out = {"variant": variant, "size": size, "backend": backend,
           "n_params": model.num_params(), "batch": batch, "sequences_per_epoch": n_train,
           "measured_train_sequences": seen, "measured_train_s": train_s,
           "measured_val_sequences": n_val, "measured_val_s": val_s, "warmup_s": warmup_s,
           "train_seq_per_s": train_rate, "val_seq_per_s": val_rate,
           "projected_epoch_s": epoch_s,
           "projected_full_s": warmup_s + args.full_epochs * epoch_s,
           "full_epochs": args.full_epochs, "final_loss": float(loss.detach())}
    if device == "cuda":
        out["peak_gb"] = torch.cuda.max_memory_allocated() / 2**30
    del model, net, optimizer, vectors, windows
    return out


def best_backend(device: str, parity_failed: set[str]) -> str:
    """What ``auto`` would pick, minus backends that failed parity on this machine."""
    for backend in FAST:
        try:
            resolve_backend(backend, device)
        except (ImportError, ValueError):
            continue
        if backend not in parity_failed:
            return backend
    return "torch"


def stage_presets(device: str, args: argparse.Namespace, budget: Budget,
                  parity_failed: set[str]) -> list[dict[str, Any]]:
    backend = best_backend(device, parity_failed)
    rows = []
    for variant in VARIANTS:
        needed = (4.0 if args.smoke else args.preset_cap_s * 1.5 + 10)
        if not budget.allows(needed):
            rows.append({"variant": variant, "skipped": f"time budget "
                                                        f"({budget.elapsed():.0f} s used)"})
            continue
        try:
            rows.append(time_preset(variant, backend, args, device))
        except Exception as err:
            rows.append({"variant": variant, "error": repr(err),
                         "traceback": traceback.format_exc(limit=4)})
        free(device)
    return rows


# --------------------------------------------------------------------------- report


def table(results: dict[str, Any]) -> str:
    env = results["env"]
    lines = [f"device: {env.get('gpu', 'cpu')} | torch {env['torch']} | triton {env['triton']}",
             "", "parity vs selective_scan_ref (max relative error over y, last state, grads):"]
    by_backend: dict[str, list[dict[str, Any]]] = {}
    for row in results["parity"]:
        by_backend.setdefault(row["backend"], []).append(row)
    for backend, rows in by_backend.items():
        if not rows[0]["available"]:
            lines.append(f"  {backend:<10} unavailable: {rows[0]['reason'][:90]}")
            continue
        parts = []
        for dtype in [*DTYPES, *sorted({r["dtype"] for r in rows if r["dtype"].startswith("model")})]:
            errs = [r.get("max_rel_err", float("inf")) for r in rows if r["dtype"] == dtype]
            ok = all(r["passed"] for r in rows if r["dtype"] == dtype)
            parts.append(f"{dtype} {max(errs):.1e} ({'pass' if ok else 'FAIL'})")
        lines.append(f"  {backend:<10} " + ", ".join(parts))
    lines += ["", f"{'training speed':<16} {'mode':<16} {'seq/s':>10} {'ms/step':>9} "
                  f"{'peak GB':>8}  goals"]
    for row in results["speed"] + results["speed_compiled"]:
        if "seq_per_s" not in row:
            reason = row.get("skipped") or row.get("error", "?")
            lines.append(f"{row['case']:<16} {row['mode']:<16} {reason[:60]}")
            continue
        goals = " ".join(f"{k}:{'met' if v else 'MISSED'}" for k, v in row["goals_met"].items())
        lines.append(f"{row['case']:<16} {row['mode']:<16} {row['seq_per_s']:>10,.0f} "
                     f"{row['ms_per_step']:>9.1f} {row.get('peak_gb', float('nan')):>8.2f}  "
                     f"{goals}")
    lines += ["", f"{'preset':<16} {'backend':<10} {'train seq/s':>11} {'epoch s':>8} "
                  f"{'measured':>12} {'projected':>10}"]
    total = 0.0
    for row in results["presets"]:
        if "projected_full_s" not in row:
            lines.append(f"{row['variant']:<16} {(row.get('skipped') or row.get('error'))[:70]}")
            total = float("nan")
            continue
        total += row["projected_full_s"]
        lines.append(f"{row['variant']:<16} {row['backend']:<10} {row['train_seq_per_s']:>11,.0f} "
                     f"{row['projected_epoch_s']:>8.1f} "
                     f"{row['measured_train_sequences']:>8,} seq "
                     f"{row['projected_full_s'] / 60:>7.1f} min")
    if results["presets"]:
        epochs = results["args"]["full_epochs"]
        lines.append(f"five presets, {epochs} epochs (projected from the measured part): "
                     f"{total / 60:.1f} min (goal < 15 min)")
    lines.append(f"wall time of this script: {results['wall_s']:.0f} s")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    budget = Budget(args.budget_s)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cpu" and not args.smoke:
        raise SystemExit("gpu_train.py: no CUDA GPU; use --smoke for a CPU check of the script")
    if device == "cpu":
        torch.set_num_threads(1)  # a CPU smoke run checks the script, not the speed
    out_dir = Path(args.out or os.environ.get("OUT") or Path(__file__).parent / "results")
    out_dir.mkdir(parents=True, exist_ok=True)
    out_file = out_dir / ("gpu_train_smoke.json" if args.smoke else "gpu_train.json")
    results: dict[str, Any] = {"args": vars(args), "env": env_info(), "parity": [],
                               "speed": [], "presets": [], "speed_compiled": [], "wall_s": 0.0}

    def save(stage: str) -> None:
        results["wall_s"] = budget.elapsed()
        results["completed_stages"] = [*results.get("completed_stages", []), stage]
        out_file.write_text(json.dumps(results, indent=2, default=str) + "\n")
        print(f"[{budget.elapsed():6.1f} s] {stage} done -> {out_file}", flush=True)

    results["parity"] = stage_parity(device, args.smoke)
    save("parity")
    failed = {r["backend"] for r in results["parity"] if r["available"] and not r["passed"]}
    results["speed"] = stage_speed(device, args, budget, compiled=False, parity_failed=failed)
    save("speed")
    results["presets"] = stage_presets(device, args, budget, failed)
    save("presets")
    if not args.no_compile:
        results["speed_compiled"] = stage_speed(device, args, budget, compiled=True,
                                                parity_failed=failed)
        save("speed_compiled")
    print(table(results))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
