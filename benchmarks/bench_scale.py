"""Reference scale on one machine: time and peak RSS of every stage over a 584k × 768 payload.

Whether every stage holds up at the reference project's size on a CPU, within the payload's
size + 2 GB of memory. Makes the seeded synthetic payload
(:mod:`lvm_pipeline.synthetic.payload`, the reference's 8,447 articles / 584,545 chunks /
768-d) in ``--data-dir`` if it has none, then runs each stage of the graph **in a fresh
process** (spawned), so each stage's peak RSS is its own (Linux ``VmHWM``; a sampler thread
also records the peak anonymous and file-backed parts, i.e. what the process allocated vs the
memory-mapped payload pages it touched):

- ``payload``: generate and publish (skipped, manifest figures reported, when one exists).
- ``sequences``: ``build_windows`` + ``publish_sequences`` for train/val (with the
  near-duplicate drop) and eval, as the sequence assets do; the size of the row-index files
  against the reference's copied-vector .npz (windows × 6 × 768 × 4 bytes).
- ``guards``: every blocking guard over all rows, each timed on its own (the suites memoise
  within a process; a Dagster run executes assets in separate processes).
- ``index``: the product's flat index (publish, load, ``check_index``, search of the eval
  queries), then a sweep: IVF nlist × nprobe, SQ8, fp16, and a float16 payload, each with
  recall@50 against the flat search and its memory.
- ``search``: the report's search of those queries on a CPU both ways, in one process: FAISS
  flat search + exact rank pass (two passes over the vectors) vs one exact pass over the
  memory-mapped payload; time, peak RSS of each, and whether ranks and top 50 agree.
- ``train``: one epoch of the tiny preset through ``train_variant`` (batches gathered from
  the memory-mapped payload); on 2 cores a full epoch is too slow, so ``--train-steps``
  batches are trained and the epoch projected (said so in the output).
- ``report``: ``build_report`` (model + baselines + oracle) over ``--queries`` eval windows
  with the flat index.

Queries: ``--queries`` (the reference's 5,244) eval windows, seeded; the search queries of the
index stage are the mean of each window's context (a model-free prediction: near the data but
not on it, like a model's output). JSON (args, machine, versions, every stage) is rewritten
after each stage, so a run cut short keeps what it measured; the summary prints at the end.

    python benchmarks/bench_scale.py --data-dir /tmp/lvm-scale        # ~80 min on 2 busy cores
    python benchmarks/bench_scale.py --data-dir /tmp/s --stages index   # one stage again
    python benchmarks/bench_scale.py --smoke --data-dir /tmp/smoke      # tiny sizes, seconds
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import sys
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

from lvm_pipeline.store import kinds

# `python benchmarks/bench_scale.py` puts benchmarks/ first on sys.path; the package beside it
# (this checkout's, not another editable install) must win, in the spawned children too.
sys.path.insert(1, str(Path(__file__).resolve().parents[1]))

STAGES = ("payload", "sequences", "guards", "index", "search", "train", "report")
OUT_DIR = Path(__file__).parent / "results"
SUBSET_STORE = "bench_train_subset"  # under --data-dir: the trained-on subset and its checkpoint
FP16_FILE = "bench_vectors_fp16.npy"
K = 50
# The reference stored each training window as copied float32 vectors: 5 context + 1 target.
REF_BYTES_PER_WINDOW = 6 * 4


# --------------------------------------------------------------------------- memory


def _status_kb() -> dict[str, int]:
    out = {}
    for line in Path("/proc/self/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmHWM", "VmRSS", "RssAnon", "RssFile"):
            out[key] = int(value.split()[0])
    return out


class PeakSampler:
    """Peak RssAnon / RssFile of this process, sampled every ``interval`` s (VmHWM only gives
    their peak sum): tells allocations apart from memory-mapped payload pages."""

    def __init__(self, interval: float = 0.2) -> None:
        self.interval = interval
        self.peak = {"RssAnon": 0, "RssFile": 0}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            now = _status_kb()
            for key in self.peak:
                self.peak[key] = max(self.peak[key], now.get(key, 0))
            self._stop.wait(self.interval)

    def __enter__(self) -> PeakSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def memory_mb() -> dict[str, float]:
    """This process's peak RSS so far (VmHWM) in MB."""
    return {"peak_rss_mb": _status_kb()["VmHWM"] / 1024}


