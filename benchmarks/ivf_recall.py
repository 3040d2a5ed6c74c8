"""IVF recall@50 of a data dir's current payload with bench_scale.py's queries, without its
sequences and index stages: the mean of each seeded window's context (windows of the whole
payload, not the eval split), k = 50, against the exact top 50
(``lvm_pipeline.search.exact_pass``).

For a payload whose sequences are not published yet (bench_scale's ``index`` stage needs them,
and the near-duplicate split before them). Writes JSON, prints the recall per nprobe:

    python benchmarks/ivf_recall.py --data-dir /tmp/lvm-scale-cal --queries 1000
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import faiss
import numpy as np

from lvm_pipeline.evaluation import mean_of_context
from lvm_pipeline.payload import current_payload, gather
from lvm_pipeline.search import IndexConfig, build_index, exact_pass, recall_at_k
from lvm_pipeline.sequences import windows
from lvm_pipeline.store import ArtifactStore


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir", required=True)
    parser.add_argument("--queries", type=int, default=1000)
    parser.add_argument("--nlist", type=int, default=1024)
    parser.add_argument("--nprobes", default="32,128")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=str(Path(__file__).parent / "results/ivf_recall.json"))
    args = parser.parse_args()

    payload = current_payload(ArtifactStore(args.data_dir), verify=False)
    context, target = windows(payload.chunks["article_index"].to_numpy(),
                              payload.chunks["chunk_index"].to_numpy())
    pick = np.random.default_rng(args.seed).choice(len(target), min(args.queries, len(target)),
                                                   replace=False)
    queries = mean_of_context(gather(payload.vectors, context[pick])).astype(np.float32)
    out = {"args": vars(args), "payload_build_id": payload.build_id, "rows": len(payload),
           "faiss_threads": faiss.omp_get_max_threads()}
    t0 = time.perf_counter()
    _, exact, _ = exact_pass(queries, payload.vectors, target[pick].astype(np.int64), None, 50)
    out["exact_s"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    ivf = build_index(payload.vectors, IndexConfig(type="ivf_flat", nlist=args.nlist, nprobe=1))
    out["ivf_build_s"] = time.perf_counter() - t0
    out["nprobes"] = {}
    for nprobe in [int(x) for x in args.nprobes.split(",")]:
        faiss.extract_index_ivf(ivf).nprobe = nprobe
        t0 = time.perf_counter()
        _, ids = ivf.search(queries, 50)
        out["nprobes"][nprobe] = {"search_s": time.perf_counter() - t0,
                                  "recall_at_50": recall_at_k(ids, exact)}
        print(f"nlist {args.nlist} nprobe {nprobe}: recall@50 "
              f"{out['nprobes'][nprobe]['recall_at_50']:.4f}", flush=True)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=2) + "\n")


if __name__ == "__main__":
    main()
