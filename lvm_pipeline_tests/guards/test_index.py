"""The index guard: every sampled payload row must retrieve itself under its own row number."""

from __future__ import annotations

import numpy as np

from lvm_pipeline.guards import check_index
from lvm_pipeline.guards.config import INDEX_SAMPLE
from lvm_pipeline.search.index import IndexConfig, build_index, self_recall


def test_index_guard_wants_every_sampled_row_to_find_itself(synthetic_payload):
    ok = check_index(build_index(synthetic_payload.vectors, IndexConfig()), synthetic_payload)
    assert ok.passed and ok.figure == 1.0
    shuffled = np.array(synthetic_payload.vectors)[np.random.default_rng(0).permutation(
        len(synthetic_payload))]
    bad = check_index(build_index(shuffled, IndexConfig()), synthetic_payload)
    assert not bad.passed and "INDEX DISAGREES WITH PAYLOAD" in bad.message


def test_guard_and_index_build_measure_the_same_self_recall(synthetic_payload):
    """The index manifest's ``self_recall_at_1`` and the guard's figure come from one function:
    on a permuted index both are the share of rows the permutation left in place."""
    vectors = np.asarray(synthetic_payload.vectors)
    permuted = build_index(vectors[np.random.default_rng(0).permutation(len(vectors))],
                           IndexConfig())
    recall = self_recall(permuted, vectors, INDEX_SAMPLE, seed=0)
    assert recall < 0.05
    assert check_index(permuted, synthetic_payload).figure == recall