def reset_peak() -> None:
    """Restart VmHWM from the current RSS (Linux >= 4.0), so the next peak is one step's."""
    Path("/proc/self/clear_refs").write_text("5")


class Timer:
    """Named wall times: ``with timer("x"): ...`` records ``x_s``."""

    def __init__(self) -> None:
        self.times: dict[str, float] = {}

    def __call__(self, name: str) -> Timer:
        self._name = name
        return self

    def __enter__(self) -> Timer:
        self._t0 = time.perf_counter()
        return self

    def __exit__(self, *exc: object) -> None:
        self.times[f"{self._name}_s"] = time.perf_counter() - self._t0


# --------------------------------------------------------------------------- stages


def _store(ctx: dict[str, Any]):
    from lvm_pipeline.store import ArtifactStore

    return ArtifactStore(ctx["data_dir"])


def _payload(ctx: dict[str, Any], timer: Timer):
    from lvm_pipeline.payload import current_payload

    with timer("load_payload"):  # re-hashes vectors.npy, as every reader does
        return current_payload(_store(ctx))


def _eval_queries(ctx: dict[str, Any], payload):
    """The seeded ``--queries`` eval windows and their mean-of-context search queries."""
    from lvm_pipeline.evaluation import mean_of_context
    from lvm_pipeline.payload import gather
    from lvm_pipeline.sequences import load_sets

    eval_set = load_sets(_store(ctx).current(kinds.EVAL_SEQUENCES))["eval"]
    n = min(ctx["queries"], len(eval_set))
    keep = np.zeros(len(eval_set), dtype=bool)
    keep[np.random.default_rng(ctx["seed"]).choice(len(eval_set), size=n, replace=False)] = True
    subset = eval_set.subset(keep)
    return subset, mean_of_context(gather(payload.vectors, subset.context_rows))


def _build_bytes(build) -> int:
    return sum(int(f["bytes"]) for f in build.manifest["files"].values())


def stage_payload(ctx: dict[str, Any]) -> dict[str, Any]:
    from lvm_pipeline.synthetic import SyntheticPayloadConfig, publish_synthetic_payload

    store = _store(ctx)
    config = SyntheticPayloadConfig(articles=ctx["articles"], chunks=ctx["chunks"], dim=ctx["dim"],
                                    seed=ctx["seed"])
    reused = store.has_current(kinds.PAYLOAD)
    if reused:
        build = store.current(kinds.PAYLOAD)
        if build.manifest["embedder"].get("id") != config.spec():
            raise ValueError(f"{ctx['data_dir']} holds another payload "
                             f"({build.manifest['embedder'].get('id')}); use an empty --data-dir")
    else:
        store.ensure_writable()
        build = publish_synthetic_payload(store, config)
        store.set_current(build)  # the later stages, each its own process, read CURRENT
    measured = build.manifest["source"]["measured"]
    return {"reused": reused, "build_id": build.build_id, "n_rows": build.manifest["n_rows"],
            "dim": build.manifest["dim"], "dtype": build.manifest["dtype"],
            "vectors_bytes": int(build.manifest["files"]["vectors.npy"]["bytes"]),
            "generate_s": build.manifest["run"]["seconds"], "measured": measured}


def stage_sequences(ctx: dict[str, Any]) -> dict[str, Any]:
    from lvm_pipeline.sequences import SplitConfig, build_windows, native_info, publish_sequences, windows

    timer = Timer()
    payload = _payload(ctx, timer)
    store = _store(ctx)
    config = SplitConfig()
    with timer("windows_only"):  # the window arithmetic alone, no split, no search
        context_rows, _ = windows(payload.chunks["article_index"].to_numpy(),
                                  payload.chunks["chunk_index"].to_numpy())
    facts: dict[str, Any] = {}
    with timer("build_train"):  # split + near-duplicate drop (FAISS search)
        train_sets = build_windows(payload, config, facts, drop_near_duplicates=True)
    with timer("publish_train"):
        train = publish_sequences(store, kinds.TRAIN_SEQUENCES, payload, train_sets,
                                  {**native_info(config), **facts})
    with timer("build_eval"):
        eval_sets = build_windows(payload, config, drop_near_duplicates=False)
    with timer("publish_eval"):
        ev = publish_sequences(store, kinds.EVAL_SEQUENCES, payload, eval_sets, native_info(config))
    store.set_current(train)
    store.set_current(ev)
    counts = {s: len(train_sets[s]) for s in ("train", "val")} | {"eval": len(eval_sets["eval"])}
    n = sum(counts.values())
    files = {**train.manifest["files"], **ev.manifest["files"]}  # keys: "<split>/<array>.npy"
    npy = {name: sum(int(f["bytes"]) for key, f in files.items() if key.endswith(f"/{name}.npy"))
           for name in ("context_rows", "target_row", "truth_keys")}
    index_bytes = _build_bytes(train) + _build_bytes(ev)
    ref_bytes = n * REF_BYTES_PER_WINDOW * payload.dim
    return {"windows_total": len(context_rows), "windows_kept": counts, "windows_kept_total": n,
            "near_duplicate_windows_dropped": facts.get("near_duplicate_windows_dropped"),
            "index_file_bytes": index_bytes, "index_file_bytes_by_array": npy,
            "reference_npz_bytes": ref_bytes, "reference_over_ours": ref_bytes / index_bytes,
            "bytes_per_window": index_bytes / n, **timer.times}


