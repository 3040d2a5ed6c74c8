"""Retrieval metrics against brute force, with the query's own context excluded."""

from __future__ import annotations

import faiss
import numpy as np
import pytest

from lvm_pipeline.evaluation import evaluate, metrics_from, search, truth_ranks
from lvm_pipeline.sequences import SplitConfig, build_windows, gather


def _brute_rank(q, vectors, truth, exclude):
    scores = vectors @ q
    mask = np.ones(len(vectors), bool)
    mask[exclude] = False
    mask[truth] = True
    return 1 + int((scores[mask] > scores[truth]).sum())


def test_truth_ranks_match_brute_force_with_and_without_exclusion(synthetic_payload):
    rng = np.random.default_rng(0)
    v = synthetic_payload.vectors
    q = v[rng.integers(0, len(v), 20)] + 0.5 * rng.standard_normal((20, v.shape[1]))
    q = (q / np.linalg.norm(q, axis=1, keepdims=True)).astype(np.float32)
    truth = rng.integers(0, len(v), 20)
    exclude = rng.integers(0, len(v), (20, 5))
    got = truth_ranks(q, v, truth, exclude)
    want = [_brute_rank(q[i], v, truth[i], exclude[i]) for i in range(20)]
    np.testing.assert_array_equal(got, want)
    no_ex = truth_ranks(q, v, truth, None)
    np.testing.assert_array_equal(no_ex, [_brute_rank(q[i], v, truth[i], []) for i in range(20)])


def test_search_drops_excluded_rows_and_keeps_order(synthetic_payload):
    v = synthetic_payload.vectors
    index = faiss.IndexFlatIP(v.shape[1])
    index.add(v)
    q = v[:3].copy()
    exclude = np.array([[0, 5, 6, 7, 8], [9, 9, 9, 9, 9], [100, 101, 102, 103, 104]])
    hits = search(index, q, 10, exclude)
    _, full = index.search(q, 15)
    for i in range(3):
        assert not set(hits[i]) & set(exclude[i].tolist())
        assert hits[i].tolist() == [r for r in full[i] if r not in exclude[i]][:10]


def test_oracle_gets_rank_one_and_copy_last_cannot_find_itself(synthetic_payload):
    v = synthetic_payload.vectors
    index = faiss.IndexFlatIP(v.shape[1])
    index.add(v)
    seqs = build_windows(synthetic_payload, SplitConfig())["eval"]
    out = evaluate({"oracle": gather(v, seqs.target_row),
                    "copy_last": gather(v, seqs.context_rows[:, -1])}, v, index, seqs)
    assert out["oracle"]["r_at_1"] == 1.0 and out["oracle"]["median_rank"] == 1
    assert out["oracle"]["contain_at_50"] == 1.0
    assert out["copy_last"]["r_at_1"] < 1.0


def test_metric_definitions():
    ranks = np.array([1, 2, 6, 11, 60])
    hits = np.zeros((5, 50), int)
    hits[:3, 0] = [7, 7, 7]
    m = metrics_from(ranks, hits, np.array([7, 7, 7, 8, 8]))
    assert m["r_at_1"] == 0.2 and m["r_at_5"] == 0.4 and m["r_at_10"] == 0.6
    assert m["r_at_50"] == 0.8 and m["contain_at_50"] == 0.6
    assert m["mrr_at_10"] == pytest.approx((1 + 1 / 2 + 1 / 6) / 5)
    assert m["median_rank"] == 6
