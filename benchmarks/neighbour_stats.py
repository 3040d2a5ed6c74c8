"""Neighbour statistics of a data dir's current payload (lvm_pipeline.synthetic.neighbour_stats): the
cosine of each sampled chunk to its next chunk, to its nearest non-adjacent neighbour in its own
article and in the others, of two random chunks, and copy-last's exact ranks of the truth.

What a synthetic payload is calibrated to (lvm_pipeline.synthetic.payload). Writes JSON, prints
a table:

    python benchmarks/neighbour_stats.py --data-dir /tmp/run_after --sample 2000
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from lvm_pipeline.payload import current_payload
from lvm_pipeline.store import ArtifactStore
from lvm_pipeline.synthetic import neighbour_statistics


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir", required=True)
    parser.add_argument("--sample", type=int, default=2000, help="windows measured (seeded)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", help="JSON path (default: results/neighbour_stats_<payload>.json)")
    args = parser.parse_args()

    payload = current_payload(ArtifactStore(args.data_dir), verify=False)
    t0 = time.perf_counter()
    stats = neighbour_statistics(payload.vectors, payload.chunks["article_index"].to_numpy(),
                                 payload.chunks["chunk_index"].to_numpy(), args.sample,
                                 args.seed)
    record = {"data_dir": str(args.data_dir), "payload_build_id": payload.build_id,
              "embedder": payload.manifest["embedder"]["id"], "dim": payload.dim,
              "seconds": time.perf_counter() - t0, **stats}
    out = Path(args.out or Path(__file__).parent / "results"
               / f"neighbour_stats_{payload.build_id[:12]}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(record, indent=2, sort_keys=True) + "\n")
    print(f"{record['embedder']}: {stats['rows']:,} rows, {stats['articles']:,} articles, "
          f"{stats['sample']:,} windows sampled, {record['seconds']:.0f} s; JSON in {out}\n")
    print("| cosine | mean | p10 | p50 | p90 |\n|---|---:|---:|---:|---:|")
    for name in ("adjacent_cosine", "own_article_nn_cosine", "other_article_nn_cosine",
                 "impostor_cosine", "random_cosine"):
        s = stats[name]
        print(f"| {name} | {s['mean']:.3f} | {s['p10']:.3f} | {s['p50']:.3f} | {s['p90']:.3f} |")
    print(f"\ncopy-last: MRR@10 {stats['copy_last_mrr_at_10']:.3f}, R@1 "
          f"{stats['copy_last_r_at_1']:.3f}, R@5 {stats['copy_last_r_at_5']:.3f}, median rank "
          f"{stats['copy_last_median_rank']:.0f}; truth above the best impostor in "
          f"{stats['truth_beats_impostor_share']:.1%} of queries; best impostor in the "
          f"query's own article in {stats['impostor_own_article_share']:.1%}")


if __name__ == "__main__":
    main()