def stage_guards(ctx: dict[str, Any]) -> dict[str, Any]:
    from lvm_pipeline.guards import (
        GuardConfig,
        check_alignment,
        check_embedder_canary,
        check_learnability,
        check_payload_integrity,
        check_split_leakage,
        check_truth_keys,
    )
    from lvm_pipeline.sequences import load_sets
    from lvm_pipeline.synthetic import SyntheticEncoder, SyntheticPayloadConfig

    timer = Timer()
    payload = _payload(ctx, timer)
    store = _store(ctx)
    config = GuardConfig()
    encoder = SyntheticEncoder(SyntheticPayloadConfig.from_spec(payload.manifest["embedder"]["id"]))
    with timer("load_sets"):
        train_sets = load_sets(store.current(kinds.TRAIN_SEQUENCES))
        eval_sets = load_sets(store.current(kinds.EVAL_SEQUENCES))
    checks = [
        ("payload_integrity", lambda: check_payload_integrity(payload, encoder.dim, config)),
        ("embedder_canary", lambda: check_embedder_canary(payload, encoder, config)),
        ("training_aligned", lambda: check_alignment(payload, train_sets,
                                                     config.min_alignment_cosine)),
        ("training_truth_keys", lambda: check_truth_keys(payload, train_sets)),
        ("splits_disjoint", lambda: check_split_leakage(payload, {**train_sets, **eval_sets},
                                                        config.near_duplicate_cosine)),
        ("training_learnable", lambda: check_learnability(payload, train_sets["train"],
                                                          train_sets["val"], config)),
        ("eval_aligned", lambda: check_alignment(payload, eval_sets,
                                                 config.min_alignment_cosine)),
        ("eval_truth_keys", lambda: check_truth_keys(payload, eval_sets)),
    ]
    results = []
    for name, run in checks:
        reset_peak()  # each guard's own peak; the stage's peak is still the sampler's
        t0 = time.perf_counter()
        result = run()
        results.append({"guard": name, "seconds": time.perf_counter() - t0,
                        "passed": result.passed, "figure": result.figure,
                        "threshold": result.threshold, **memory_mb()})
        print(f"    guard {name}: {results[-1]['seconds']:.1f} s, peak RSS "
              f"{results[-1]['peak_rss_mb']:.0f} MB, passed {result.passed}", flush=True)
    return {"guards": results, "guards_total_s": sum(r["seconds"] for r in results),
            "peak_rss_floor_mb": max(r["peak_rss_mb"] for r in results), **timer.times}


def _index_bytes(index) -> int:
    """Bytes an index holds (codes + ids + coarse centroids), from its layout."""
    import faiss

    if isinstance(index, faiss.IndexIVF):
        ivf = faiss.extract_index_ivf(index)
        return int(ivf.ntotal * (ivf.code_size + 8) + ivf.nlist * ivf.d * 4)
    return int(index.ntotal * index.sa_code_size())


def _timed_search(index, queries: np.ndarray) -> tuple[float, np.ndarray]:
    t0 = time.perf_counter()
    _, ids = index.search(np.ascontiguousarray(queries, dtype=np.float32), K)
    return time.perf_counter() - t0, ids


