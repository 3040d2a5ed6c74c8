"""CPU embedding speed: ``Embedder.encode`` (fixed-shape passes) against fixed-order
``encode_ref`` and against the batching it replaced.

Three paths, in this process, on the same texts with the default embedder:

- ``encode_ref``: plain fixed-order batches of 32, each padded to its longest text (the
  baseline; the product's path should embed >= 2x its texts/s on two CPU cores);
- ``previous``: the batching the product used before fixed-shape passes (texts sorted by
  token length, batches of one length each of <= 8,192 tokens and <= 512 texts, nothing
  padded), kept here for the before/after ratio: faster, but a text's vector depended on the
  size of its batch, which an embedding cache cannot have;
- ``encode``: the product (``batch_size`` texts per pass, each padded to its canonical length).

The texts are real chunks of the offline sample corpus (the default run's corpus, chunked by
the product's chunker), a seeded sample kept in corpus order, so the baseline batches what a
run would feed it. Tokenization is inside every timing (``encode`` and ``previous`` tokenize
once more to plan their batches).

Warmup, then ``--repeats`` alternating rounds (ref, previous, encode, ref, ...); the best round
of each counts (the least disturbed by other jobs on a shared machine), and every round is in
the JSON. The vectors must agree: max abs difference and min cosine of ``encode`` against
``encode_ref`` are reported.

    python benchmarks/bench_embed.py                  # 800 texts, 3 rounds (~2 min on 2 cores)
    python benchmarks/bench_embed.py --smoke          # 24 texts, 1 round (a test runs it)
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
from results_file import write_results

# `python benchmarks/bench_embed.py` puts benchmarks/ first on sys.path; the package beside it
# (this checkout's, not another editable install) must win.
sys.path.insert(1, str(Path(__file__).resolve().parents[1]))

OUT_DIR = Path(__file__).parent / "results"


def sample_texts(n: int, seed: int, pool_chunks: int) -> list[str]:
    """``n`` chunk texts of the sample corpus, seeded, in corpus order."""
    from lvm_pipeline.corpus import CorpusConfig, build_corpus

    texts = build_corpus(CorpusConfig(max_chunks=pool_chunks)).chunks["text"].tolist()
    if n >= len(texts):
        return texts
    keep = np.sort(np.random.default_rng(seed).choice(len(texts), size=n, replace=False))
    return [texts[i] for i in keep]


def previous_scheme(embedder: Any, texts: list[str], max_tokens: int = 8192,
                    max_texts: int = 512) -> np.ndarray:
    """``texts`` → (N, D) float32 unit rows through the batching that fixed-shape passes
    replaced: sorted by token length, cut into batches of one length each (nothing padded) of
    <= ``max_tokens`` tokens and <= ``max_texts`` texts, tokenized by sentence-transformers.
    Without its tokenizer thread (under 1 % of the time on a CPU)."""
    import torch

    from lvm_pipeline.embedding import l2_normalise

    lengths = embedder.token_lengths(texts)
    order = np.argsort(-lengths, kind="stable")
    bounds = [*np.flatnonzero(np.diff(lengths[order])) + 1, len(order)]
    preprocess = getattr(embedder.model, "preprocess", None) or embedder.model.tokenize
    out = np.empty((len(texts), embedder.dim), dtype=np.float32)
    lo = 0
    for end in bounds:
        size = max(1, min(max_texts, max_tokens // max(int(lengths[order[lo]]), 1)))
        for start in range(lo, end, size):
            idx = order[start:min(start + size, end)]
            with torch.inference_mode():
                rows = embedder.model(preprocess([texts[i] for i in idx]))["sentence_embedding"]
            out[idx] = rows.float().numpy()
        lo = end
    return l2_normalise(out)


def timed(fn: Any, texts: list[str]) -> tuple[float, np.ndarray]:
    start = time.perf_counter()
    vectors = fn(texts)
    return time.perf_counter() - start, vectors


def run(args: argparse.Namespace) -> dict[str, Any]:
    import torch

    from lvm_pipeline.embedding import Embedder, EmbedderConfig

    if args.threads:
        torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    texts = sample_texts(args.texts, args.seed, args.pool_chunks)
    corpus_s = time.perf_counter() - t0
    config = EmbedderConfig()
    embedder = Embedder(config)
    lengths = embedder.token_lengths(texts)
    warm = texts[:min(32, len(texts))]
    embedder.encode_ref(warm, args.ref_batch)
    previous_scheme(embedder, warm)
    embedder.encode(warm)

    rounds: list[dict[str, Any]] = []
    ref_vecs = fast_vecs = None
    for i in range(args.repeats):
        ref_s, ref_vecs = timed(lambda t: embedder.encode_ref(t, args.ref_batch), texts)
        previous_s, _ = timed(lambda t: previous_scheme(embedder, t), texts)
        fast_s, fast_vecs = timed(embedder.encode, texts)
        rounds.append({"round": i, "encode_ref_s": ref_s, "previous_s": previous_s,
                       "encode_s": fast_s, "load_average": os.getloadavg()})
        print(f"round {i}: encode_ref {len(texts) / ref_s:.1f} texts/s, previous "
              f"{len(texts) / previous_s:.1f} texts/s, encode {len(texts) / fast_s:.1f} "
              "texts/s", flush=True)
    assert ref_vecs is not None and fast_vecs is not None
    best_ref = min(r["encode_ref_s"] for r in rounds)
    best_previous = min(r["previous_s"] for r in rounds)
    best_fast = min(r["encode_s"] for r in rounds)
    cos = np.einsum("nd,nd->n", ref_vecs.astype(np.float64), fast_vecs.astype(np.float64))
    return {
        "texts": len(texts), "corpus_seconds": corpus_s,
        "tokens_mean": float(lengths.mean()), "tokens_median": float(np.median(lengths)),
        "tokens_max": int(lengths.max()),
        "embedder": {"id": config.model, "dim": embedder.dim, "device": embedder.device,
                     "batching": embedder.identity()["batching"],
                     "batch_size": embedder.batch_size,
                     "length_multiple": config.length_multiple},
        "ref_batch": args.ref_batch, "torch_threads": torch.get_num_threads(),
        "rounds": rounds,
        "encode_ref_texts_per_s": len(texts) / best_ref,
        "previous_texts_per_s": len(texts) / best_previous,
        "encode_texts_per_s": len(texts) / best_fast,
        "speedup": best_ref / best_fast,
        "encode_over_previous": best_previous / best_fast,
        "max_abs_diff": float(np.abs(ref_vecs - fast_vecs).max()),
        "min_cosine": float(cos.min()),
    }


def env_info() -> dict[str, Any]:
    import platform

    import sentence_transformers
    import torch

    import lvm_pipeline

    return {"lvm_pipeline": str(Path(lvm_pipeline.__file__).parent),
            "python": platform.python_version(), "torch": torch.__version__,
            "sentence_transformers": sentence_transformers.__version__,
            "platform": platform.platform(), "cpu_count": os.cpu_count(),
            "load_average": os.getloadavg()}


def summary(r: dict[str, Any]) -> str:
    e = r["embedder"]
    rows = [(f"encode_ref (fixed order, batch {r['ref_batch']})", r["encode_ref_texts_per_s"]),
            ("previous (one token length per batch)", r["previous_texts_per_s"]),
            (f"encode (passes of {e['batch_size']}, lengths x{e['length_multiple']})",
             r["encode_texts_per_s"])]
    return "\n".join([
        f"{r['texts']} sample-corpus chunks, {r['tokens_mean']:.0f} tokens mean "
        f"(median {r['tokens_median']:.0f}, max {r['tokens_max']}), {e['id']} on "
        f"{e['device']}, {r['torch_threads']} torch threads, best of "
        f"{len(r['rounds'])} rounds",
        f"{'path':<48} {'texts/s':>9} {'x ref':>6}",
        *(f"{label:<48} {rate:>9.1f} {rate / r['encode_ref_texts_per_s']:>6.2f}"
          for label, rate in rows),
        f"encode / previous: {r['encode_over_previous']:.2f}x the texts/s",
        f"vectors: max abs diff {r['max_abs_diff']:.2e}, min cosine {r['min_cosine']:.7f}; "
        f"goal >= 2x fixed order: {'met' if r['speedup'] >= 2 else 'NOT met'}",
    ])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--texts", type=int, default=800)
    p.add_argument("--pool-chunks", type=int, default=6000,
                   help="chunks of the sample corpus to draw the texts from (the default run's)")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--ref-batch", type=int, default=32)
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--smoke", action="store_true", help="24 texts, one round")
    p.add_argument("--out", default=None, help="JSON path (default results/bench_embed.json)")
    args = p.parse_args()
    if args.smoke:
        args.texts, args.repeats, args.pool_chunks = 24, 1, 200
    out = Path(args.out or OUT_DIR / f"bench_embed{'_smoke' if args.smoke else ''}.json")
    env = env_info()
    start = time.perf_counter()
    result = run(args)
    results = {"args": vars(args), "env": env, **result, "wall_s": time.perf_counter() - start}
    write_results(out, results, summary)


if __name__ == "__main__":
    main()
