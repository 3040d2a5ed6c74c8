"""CPU training speed and memory of the tiny and paper presets: naive scan vs the fast ones.

For every (size, variant, scan backend) one fresh process (spawned, so peaks don't mix)
builds the model, runs warmup steps, then times train steps (harness.time_training) until
``--min-time`` or ``--max-steps``. Memory: the process's peak RSS growth over the case
(Linux VmHWM, model + optimizer + activations) and the bytes autograd saves for backward in one
forward (what the naive scan blows up). Writes JSON (args, machine, timings) first, then prints
a summary with each backend's ratio to the naive ``torch`` scan from the same run.

    python benchmarks/bench_train.py                       # all, ~5-10 min on 2 busy cores
    python benchmarks/bench_train.py --sizes tiny --variants mamba_s
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import time
from pathlib import Path
from typing import Any

from harness import env_info, time_training


def _status_kb(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return -1


def run_case(size: str, variant: str, backend: str, batch: int, threads: int,
             min_time: float, max_steps: int) -> dict[str, Any]:
    """One case in this (fresh) process."""
    import torch

    from lvm_pipeline.models import preset

    torch.set_num_threads(threads)
    rss_start = _status_kb("VmRSS")
    result = time_training(preset(variant, size, d_in=384), backend, batch, "cpu",
                           min_time_s=min_time, max_steps=max_steps, warmup=1)
    return {"size": size, "variant": variant, "threads": threads, **result,
            "peak_rss_growth_mb": (_status_kb("VmHWM") - rss_start) / 1024}


def _child(queue: Any, kwargs: dict[str, Any]) -> None:
    try:
        queue.put(run_case(**kwargs))
    except Exception as err:  # reported in the JSON, the other cases still run
        queue.put({**kwargs, "error": repr(err)})


def summary(results: dict[str, Any]) -> str:
    rows = results["cases"]
    naive = {(r["size"], r["variant"]): r for r in rows
             if r.get("requested_backend", r.get("backend")) == "torch" and "seq_per_s" in r}
    lines = [f"{'size':<6} {'variant':<15} {'backend':<10} {'batch':>5} {'seq/s':>9} "
             f"{'x naive':>8} {'act MB':>8} {'x naive':>8} {'peak MB':>8}"]
    for r in rows:
        if "seq_per_s" not in r:
            lines.append(f"{r['size']:<6} {r['variant']:<15} {r['backend']:<10} "
                         f"{r.get('error', '?')}")
            continue
        base = naive.get((r["size"], r["variant"]))
        speed = f"{r['seq_per_s'] / base['seq_per_s']:.2f}" if base else "-"
        mem = f"{r['activation_bytes'] / base['activation_bytes']:.2f}" if base else "-"
        lines.append(f"{r['size']:<6} {r['variant']:<15} {r['backend']:<10} {r['batch']:>5} "
                     f"{r['seq_per_s']:>9.1f} {speed:>8} {r['activation_bytes'] / 2**20:>8.1f} "
                     f"{mem:>8} {r['peak_rss_growth_mb']:>8.0f}")
    return "\n".join(lines)


def main() -> None:
    from lvm_pipeline.models import SIZES, VARIANTS

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--sizes", default=",".join(SIZES))
    p.add_argument("--variants", default=",".join(VARIANTS))
    p.add_argument("--backends", default="torch,recompute",
                   help="scan backends; 'torch' is the naive baseline")
    p.add_argument("--batch-tiny", type=int, default=256)
    p.add_argument("--batch-paper", type=int, default=64)
    p.add_argument("--threads", type=int, default=1,
                   help="torch threads per case (1 is steadiest on a shared machine)")
    p.add_argument("--min-time", type=float, default=3.0)
    p.add_argument("--max-steps", type=int, default=30)
    p.add_argument("--out", default=str(Path(__file__).parent / "results" / "bench_train.json"))
    args = p.parse_args()

    results: dict[str, Any] = {"args": vars(args), "env": env_info(), "cases": []}
    spawn = mp.get_context("spawn")
    start = time.perf_counter()
    for size in args.sizes.split(","):
        batch = args.batch_tiny if size == "tiny" else args.batch_paper
        for variant in args.variants.split(","):
            for backend in args.backends.split(","):
                kwargs = {"size": size, "variant": variant, "backend": backend, "batch": batch,
                          "threads": args.threads, "min_time": args.min_time,
                          "max_steps": args.max_steps}
                queue = spawn.Queue()
                proc = spawn.Process(target=_child, args=(queue, kwargs))
                proc.start()
                results["cases"].append(queue.get())
                proc.join()
                print(f"[{time.perf_counter() - start:6.0f} s] {size} {variant} {backend}",
                      flush=True)
    results["wall_s"] = time.perf_counter() - start
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2) + "\n")  # JSON first, then the summary
    print(f"wrote {out}\n")
    print(summary(results))
    print(f"\nmachine: {os.cpu_count()} CPUs, load average at start "
          f"{results['env'].get('load_average')}")


if __name__ == "__main__":
    main()