def stage_index(ctx: dict[str, Any]) -> dict[str, Any]:
    import faiss

    from lvm_pipeline.guards import check_index
    from lvm_pipeline.search import IndexConfig, load_index, publish_index

    timer = Timer()
    payload = _payload(ctx, timer)
    store = _store(ctx)
    _, queries = _eval_queries(ctx, payload)
    out: dict[str, Any] = {"queries": len(queries), "faiss_threads": faiss.omp_get_max_threads()}
    # The product's path: what the index asset and the report do with the default (flat) index.
    with timer("publish_flat"):  # build + self-recall + write + hash
        build = publish_index(store, payload, IndexConfig())
    store.set_current(build)
    with timer("load_flat"):
        flat = load_index(build, payload)
    with timer("check_index"):
        guard = check_index(flat, payload)
    search_s, exact = _timed_search(flat, queries)
    out |= {"check_index_passed": guard.passed, "flat_build_s": build.manifest["run"]["build_seconds"],
            "flat_search_s": search_s, "flat_bytes": _index_bytes(flat),
            "after_product_path": memory_mb()}
    del flat
    print(f"    flat: search {search_s:.1f} s", flush=True)

    out["sweep"] = [
        *_ivf_sweep(payload.vectors, queries, exact, ctx["nlists"], ctx["nprobes"]),
        *_quantised(payload.vectors, queries, exact, ctx["sq_queries"], ctx["seed"]),
        _flat_over_float16(payload.vectors, queries, exact, Path(ctx["data_dir"]) / FP16_FILE)]
    out |= timer.times
    return out


def _ivf_sweep(vectors: np.ndarray, queries: np.ndarray, exact: np.ndarray, nlists: list[int],
               nprobes: list[int]) -> list[dict[str, Any]]:
    """IVF indexes over the (R, D) payload, one per nlist (those with >= 39 rows per list, below
    which FAISS's k-means warns), each searched at every nprobe <= nlist with queries (Q, D): time,
    bytes and recall@50 against the flat search's ids ``exact`` (Q, 50)."""
    import faiss

    from lvm_pipeline.search import IndexConfig, build_index, recall_at_k

    rows: list[dict[str, Any]] = []
    for nlist in nlists:
        config = IndexConfig(type="ivf_flat", nlist=nlist, nprobe=1)
        if len(vectors) < 39 * nlist:
            continue
        t0 = time.perf_counter()
        ivf = build_index(vectors, config)
        build_s = time.perf_counter() - t0
        for nprobe in nprobes:
            if nprobe > nlist:
                continue
            faiss.extract_index_ivf(ivf).nprobe = nprobe
            search_s, ids = _timed_search(ivf, queries)
            rows.append({"type": "ivf_flat", "nlist": nlist, "nprobe": nprobe,
                         "build_s": build_s, "search_s": search_s,
                         "recall_at_50": recall_at_k(ids, exact), "bytes": _index_bytes(ivf)})
            print(f"    ivf nlist {nlist} nprobe {nprobe}: {search_s:.1f} s, recall@50 "
                  f"{rows[-1]['recall_at_50']:.4f}", flush=True)
        del ivf  # one sweep index in memory at a time
    return rows


def _quantised(vectors: np.ndarray, queries: np.ndarray, exact: np.ndarray, n_queries: int,
               seed: int) -> list[dict[str, Any]]:
    """SQ8 and fp16 indexes over the (R, D) payload: time, bytes and recall@50 against
    ``exact`` (Q, 50) on a seeded subset of ``n_queries`` of the queries (Q, D)."""
    from lvm_pipeline.search import IndexConfig, build_index, recall_at_k

    # Scalar quantisers scan every code without BLAS: searched on a subset, projected.
    sub = np.random.default_rng(seed).choice(len(queries), size=min(n_queries, len(queries)),
                                             replace=False)
    rows: list[dict[str, Any]] = []
    for kind in ("sq8", "fp16"):
        t0 = time.perf_counter()
        index = build_index(vectors, IndexConfig(type=kind))
        build_s = time.perf_counter() - t0
        search_s, ids = _timed_search(index, queries[sub])
        rows.append({"type": kind, "build_s": build_s, "search_s": search_s,
                     "searched_queries": len(sub),
                     "search_s_projected": search_s * len(queries) / len(sub),
                     "recall_at_50": recall_at_k(ids, exact[sub]), "bytes": _index_bytes(index)})
        print(f"    {kind}: {search_s:.1f} s for {len(sub)} queries, recall@50 "
              f"{rows[-1]['recall_at_50']:.4f}", flush=True)
        del index  # one quantised index in memory at a time
    return rows


