"""Retrieval metrics against brute force, with the query's own context excluded."""

from __future__ import annotations

import faiss
import numpy as np
import pytest

from lvm_pipeline.evaluation import metrics as evaluation
from lvm_pipeline.evaluation.metrics import EvalConfig, contrastive_accuracy, evaluate, metrics_from
from lvm_pipeline.payload.gather import gather
from lvm_pipeline.search import exact
from lvm_pipeline.search.exact import exact_pass, truth_ranks
from lvm_pipeline.search.exact import top_k as search
from lvm_pipeline.sequences.windows import SplitConfig, build_windows


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
    _, hits = search(index, q, 10, exclude)
    _, full = index.search(q, 15)
    for i in range(3):
        assert not set(hits[i]) & set(exclude[i].tolist())
        assert hits[i].tolist() == [r for r in full[i] if r not in exclude[i]][:10]


def _noisy_queries(v, n, seed):
    rng = np.random.default_rng(seed)
    truth = rng.integers(0, len(v), n)
    q = np.asarray(v)[truth] + 0.6 * rng.standard_normal((n, v.shape[1]))
    q = (q / np.linalg.norm(q, axis=1, keepdims=True)).astype(np.float32)
    return q, truth, rng.integers(0, len(v), (n, 5))


@pytest.mark.parametrize("exclude", [True, False])
def test_exact_pass_top_k_is_the_flat_index_search_across_blocks(synthetic_payload, exclude,
                                                                 monkeypatch):
    # Blocks of 97 rows and 16 queries: the top-k heaps and the rank counts span both loops.
    monkeypatch.setattr(exact, "PAYLOAD_BLOCK", 97)
    monkeypatch.setattr(exact, "QUERY_BLOCK", 16)
    v = synthetic_payload.vectors  # memory-mapped, as the report reads it
    q, truth, excluded = _noisy_queries(v, 40, seed=1)
    excluded = excluded if exclude else None
    index = faiss.IndexFlatIP(v.shape[1])
    index.add(np.asarray(v))
    want_s, want_i = search(index, q, 10, excluded)
    got_s, got_i, got_rank = exact_pass(q, v, truth, excluded, 10)
    np.testing.assert_allclose(got_s, want_s, atol=1e-5)
    assert (got_i == want_i).mean() > 0.99  # same rows up to the order of exact ties
    want_rank = [_brute_rank(q[i], v, truth[i], [] if excluded is None else excluded[i])
                 for i in range(len(q))]
    np.testing.assert_array_equal(got_rank, want_rank)
    if excluded is not None:
        assert not any(set(got_i[i]) & set(excluded[i].tolist()) for i in range(len(q)))


def test_a_flat_index_is_scored_in_one_pass_with_the_two_pass_figures(synthetic_payload,
                                                                      monkeypatch):
    """With a flat index the CPU report reads the payload once and never searches the index; an
    index that is not flat (here the same vectors behind an id map) takes the index's top 50
    and a rank pass. Both must give the same report."""
    v = synthetic_payload.vectors
    flat = faiss.IndexFlatIP(v.shape[1])
    flat.add(np.asarray(v))
    mapped = faiss.IndexIDMap(faiss.IndexFlatIP(v.shape[1]))
    mapped.add_with_ids(np.asarray(v), np.arange(len(v)))
    seqs = build_windows(synthetic_payload, SplitConfig())["eval"]
    predictions = {"copy_last": gather(v, seqs.context_rows[:, -1]),
                   "mean": gather(v, seqs.context_rows).mean(axis=1)}
    two_pass = evaluate(predictions, v, mapped, seqs)
    monkeypatch.setattr(evaluation, "top_k", None)  # calling it now would raise
    one_pass = evaluate(predictions, v, flat, seqs)
    for name in predictions:
        np.testing.assert_array_equal(one_pass[name].ranks, two_pass[name].ranks)
        for key, value in two_pass[name].metrics.items():
            assert one_pass[name].metrics[key] == pytest.approx(value, abs=1e-6), (name, key)


def test_exact_pass_widens_a_float16_payload(synthetic_payload):
    half = np.asarray(synthetic_payload.vectors).astype(np.float16)
    q, truth, excluded = _noisy_queries(half, 30, seed=3)
    want = exact_pass(q, half.astype(np.float32), truth, excluded, 10)
    got = exact_pass(q, half, truth, excluded, 10)
    np.testing.assert_array_equal(got[2], want[2])
    np.testing.assert_array_equal(got[0], want[0])


