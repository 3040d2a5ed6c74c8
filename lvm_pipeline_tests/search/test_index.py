"""Index types against the readable exact search, and what a published index remembers."""

from __future__ import annotations

import faiss
import numpy as np
import pytest

from lvm_pipeline.search.index import (
    IndexConfig,
    build_index,
    load_index,
    publish_index,
    recall_at_k,
    search_ref,
    self_recall,
)
from lvm_pipeline_tests.conftest import publish_synthetic_payload


def _queries(vectors: np.ndarray, n: int = 40) -> np.ndarray:
    rng = np.random.default_rng(3)
    q = vectors[rng.integers(0, len(vectors), n)] + 0.4 * rng.standard_normal((n, vectors.shape[1]))
    return (q / np.linalg.norm(q, axis=1, keepdims=True)).astype(np.float32)


def test_search_ref_is_brute_force_top_k_across_blocks(synthetic_payload):
    v = np.asarray(synthetic_payload.vectors)
    q = _queries(v)
    scores, rows = search_ref(v, q, 10, block=37)
    full = q @ v.T
    want = np.argsort(-full, axis=1, kind="stable")[:, :10]
    np.testing.assert_array_equal(rows, want)
    np.testing.assert_allclose(scores, np.take_along_axis(full, want, axis=1), atol=1e-6)


@pytest.mark.parametrize(("config", "min_recall"), [
    (IndexConfig(), 1.0),
    (IndexConfig(type="fp16"), 0.99),
    (IndexConfig(type="sq8"), 0.9),
    (IndexConfig(type="ivf_flat", nlist=8, nprobe=8), 1.0),  # every cell probed = exact
    (IndexConfig(type="ivf_flat", nlist=8, nprobe=2), 0.3),  # 2 of 8 cells: approximate
])
def test_each_index_type_against_exact_search(synthetic_payload, config, min_recall):
    v = np.asarray(synthetic_payload.vectors)
    q = _queries(v)
    _, exact = search_ref(v, q, 20)
    _, found = build_index(v, config).search(q, 20)
    recall = recall_at_k(found, exact)
    assert recall >= min_recall, recall


def test_ivf_refuses_a_payload_too_small_for_its_cells(synthetic_payload):
    with pytest.raises(ValueError, match=r"ivf_flat with nlist 1024 needs >= 39936 rows"):
        build_index(np.asarray(synthetic_payload.vectors), IndexConfig(type="ivf_flat"))
    with pytest.raises(ValueError, match="need 1 <= nprobe <= nlist"):
        IndexConfig(type="ivf_flat", nlist=4, nprobe=8)


def test_published_ivf_index_reloads_with_its_nprobe(store):
    payload = publish_synthetic_payload(store, [30] * 40)
    config = IndexConfig(type="ivf_flat", nlist=16, nprobe=5)
    build = publish_index(store, payload, config)
    assert build.manifest["params"] == {"nlist": 16, "nprobe": 5, "train_sample": 65536}
    assert build.manifest["exact"] is False and build.manifest["self_recall_at_1"] == 1.0
    index = load_index(build, payload)
    assert faiss.extract_index_ivf(index).nprobe == 5
    flat = load_index(publish_index(store, payload, IndexConfig()), payload)
    assert flat.ntotal == len(payload)


def test_self_recall_is_strict_a_permuted_index_finds_almost_no_row_itself(synthetic_payload):
    """Same vectors in another order tie with every query's own score; only the row number
    tells them apart, so a tie-counting recall would report 1.0 here."""
    v = np.asarray(synthetic_payload.vectors)
    assert self_recall(build_index(v, IndexConfig()), v, 256, seed=0) == 1.0
    order = np.random.default_rng(0).permutation(len(v))
    permuted = build_index(v[order], IndexConfig())
    recall = self_recall(permuted, v, 256, seed=0)
    print("permuted self-recall", recall, "fixed points", int((order == np.arange(len(v))).sum()))
    assert recall < 0.05


def test_search_inputs_are_checked_without_asserts(synthetic_payload):
    v = np.asarray(synthetic_payload.vectors)
    with pytest.raises(ValueError, match=r"queries are \(3, 8\); searching .* needs \(Q, 32\)"):
        search_ref(v, np.zeros((3, 8), np.float32), 5)
    with pytest.raises(ValueError, match="must have one shape"):
        recall_at_k(np.zeros((2, 3)), np.zeros((2, 4)))