def _flat_over_float16(vectors: np.ndarray, queries: np.ndarray, exact: np.ndarray,
                       path: Path) -> dict[str, Any]:
    """A float16 payload: the same (R, D) rows rounded to half precision (written to ``path``
    and removed after), a flat index over them; time, bytes and recall@50 against ``exact``
    (Q, 50) for the queries (Q, D)."""
    from lvm_pipeline.search import IndexConfig, build_index, recall_at_k

    half = np.lib.format.open_memmap(path, mode="w+", dtype=np.float16, shape=vectors.shape)
    for lo in range(0, len(vectors), 65536):
        half[lo:lo + 65536] = vectors[lo:lo + 65536]
    half.flush()
    t0 = time.perf_counter()
    index = build_index(half, IndexConfig())
    build_s = time.perf_counter() - t0
    search_s, ids = _timed_search(index, queries)
    row = {"type": "flat over float16 payload", "build_s": build_s, "search_s": search_s,
           "recall_at_50": recall_at_k(ids, exact), "bytes": _index_bytes(index),
           "payload_bytes": path.stat().st_size, "payload_bytes_float32": int(vectors.nbytes)}
    del index, half
    path.unlink()
    return row


def stage_train(ctx: dict[str, Any]) -> dict[str, Any]:
    import torch

    from lvm_pipeline.guards import GuardConfig
    from lvm_pipeline.sequences import SplitConfig, load_sets, native_info, publish_sequences
    from lvm_pipeline.store import ArtifactStore
    from lvm_pipeline.training import TrainConfig, evaluate_val, train_variant

    timer = Timer()
    payload = _payload(ctx, timer)
    sets = load_sets(_store(ctx).current(kinds.TRAIN_SEQUENCES))
    config = TrainConfig(epochs=1)
    n_train = len(sets["train"])
    full_steps = n_train // config.batch_size
    steps = min(ctx["train_steps"], full_steps)
    keep = np.zeros(n_train, dtype=bool)
    keep[np.random.default_rng(ctx["seed"]).choice(n_train, size=steps * config.batch_size,
                                                   replace=False)] = True
    # A store beside the real one: the trained-on subset and the checkpoint the report reads.
    sub_store = ArtifactStore(Path(ctx["data_dir"]) / SUBSET_STORE)
    sub_store.ensure_writable()
    subset = publish_sequences(sub_store, kinds.TRAIN_SEQUENCES, payload,
                               {"train": sets["train"].subset(keep), "val": sets["val"]},
                               {**native_info(SplitConfig()), "subset_of_windows": n_train,
                                "note": "bench_scale.py: a seeded subset of the train windows, "
                                        "to time a fixed number of steps"})
    with timer("train_variant"):  # alignment guard + steps + val pass + publish
        build, result = train_variant(sub_store, ctx["variant"], "tiny", payload, subset, config,
                                      GuardConfig().min_alignment_cosine)
    sub_store.set_current(subset)  # what the report stage scores, and its training set
    sub_store.set_current(build)
    with timer("val_pass"):  # the end-of-epoch val evaluation, timed alone
        evaluate_val(result.model, payload.vectors, sets["val"], config, "cpu")
    step_s = (result.seconds - timer.times["val_pass_s"]) / steps
    return {"variant": ctx["variant"], "size": "tiny", "batch_size": config.batch_size,
            "negatives": config.negatives, "payload_negatives": config.payload_negatives,
            "torch_threads": torch.get_num_threads(), "train_windows": n_train,
            "val_windows": len(sets["val"]), "steps_measured": steps,
            "steps_full_epoch": full_steps, "train_s": result.seconds, "step_s": step_s,
            "seq_per_s": config.batch_size / step_s,
            "epoch_s_projected": step_s * full_steps + timer.times["val_pass_s"],
            "checkpoint": str(build.path) if build else None,
            "n_params": result.model.num_params(), **timer.times}