def test_oracle_gets_rank_one_and_copy_last_cannot_find_itself(synthetic_payload):
    v = synthetic_payload.vectors
    index = faiss.IndexFlatIP(v.shape[1])
    index.add(v)
    seqs = build_windows(synthetic_payload, SplitConfig())["eval"]
    out = evaluate({"oracle": gather(v, seqs.target_row),
                    "copy_last": gather(v, seqs.context_rows[:, -1])}, v, index, seqs)
    oracle, copy_last = out["oracle"].metrics, out["copy_last"].metrics
    assert oracle["r_at_1"] == 1.0 and oracle["median_rank"] == 1
    assert oracle["contain_at_50"] == 1.0 and oracle["margin_above_0_05_share"] == 1.0
    assert oracle["contrastive_accuracy"] == 1.0 and oracle["paraphrase_ratio"] < 1
    assert oracle["cos_truth_mean"] == pytest.approx(1.0, abs=1e-5)
    assert copy_last["r_at_1"] < 1.0
    # Copying the input is what the paraphrase ratio flags: closer to a context than the truth.
    assert copy_last["paraphrase_ratio"] > 1 and copy_last["paraphrase_share_above_1"] == 1.0
    # Excluding the context is what keeps copy-last from "retrieving" its own input.
    kept = evaluate({"copy_last": gather(v, seqs.context_rows[:, -1])}, v, index, seqs,
                    EvalConfig(exclude_context=False))["copy_last"]
    assert kept.metrics["r_at_1"] < copy_last["r_at_1"] or copy_last["r_at_1"] == 0
    np.testing.assert_array_equal(kept.impostor_rows[:, 0], seqs.context_rows[:, -1])


def test_metric_definitions():
    ranks = np.array([1, 2, 6, 11, 60])
    truth = np.array([7, 7, 7, 8, 8])
    hits = np.tile(np.arange(100, 150), (5, 1))
    hits[:3, 0] = 7  # the truth is the first candidate of queries 0-2
    scores = np.tile(np.linspace(0.9, 0.4, 50), (5, 1)).astype(np.float32)
    cos_truth = np.array([0.9, 0.8, 0.7, 0.6, 0.3])
    m = metrics_from(ranks, hits, scores, truth, cos_truth, np.array([1, 1, 0.5, 0.5, 0]),
                     np.array([0.5, 2, 0.9, 1.1, 3]))
    assert m["r_at_1"] == 0.2 and m["r_at_5"] == 0.4 and m["r_at_10"] == 0.6
    assert m["contain_at_50"] == 0.6  # the candidates the index returned, not the exact ranks
    assert m["eff_at_5"] == pytest.approx(0.4 / 0.6)
    assert m["mrr_at_10"] == pytest.approx((1 + 1 / 2 + 1 / 6) / 5)
    assert m["median_rank"] == 6 and m["rank_share_top_500"] == 1.0
    # The best impostor of queries 0-2 is the second candidate, of 3-4 the first.
    impostor = np.array([scores[0, 1]] * 3 + [scores[0, 0]] * 2)
    assert m["margin_mean"] == pytest.approx(float(np.mean(cos_truth - impostor)), rel=1e-5)
    assert m["margin_above_0_05_share"] == pytest.approx(np.mean(cos_truth - impostor > 0.05))
    assert m["contrastive_accuracy"] == pytest.approx(0.6)
    assert m["paraphrase_ratio"] == 1.1 and m["paraphrase_share_above_1"] == 0.6


def test_contrastive_accuracy_counts_other_targets_further_than_the_truth():
    targets = np.eye(4, dtype=np.float32)
    queries = np.array([[1, 0, 0, 0], [0.6, 0.8, 0, 0], [0, 0.8, 0.6, 0], [0, 0, 0, 1]],
                       np.float32)
    np.testing.assert_allclose(contrastive_accuracy(queries, targets), [1, 1, 2 / 3, 1])


def test_mrr_at_k_counts_ranks_beyond_k_as_zero():
    ranks = np.array([1, 2, 6, 11, 60])
    assert evaluation.mrr_at_k(ranks) == pytest.approx((1 + 1 / 2 + 1 / 6) / 5)
    assert evaluation.mrr_at_k(ranks, k=60) == pytest.approx(np.mean(1 / ranks))
    assert evaluation.mrr_at_k(ranks, k=1) == pytest.approx(0.2)


def test_evaluate_refuses_predictions_of_the_wrong_shape(synthetic_payload):
    v = np.asarray(synthetic_payload.vectors)
    seqs = build_windows(synthetic_payload, SplitConfig())["eval"]
    index = faiss.IndexFlatIP(v.shape[1])
    index.add(v)
    with pytest.raises(ValueError, match=r"predictions 'short' are \(2, 32\); the eval set "
                                         r"'eval' needs \(\d+, 32\), one per window"):
        evaluation.evaluate({"short": v[:2]}, v, index, seqs)
