"""FAISS exact inner-product search on CPU against GPU: parity first, then speed.

Writes JSON (args, hardware, versions, timings, parity) to --out before printing a summary.
Without a GPU (faiss-cpu, or no device) it records the CPU figures and ``"gpu": null``.

    python benchmarks/faiss_gpu.py --rows 1000000 --dim 768 --queries 4096 --out faiss_gpu.json
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from pathlib import Path

import faiss
import numpy as np


def unit_vectors(n: int, dim: int, seed: int) -> np.ndarray:
    """(n, dim) float32 rows of norm 1, seeded."""
    x = np.random.default_rng(seed).standard_normal((n, dim), dtype=np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def time_search(index: faiss.Index, queries: np.ndarray, k: int, repeats: int,
                min_seconds: float) -> tuple[list[float], np.ndarray, np.ndarray]:
    """Seconds per repeat (after one warm-up search) and the last result."""
    scores, ids = index.search(queries, k)  # warm-up: GPU kernels, CPU caches
    times: list[float] = []
    start = time.perf_counter()
    while len(times) < repeats or time.perf_counter() - start < min_seconds:
        t0 = time.perf_counter()
        scores, ids = index.search(queries, k)
        times.append(time.perf_counter() - t0)
    return times, scores, ids


def parity(cpu: tuple[np.ndarray, np.ndarray], gpu: tuple[np.ndarray, np.ndarray],
           tol: float = 1e-4) -> dict[str, float]:
    """Share of queries with identical top-k ids, and with identical scores up to ``tol``
    (exact search may order ties differently on the two devices)."""
    (cpu_scores, cpu_ids), (gpu_scores, gpu_ids) = cpu, gpu
    return {"same_ids": float((cpu_ids == gpu_ids).all(axis=1).mean()),
            "same_scores": float((np.abs(cpu_scores - gpu_scores) <= tol).all(axis=1).mean()),
            "max_score_diff": float(np.abs(cpu_scores - gpu_scores).max())}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--dim", type=int, default=384)
    parser.add_argument("--queries", type=int, default=1024)
    parser.add_argument("--k", type=int, default=50)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--min-seconds", type=float, default=2.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path("faiss_gpu.json"))
    args = parser.parse_args()

    base = unit_vectors(args.rows, args.dim, args.seed)
    queries = unit_vectors(args.queries, args.dim, args.seed + 1)
    cpu_index = faiss.IndexFlatIP(args.dim)
    cpu_index.add(base)
    cpu_times, *cpu_result = time_search(cpu_index, queries, args.k, args.repeats,
                                         args.min_seconds)
    n_gpus = faiss.get_num_gpus() if hasattr(faiss, "get_num_gpus") else 0
    record = {
        "args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        "hardware": {"cpu": platform.processor() or platform.machine(), "gpus": n_gpus},
        "versions": {"faiss": faiss.__version__, "numpy": np.__version__},
        "cpu": {"seconds": cpu_times,
                "ms_per_query": 1e3 * statistics.median(cpu_times) / args.queries},
        "gpu": None,
    }
    if n_gpus:
        gpu_index = faiss.index_cpu_to_all_gpus(cpu_index)
        gpu_times, *gpu_result = time_search(gpu_index, queries, args.k, args.repeats,
                                             args.min_seconds)
        record["gpu"] = {"seconds": gpu_times,
                         "ms_per_query": 1e3 * statistics.median(gpu_times) / args.queries,
                         "parity": parity(tuple(cpu_result), tuple(gpu_result))}
    args.out.write_text(json.dumps(record, indent=2))
    print(f"wrote {args.out}")
    print(f"cpu: {record['cpu']['ms_per_query']:.4f} ms/query")
    if record["gpu"]:
        print(f"gpu: {record['gpu']['ms_per_query']:.4f} ms/query, parity {record['gpu']['parity']}")
    else:
        print("gpu: none (faiss has no GPU support here or no device); CPU figures only")


if __name__ == "__main__":
    main()