def stage_search(ctx: dict[str, Any]) -> dict[str, Any]:
    """The report's search on a CPU, both ways, same queries: the flat FAISS search + the exact
    rank pass (two passes; what an approximate index still takes) against the single exact pass
    over the memory-mapped payload (``lvm_pipeline.search.exact_pass``, what a flat index now
    takes)."""
    from lvm_pipeline.evaluation import CONTAIN_K
    from lvm_pipeline.payload import release_pages
    from lvm_pipeline.search import exact_pass, load_index, truth_ranks
    from lvm_pipeline.search import top_k as search

    timer = Timer()
    payload = _payload(ctx, timer)
    eval_set, queries = _eval_queries(ctx, payload)
    truth = eval_set.target_row.astype(np.int64)
    exclude = eval_set.context_rows.astype(np.int64)
    release_pages(payload.vectors)
    out: dict[str, Any] = {"queries": len(queries)}
    reset_peak()
    with timer("two_pass_load_index"):
        index = load_index(_store(ctx).current(kinds.INDEX), payload)
    with timer("two_pass_faiss_search"):
        scores2, hits2 = search(index, queries, CONTAIN_K, exclude)
    with timer("two_pass_exact_ranks"):
        ranks2 = truth_ranks(queries, payload.vectors, truth, exclude)
    out["two_pass_peak_rss_mb"] = _status_kb()["VmHWM"] / 1024
    del index  # unmaps the index file
    release_pages(payload.vectors)
    reset_peak()
    with timer("one_pass"):
        scores1, hits1, ranks1 = exact_pass(queries, payload.vectors, truth, exclude, CONTAIN_K)
    out["one_pass_peak_rss_mb"] = _status_kb()["VmHWM"] / 1024
    out.update(timer.times)
    out["two_pass_s"] = sum(out[f"two_pass_{k}_s"] for k in ("load_index", "faiss_search",
                                                              "exact_ranks"))
    out["one_pass_speedup"] = out["two_pass_s"] / out["one_pass_s"]
    out["ranks_equal_share"] = float(np.mean(ranks1 == ranks2))
    out["top50_rows_equal_share"] = float(np.mean(hits1 == hits2))
    out["top50_max_score_diff"] = float(np.abs(scores1 - scores2).max())
    return out


def stage_report(ctx: dict[str, Any]) -> dict[str, Any]:
    from lvm_pipeline.report import (
        ReportInputs,
        build_report,
        fit_report_baselines,
        report_latency,
        report_predictors,
    )
    from lvm_pipeline.search import load_index
    from lvm_pipeline.sequences import load_sets
    from lvm_pipeline.store import ArtifactStore

    timer = Timer()
    payload = _payload(ctx, timer)
    store = _store(ctx)
    with timer("load_index"):
        index_build = store.current(kinds.INDEX)
        index = load_index(index_build, payload)
    eval_set, _ = _eval_queries(ctx, payload)
    sub_store = ArtifactStore(Path(ctx["data_dir"]) / SUBSET_STORE)
    kind = kinds.checkpoint(ctx["variant"])
    models = {ctx["variant"]: sub_store.current(kind)} if sub_store.has_current(kind) else {}
    # A report compares predictors trained on one training set (lvm_pipeline/store/lineage.py): with
    # the train stage's checkpoint, the ridge baseline is fit on that checkpoint's subset too
    # (before 2026-12 it was fit on all train windows; RESULTS.md's report timings say which).
    train_build = (sub_store if models else store).current(kinds.TRAIN_SEQUENCES)
    train_sets = load_sets(train_build)
    inputs = ReportInputs(payload, index_build, index, store.current(kinds.EVAL_SEQUENCES),
                          eval_set, train_build, train_sets, models)
    # One timer over all: build_report's time included the baselines' training and the
    # latency until they moved out of it, and keeps the same meaning.
    with timer("build_report"):  # baselines' training, ridge fit, predictions, search, latency
        predictors = report_predictors(inputs, fit_report_baselines(inputs))
        report, _ = build_report(inputs, predictors)
        report_latency(inputs, predictors)
    rows = {**report["models"], **report["baselines"]}
    return {"queries": report["n_queries"], "predictors": list(rows), "oracle_ok":
            report["oracle_ok"],
            "metrics": {name: {k: m[k] for k in ("r_at_1", "r_at_5", "contain_at_50", "mrr_at_10")}
                        for name, m in rows.items()}, **timer.times}


STAGE_FNS = {"payload": stage_payload, "sequences": stage_sequences, "guards": stage_guards,
             "index": stage_index, "search": stage_search, "train": stage_train,
             "report": stage_report}


# --------------------------------------------------------------------------- driver


