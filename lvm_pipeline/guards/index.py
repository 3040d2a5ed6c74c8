"""Index guard: the index holds the payload's vectors under the payload's row numbers."""

from __future__ import annotations

from typing import Any

from lvm_pipeline.embedding import sample_rows
from lvm_pipeline.guards.config import INDEX_SAMPLE, GuardConfig
from lvm_pipeline.guards.result import GuardResult, verdict
from lvm_pipeline.payload import Payload
from lvm_pipeline.search import self_hits


def check_index(index: Any, payload: Payload, config: GuardConfig = GuardConfig(),
                name: str = "check_index") -> GuardResult:
    """The index holds the payload's vectors *under the payload's row numbers*: every sampled
    row finds itself at rank 1 (or a byte-identical row), measured by
    :func:`lvm_pipeline.search.index.self_hits`, the same function the index build records its
    ``self_recall_at_1`` with. A tie on the score alone is not enough: an index with the same
    vectors in another order ties everywhere, and would return the wrong rows for every
    query."""
    threshold = config.min_index_self_recall
    rows = sample_rows(len(payload), INDEX_SAMPLE, config.seed)
    hit, found = self_hits(index, payload.vectors, rows)
    recall = float(hit.mean())
    passed = recall >= threshold
    examples = [f"row {r} retrieves row {f} first: {payload.describe_row(int(r))}"
                for r, f in zip(rows[~hit][:3], found[~hit][:3], strict=True)]
    message = verdict(
        passed,
        f"index of {index.ntotal} vectors returns {recall:.3f} of {len(rows)} sampled payload "
        f"rows themselves at rank 1 (threshold {threshold}, payload {payload.build_id[:12]})",
        f"INDEX DISAGREES WITH PAYLOAD: self-recall@1 {recall:.3f} < {threshold} over "
        f"{len(rows)} sampled rows (payload {payload.build_id[:12]}); its row numbers are not "
        "the payload's: rebuild the index")
    return GuardResult(name, passed, "every sampled payload row retrieves itself (or an "
                       f"identical row) at rank 1: self-recall >= {threshold}", recall,
                       threshold, message, examples, measure="self_recall_at_1")
