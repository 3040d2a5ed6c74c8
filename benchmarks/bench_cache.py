"""The payload step with the embedding cache: first build, unchanged rebuild, 1 %-edited rebuild.

Why: a weekly retrain re-embeds a corpus that barely changed. This times
:func:`lvm_pipeline.payload.build_payload` (read the corpus, embed through the cache, write
and hash the payload) on the offline sample corpus with the default embedder, three times in
one process against one data dir:

1. first build, empty cache (every chunk embedded: the baseline);
2. the same corpus again (every chunk from the cache);
3. the corpus with 1 % of its articles edited (every chunk of every 100th article changed):
   only those chunks embedded.

Ratios are against the first build of the same run. The embedder is loaded and warmed up on
texts outside the corpus first. The JSON (args, machine, versions, each build's seconds,
hits, misses, vectors sha256) is written first, the summary printed after.

    python benchmarks/bench_cache.py                  # the default run's 6,000 chunks
    python benchmarks/bench_cache.py --chunks 1500    # quicker
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from results_file import write_results

from lvm_pipeline.store import kinds

# `python benchmarks/bench_cache.py` puts benchmarks/ first on sys.path; the package beside it
# (this checkout's, not another editable install) must win.
sys.path.insert(1, str(Path(__file__).resolve().parents[1]))

OUT_DIR = Path(__file__).parent / "results"
EDIT_SUFFIX = " (revised this week)"


def publish_chunks(store: Any, chunks: Any, info: dict[str, Any]) -> Any:
    from lvm_pipeline.corpus import CHUNKS

    with store.stage(kinds.CORPUS) as staged:
        chunks.to_parquet(staged / CHUNKS, index=False)
        return store.publish(kinds.CORPUS, staged, info)


def edited(chunks: Any, every: int) -> tuple[Any, int, int]:
    """The chunks with every ``every``-th article's texts changed; (chunks, articles, chunks
    edited)."""
    ids = chunks["article_id"].drop_duplicates().tolist()[::every]
    out = chunks.copy()
    mask = out["article_id"].isin(ids)
    out.loc[mask, "text"] = out.loc[mask, "text"] + EDIT_SUFFIX
    return out, len(ids), int(mask.sum())


def run(args: argparse.Namespace) -> dict[str, Any]:
    import torch

    from lvm_pipeline.corpus import CorpusConfig, build_corpus
    from lvm_pipeline.embedding import Embedder, EmbedderConfig
    from lvm_pipeline.payload import VECTORS, build_payload
    from lvm_pipeline.store import ArtifactStore, sha256_file

    if args.threads:
        torch.set_num_threads(args.threads)
    corpus = build_corpus(CorpusConfig(max_chunks=args.chunks))
    embedder = Embedder(EmbedderConfig())
    embedder.encode([f"warm-up text number {i} about the harbour" for i in range(16)])
    changed, n_articles, n_chunks = edited(corpus.chunks, round(100 / args.edit_percent))
    builds = []
    with tempfile.TemporaryDirectory(dir=args.tmp) as tmp:
        store = ArtifactStore(Path(tmp) / "data")
        for label, chunks in (("first build (empty cache)", corpus.chunks),
                              ("unchanged rebuild", corpus.chunks),
                              (f"{args.edit_percent:g} %-edited rebuild", changed)):
            source = publish_chunks(store, chunks, {"n_chunks": len(chunks), "label": label})
            start = time.perf_counter()
            build, stats = build_payload(store, source, embedder)
            seconds = time.perf_counter() - start
            builds.append({"label": label, "seconds": seconds, "embed_seconds": stats.seconds,
                           "texts": stats.texts, "hits": stats.hits, "misses": stats.misses,
                           "shards_written": stats.shards_written,
                           "payload_build_id": build.build_id,
                           "vectors_sha256": sha256_file(build.file(VECTORS)),
                           "load_average": os.getloadavg()})
            print(f"{label}: {seconds:.1f} s, {stats.line()}", flush=True)
    return {"chunks": len(corpus.chunks), "articles": corpus.n_articles,
            "edited_articles": n_articles, "edited_chunks": n_chunks,
            "embedder": embedder.identity(), "torch_threads": torch.get_num_threads(),
            "builds": builds}


def env_info() -> dict[str, Any]:
    import platform

    import sentence_transformers
    import torch

    return {"python": platform.python_version(), "torch": torch.__version__,
            "sentence_transformers": sentence_transformers.__version__,
            "platform": platform.platform(), "cpu_count": os.cpu_count(),
            "load_average": os.getloadavg()}


def summary(r: dict[str, Any]) -> str:
    base = r["builds"][0]["seconds"]
    lines = [f"{r['chunks']} sample-corpus chunks in {r['articles']} articles; edited: "
             f"{r['edited_articles']} articles, {r['edited_chunks']} chunks; "
             f"{r['embedder']['id']} on {r['embedder']['device']}, {r['torch_threads']} threads",
             f"{'build':<28} {'seconds':>8} {'ratio':>6} {'embedded':>9} {'from cache':>11}"]
    lines += [f"{b['label']:<28} {b['seconds']:>8.1f} {b['seconds'] / base:>6.3f} "
              f"{b['misses']:>9} {b['hits']:>11}" for b in r["builds"]]
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--chunks", type=int, default=6000, help="sample-corpus chunks (the default "
                                                            "run's 6,000)")
    p.add_argument("--edit-percent", type=float, default=1.0,
                   help="percent of the articles edited for the third build")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    p.add_argument("--tmp", default=None, help="folder for the throwaway data dir")
    p.add_argument("--out", default=None, help="JSON path (default results/bench_cache.json)")
    args = p.parse_args()
    out = Path(args.out or OUT_DIR / "bench_cache.json")
    env = env_info()
    start = time.perf_counter()
    result = run(args)
    results = {"args": vars(args), "env": env, **result, "wall_s": time.perf_counter() - start}
    write_results(out, results, summary)


if __name__ == "__main__":
    main()