def _child(queue: Any, stage: str, ctx: dict[str, Any]) -> None:
    import torch

    torch.set_num_threads(ctx["threads"] or torch.get_num_threads())
    t0 = time.perf_counter()
    sampler = PeakSampler()
    try:
        with sampler:
            result = STAGE_FNS[stage](ctx)
    except Exception as err:  # reported in the JSON; later stages may still run
        import traceback

        traceback.print_exc()
        result = {"error": repr(err)}
    # A stage that restarted VmHWM (reset_peak) passes the peak it saw before as a floor.
    floor = result.pop("peak_rss_floor_mb", 0.0)
    queue.put({"stage": stage, "wall_s": time.perf_counter() - t0, **result,
               "peak_rss_mb": max(_status_kb()["VmHWM"] / 1024, floor),
               "peak_anon_mb": sampler.peak["RssAnon"] / 1024,
               "peak_file_mb": sampler.peak["RssFile"] / 1024})


def env_info() -> dict[str, Any]:
    import platform

    import faiss
    import torch

    info = {"python": platform.python_version(), "numpy": np.__version__,
            "torch": torch.__version__, "faiss": faiss.__version__,
            "platform": platform.platform(), "cpu_count": os.cpu_count(),
            "load_average": os.getloadavg()}
    meminfo = Path("/proc/meminfo").read_text().splitlines()[0].split()
    info["mem_total_gb"] = int(meminfo[1]) / 2**20
    return info


