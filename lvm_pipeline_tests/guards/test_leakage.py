"""The leakage guard and the near-duplicate search it shares with split construction."""

from __future__ import annotations

import numpy as np
import pytest

from lvm_pipeline.corpus.chunking import text_sha256
from lvm_pipeline.guards import check_split_leakage
from lvm_pipeline.sequences.near_duplicates import near_duplicates, near_duplicates_ref
from lvm_pipeline.sequences.windows import (
    SequenceSet,
    SplitConfig,
    build_windows,
    drop_near_duplicate_windows,
)
from lvm_pipeline_tests.guard_cases import modified_copy


def test_article_disjoint_native_splits_do_not_leak(synthetic_payload):
    sets = build_windows(synthetic_payload, SplitConfig())
    result = check_split_leakage(synthetic_payload, sets)
    assert result.passed and result.figure == 0
    assert set(result.details["pairs"]) == {"train/val", "train/eval", "val/eval"}


def test_shared_article_text_and_near_duplicate_are_counted_per_pair(synthetic_payload):
    sets = build_windows(synthetic_payload, SplitConfig())
    train, val, ev = sets["train"], sets["val"], sets["eval"]
    # 1) eval also holds one train window: shared article (and its texts and vectors).
    ev_leaky = SequenceSet("eval", np.concatenate([ev.context_rows, train.context_rows[:1]]),
                           np.concatenate([ev.target_row, train.target_row[:1]]),
                           np.concatenate([ev.truth_keys, train.truth_keys[:1]]))
    result = check_split_leakage(synthetic_payload, {"train": train, "val": val, "eval": ev_leaky})
    pair = result.details["pairs"]["train/eval"]
    assert not result.passed and pair["articles"] == 1 and pair["texts"] == 6
    assert result.details["pairs"]["train/val"] == {"articles": 0, "texts": 0,
                                                    "near_duplicates": 0}
    assert "train/eval: 1 articles, 6 texts, 6 near-duplicates" in result.message
    assert any("share article 'art-" in e for e in result.examples)
    # 2) one val chunk has the text of a train chunk (normalised hash), nothing else shared.
    chunks = synthetic_payload.chunks.copy()
    v_row, t_row = int(val.target_row[0]), int(train.target_row[0])
    chunks.loc[v_row, "text"] = chunks.loc[t_row, "text"].upper() + "!"
    chunks["text_sha256"] = [text_sha256(t) for t in chunks["text"]]
    result = check_split_leakage(modified_copy(synthetic_payload, chunks=chunks), sets)
    assert result.details["pairs"]["train/val"]["texts"] == 1 and not result.passed
    # 3) one eval chunk is a near-copy (cos > 0.995) of a val chunk.
    vectors = np.array(synthetic_payload.vectors)
    e_row, v_row = int(ev.target_row[0]), int(val.context_rows[0, 0])
    near = vectors[v_row] + 0.01 * vectors[e_row]
    vectors[e_row] = near / np.linalg.norm(near)
    result = check_split_leakage(modified_copy(synthetic_payload, vectors=vectors), sets)
    assert result.details["pairs"]["val/eval"]["near_duplicates"] == 1
    assert any("val/eval near-duplicate chunks (cos " in e for e in result.examples)


@pytest.mark.parametrize("seed", range(3))
def test_near_duplicate_search_matches_the_reference(seed):
    rng = np.random.default_rng(seed)
    vectors = rng.standard_normal((300, 16)).astype(np.float32)
    vectors[rng.choice(300, 20, replace=False)] = vectors[rng.choice(300, 20)] + 0.01
    a, b = np.arange(0, 150), np.arange(150, 300)
    fast = near_duplicates(vectors, a, b, 0.995)
    ref = near_duplicates_ref(vectors, a, b, 0.995)
    print("hits", len(fast[0]), "max cos diff", np.abs(fast[2] - ref[2]).max(initial=0))
    np.testing.assert_array_equal(fast[0], ref[0])
    np.testing.assert_array_equal(fast[1], ref[1])
    np.testing.assert_allclose(fast[2], ref[2], atol=1e-5)


@pytest.mark.parametrize("dim", [128, 768])
def test_cell_search_finds_every_planted_near_duplicate(dim):
    """Above EXACT_PAIRS the search uses cells; on corpus-like vectors (articles, drift) it
    must find exactly what comparing every pair finds, planted pairs from 0.995 to 0.9999."""
    from lvm_pipeline.synthetic.payload import SyntheticPayloadConfig, article_lengths, generate_vectors

    config = SyntheticPayloadConfig(articles=300, chunks=20_000, dim=dim, median_chunks=40,
                                    p95_chunks=200)
    vectors = np.empty((config.chunks, dim), np.float32)
    generate_vectors(config, article_lengths(config), vectors)
    rng = np.random.default_rng(1)
    a, b = np.arange(0, 8000), np.arange(8000, 20_000)
    planted = rng.choice(b, 300, replace=False)
    for row, target_cos in zip(planted, rng.uniform(0.9955, 0.9999, 300), strict=True):
        source = vectors[rng.choice(a)]
        noise = rng.standard_normal(dim)
        noise -= noise @ source * source
        noise /= np.linalg.norm(noise)
        vectors[row] = target_cos * source + np.sqrt(1 - target_cos**2) * noise
    cells = near_duplicates(vectors, a, b, 0.995, exact=False)
    every_pair = near_duplicates(vectors, a, b, 0.995, exact=True)
    assert set(planted) <= set(every_pair[0].tolist())
    np.testing.assert_array_equal(cells[0], every_pair[0])
    np.testing.assert_array_equal(cells[1], every_pair[1])


def test_split_construction_drops_windows_that_would_leak_a_near_duplicate(synthetic_payload):
    sets = build_windows(synthetic_payload, SplitConfig())
    vectors = np.array(synthetic_payload.vectors)
    shared = int(sets["train"].target_row[3])
    vectors[int(sets["eval"].target_row[0])] = vectors[shared]  # boilerplate in two articles
    kept, dropped = drop_near_duplicate_windows(vectors, sets, 0.995)
    users = np.isin(sets["train"].window_rows(), [shared]).any(axis=1)
    assert dropped == {"val": 0, "train": int(users.sum())} and users.sum() >= 1
    assert len(kept["eval"]) == len(sets["eval"])  # eval, the yardstick, is never changed
    assert shared not in kept["train"].rows()
    leaky = modified_copy(synthetic_payload, vectors=vectors)
    assert not check_split_leakage(leaky, sets).passed
    assert check_split_leakage(leaky, kept).passed