def summary(results: dict[str, Any]) -> str:
    st = {s["stage"]: s for s in results["stages"]}
    lines = [f"{'stage':<10} {'wall s':>8} {'peak RSS MB':>12} {'anon MB':>8} {'mmap MB':>8}  "
             "notes"]
    for s in results["stages"]:
        note = s.get("error", "")
        if s["stage"] == "payload" and "vectors_bytes" in s:
            note = (f"{s['n_rows']:,} × {s['dim']} ({s['vectors_bytes'] / 1e9:.2f} GB), generated "
                    f"in {s['generate_s']:.0f} s{' (reused)' if s['reused'] else ''}")
        if s["stage"] == "sequences" and "index_file_bytes" in s:
            note = (f"{s['windows_kept_total']:,} windows: {s['index_file_bytes'] / 1e6:.1f} MB of "
                    f"row indices vs {s['reference_npz_bytes'] / 1e9:.2f} GB copied vectors "
                    f"({s['reference_over_ours']:.0f}x)")
        if s["stage"] == "search" and "one_pass_s" in s:
            note = (f"two passes {s['two_pass_s']:.0f} s / {s['two_pass_peak_rss_mb']:.0f} MB, one "
                    f"pass {s['one_pass_s']:.0f} s / {s['one_pass_peak_rss_mb']:.0f} MB "
                    f"({s['one_pass_speedup']:.2f}x); ranks equal {s['ranks_equal_share']:.4f}")
        if s["stage"] == "train" and "epoch_s_projected" in s:
            note = (f"{s['steps_measured']} steps measured, {s['seq_per_s']:.0f} seq/s, one epoch "
                    f"projected {s['epoch_s_projected'] / 60:.1f} min")
        lines.append(f"{s['stage']:<10} {s['wall_s']:>8.1f} {s['peak_rss_mb']:>12.0f} "
                     f"{s['peak_anon_mb']:>8.0f} {s['peak_file_mb']:>8.0f}  {note}")
    if "guards" in st and "guards" in st["guards"]:
        lines.append("\nguards: " + ", ".join(f"{g['guard']} {g['seconds']:.1f} s"
                                             f" ({g.get('peak_rss_mb', 0):.0f} MB)"
                                             f"{'' if g['passed'] else ' (FAILED)'}"
                                             for g in st["guards"]["guards"]))
    if "index" in st and "sweep" in st["index"]:
        ix = st["index"]
        lines.append(f"\nflat: {ix['queries']} queries in {ix['flat_search_s']:.1f} s, "
                     f"{ix['flat_bytes'] / 1e9:.2f} GB")
        lines.append(f"{'index':<28} {'build s':>8} {'search s':>9} {'x flat':>7} "
                     f"{'recall@50':>10} {'GB':>6}")
        for r in ix["sweep"]:
            name = (f"ivf nlist {r['nlist']} nprobe {r['nprobe']}" if r["type"] == "ivf_flat"
                    else r["type"])
            search = r.get("search_s_projected", r["search_s"])
            lines.append(f"{name:<28} {r['build_s']:>8.1f} {search:>9.1f} "
                         f"{ix['flat_search_s'] / search:>7.1f} {r['recall_at_50']:>10.4f} "
                         f"{r['bytes'] / 1e9:>6.2f}")
        ok = [r for r in ix["sweep"] if r["type"] == "ivf_flat" and r["recall_at_50"] >= 0.95]
        if ok:
            best = min(ok, key=lambda r: r["search_s"])
            lines.append(f"cheapest IVF with recall@50 >= 0.95: nlist {best['nlist']} nprobe "
                         f"{best['nprobe']} ({best['search_s']:.1f} s, recall "
                         f"{best['recall_at_50']:.4f})")
    peaks = [s["peak_rss_mb"] for s in results["stages"]]
    if "payload" in st and "vectors_bytes" in st["payload"]:
        goal = st["payload"]["vectors_bytes"] / 2**20 + 2048
        lines.append(f"\nwhole graph peak RSS {max(peaks):.0f} MB (largest stage) vs goal payload "
                     f"+ 2 GB = {goal:.0f} MB: {'met' if max(peaks) <= goal else 'NOT met'}")
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data-dir", required=True, help="data dir (the payload is made here if absent)")
    p.add_argument("--articles", type=int, default=8447)
    p.add_argument("--chunks", type=int, default=584_545)
    p.add_argument("--dim", type=int, default=768)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--stages", default=",".join(STAGES))
    p.add_argument("--queries", type=int, default=5244, help="eval windows searched (reference)")
    # IVF lists are scanned without BLAS: nprobe 128 of 1024 took 4x the flat search (RESULTS.md).
    p.add_argument("--nlists", default="1024,4096")
    p.add_argument("--nprobes", default="32,128")
    p.add_argument("--sq-queries", type=int, default=1000,
                   help="queries searched in the SQ8 / fp16 indexes (projected to --queries)")
    p.add_argument("--variant", default="mamba_s")
    p.add_argument("--train-steps", type=int, default=100,
                   help="train steps timed; one epoch is projected from them")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    p.add_argument("--smoke", action="store_true", help="tiny sizes: a few seconds a stage")
    p.add_argument("--out", default=None, help="JSON path (default results/bench_scale.json)")
    args = p.parse_args()
    if args.smoke:
        args.articles, args.chunks, args.dim, args.queries = 40, 2400, 32, 100
        args.nlists, args.nprobes, args.sq_queries, args.train_steps = "16", "2,16", 50, 3
    stages = args.stages.split(",")
    unknown = sorted(set(stages) - set(STAGES))
    if unknown:
        p.error(f"unknown stages {unknown}; valid: {', '.join(STAGES)}")
    ctx = {**vars(args), "data_dir": str(Path(args.data_dir).resolve()),
           "nlists": [int(x) for x in args.nlists.split(",")],
           "nprobes": [int(x) for x in args.nprobes.split(",")]}
    out = Path(args.out or OUT_DIR / f"bench_scale{'_smoke' if args.smoke else ''}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    results: dict[str, Any] = {"args": vars(args), "env": env_info(), "stages": []}
    spawn = mp.get_context("spawn")
    start = time.perf_counter()
    for stage in [s for s in STAGES if s in stages]:
        print(f"[{time.perf_counter() - start:6.0f} s] {stage} ...", flush=True)
        queue = spawn.Queue()
        proc = spawn.Process(target=_child, args=(queue, stage, ctx))
        proc.start()
        results["stages"].append(queue.get())
        proc.join()
        results["wall_s"] = time.perf_counter() - start
        results["load_average_end"] = os.getloadavg()
        out.write_text(json.dumps(results, indent=2) + "\n")  # after every stage
        print(f"[{time.perf_counter() - start:6.0f} s] {stage}: "
              f"{results['stages'][-1]['wall_s']:.1f} s, peak RSS "
              f"{results['stages'][-1]['peak_rss_mb']:.0f} MB", flush=True)
    print(f"wrote {out}\n")
    print(summary(results))
    print(f"\nmachine: {os.cpu_count()} CPUs, load average at start "
          f"{results['env']['load_average']}, at end {results['load_average_end']}")


if __name__ == "__main__":
    main()
