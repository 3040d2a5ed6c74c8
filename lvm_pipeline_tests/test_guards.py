"""Every guard on seeded synthetic data: the sound case passes, each way of breaking it fails
with the rule, the figure, the threshold and example rows."""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd
import pytest

from lvm_pipeline.corpus import text_sha256
from lvm_pipeline.guards import (
    GuardConfig,
    GuardError,
    check_alignment,
    check_embedder_canary,
    check_learnability,
    check_lineage,
    check_payload_integrity,
    check_split_leakage,
    check_truth_keys,
    require_passed,
)
from lvm_pipeline.payload import Payload
from lvm_pipeline.sequences import (
    EVAL_KIND,
    SequenceSet,
    SplitConfig,
    build_windows,
    drop_near_duplicate_windows,
    native_info,
    near_duplicates,
    near_duplicates_ref,
    publish_sequences,
)
from lvm_pipeline_tests.conftest import (
    LookupEncoder,
    publish_synthetic_payload,
    synthetic_table,
    synthetic_vectors,
)


def _train(payload) -> SequenceSet:
    return build_windows(payload, SplitConfig())["train"]


def _in_memory(payload: Payload, vectors: np.ndarray | None = None,
               chunks: pd.DataFrame | None = None) -> Payload:
    """A modified copy of a payload (not published): unit tests break one thing at a time."""
    return Payload(np.array(payload.vectors) if vectors is None else vectors,
                   payload.chunks.copy() if chunks is None else chunks,
                   {**payload.manifest, "build_id": "f" * 64})


# --------------------------------------------------------------------------- alignment


def test_native_windows_are_aligned_at_cosine_one(synthetic_payload):
    result = check_alignment(synthetic_payload, {"train": _train(synthetic_payload)})
    assert result.passed and result.figure > 0.9999
    assert result.details["splits"]["train"]["target_cos_min"] > 0.9999


def test_shuffled_target_rows_fail_with_the_figure_and_examples(synthetic_payload):
    s = _train(synthetic_payload)
    rng = np.random.default_rng(0)
    bad = SequenceSet("train", s.context_rows, s.target_row[rng.permutation(len(s))], s.truth_keys)
    result = check_alignment(synthetic_payload, {"train": bad})
    assert not result.passed and result.figure < 0.9
    assert "MISALIGNED" in result.message and "threshold 0.99" in result.message
    assert result.examples and "truth key (article" in result.examples[0]


def test_off_by_one_article_keys_fail(synthetic_payload):
    s = _train(synthetic_payload)
    keys = s.truth_keys.copy()
    keys[:, 0] += 1
    result = check_alignment(synthetic_payload,
                             {"train": SequenceSet("train", s.context_rows, s.target_row, keys)})
    assert not result.passed


def test_aligned_targets_with_foreign_contexts_fail_on_the_context_half(synthetic_payload):
    s = _train(synthetic_payload)
    context_cos = np.full(s.context_rows.shape, 0.15, np.float32)
    foreign_ctx = SequenceSet("train", s.context_rows, s.target_row, s.truth_keys,
                              target_cos=np.ones(len(s), np.float32), context_cos=context_cos)
    result = check_alignment(synthetic_payload, {"train": foreign_ctx})
    stats = result.details["splits"]["train"]
    assert not result.passed
    assert stats["target_cos_min"] > 0.99 and stats["context_cos_min"] < 0.2


def test_rows_outside_the_payload_fail(synthetic_payload):
    s = _train(synthetic_payload)
    rows = s.target_row.copy()
    rows[0] = len(synthetic_payload) + 3
    result = check_alignment(synthetic_payload,
                             {"train": SequenceSet("train", s.context_rows, rows, s.truth_keys)})
    assert not result.passed and "outside the payload" in result.message


# --------------------------------------------------------------------------- truth keys


def test_native_truth_keys_pass(synthetic_payload):
    sets = build_windows(synthetic_payload, SplitConfig())
    result = check_truth_keys(synthetic_payload, sets)
    assert result.passed and result.figure == 0
    assert all(v["key_coverage"] == 1.0 for v in result.details["splits"].values())


def test_duplicate_truth_keys_in_a_set_fail(synthetic_payload):
    s = _train(synthetic_payload)
    dup = np.concatenate([np.arange(len(s)), [0, 1, 1]])  # window 0 twice, window 1 three times
    bad = SequenceSet("train", s.context_rows[dup], s.target_row[dup], s.truth_keys[dup])
    result = check_truth_keys(synthetic_payload, {"train": bad})
    assert not result.passed and result.figure == 3
    assert result.details["counts"]["duplicate truth keys in the sets"] == 3
    assert "TRUTH KEYS BROKEN: 3 duplicate truth keys" in result.message
    assert "is used by 3 windows: train window 1" in " ".join(result.examples)


def test_off_by_one_article_index_names_another_chunk(synthetic_payload):
    s = _train(synthetic_payload)
    keys = s.truth_keys.copy()
    keys[:, 0] += 1  # the reference's bug: every key points into the next article
    result = check_truth_keys(synthetic_payload,
                              {"train": SequenceSet("train", s.context_rows, s.target_row, keys)})
    counts = result.details["counts"]
    assert not result.passed
    assert counts["truth keys naming another chunk than the window's target"] > 0.5 * len(s)
    example = next(e for e in result.examples if "names row" in e)
    assert "but the target vector is row" in example and "article 'art-" in example


def test_windows_that_are_not_consecutive_chunks_fail(synthetic_payload):
    s = _train(synthetic_payload)
    ctx = s.context_rows.copy()
    ctx[:4, 2] = ctx[:4, 2] + 40  # a chunk from elsewhere in the middle of four windows
    result = check_truth_keys(synthetic_payload,
                              {"train": SequenceSet("train", ctx, s.target_row, s.truth_keys)})
    assert not result.passed
    assert result.details["splits"]["train"]["not_consecutive"] == 4
    assert any("(article:chunk)" in e for e in result.examples)


def test_duplicate_keys_in_the_payload_fail(synthetic_payload):
    chunks = synthetic_payload.chunks.copy()
    chunks.loc[5, "chunk_index"] = chunks.loc[4, "chunk_index"]
    broken = _in_memory(synthetic_payload, chunks=chunks)
    result = check_truth_keys(broken, {"train": _train(synthetic_payload)})
    assert not result.passed
    assert result.details["counts"]["duplicate keys in the payload"] == 1


# --------------------------------------------------------------------------- leakage


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
    result = check_split_leakage(_in_memory(synthetic_payload, chunks=chunks), sets)
    assert result.details["pairs"]["train/val"]["texts"] == 1 and not result.passed
    # 3) one eval chunk is a near-copy (cos > 0.995) of a val chunk.
    vectors = np.array(synthetic_payload.vectors)
    e_row, v_row = int(ev.target_row[0]), int(val.context_rows[0, 0])
    near = vectors[v_row] + 0.01 * vectors[e_row]
    vectors[e_row] = near / np.linalg.norm(near)
    result = check_split_leakage(_in_memory(synthetic_payload, vectors=vectors), sets)
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
    from lvm_pipeline.synthetic_payload import (
        SyntheticPayloadConfig,
        article_lengths,
        generate_vectors,
    )

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
    leaky = _in_memory(synthetic_payload, vectors=vectors)
    assert not check_split_leakage(leaky, sets).passed
    assert check_split_leakage(leaky, kept).passed


# --------------------------------------------------------------------------- payload


def _sound_payload(n_articles: int = 12, dim: int = 32) -> Payload:
    lengths = [10] * n_articles
    return Payload(synthetic_vectors(lengths, dim, seed=3), synthetic_table(lengths),
                   {"build_id": "a" * 64, "embedder": {"id": "synthetic"}})


def test_a_sound_payload_passes_integrity():
    result = check_payload_integrity(_sound_payload(), expected_dim=32)
    assert result.passed and result.figure == 0 and "sound" in result.message


@pytest.mark.parametrize("defect, rule", [
    ("nan", "rows with NaN or inf"),
    ("norm", "rows with norm off 1 by more than 0.001"),
    ("dim", "rows of dim 32 instead of the embedder's 48"),
    ("duplicate_key", "duplicate (article, chunk) keys"),
    ("duplicate_vector", "duplicate vectors"),
    ("empty_text", "empty texts"),
    ("duplicate_text", "duplicate texts"),
])
def test_each_payload_defect_fails_integrity_with_its_rule(defect, rule):
    p = _sound_payload()
    vectors, chunks, expected_dim = np.array(p.vectors), p.chunks.copy(), 32
    if defect == "nan":
        vectors[7, 3] = np.nan
    elif defect == "norm":
        vectors[7] *= 1.5
    elif defect == "dim":
        expected_dim = 48
    elif defect == "duplicate_key":
        chunks.loc[7, "chunk_index"] = 6
    elif defect == "duplicate_vector":
        vectors[7] = vectors[3]
    elif defect == "empty_text":
        chunks.loc[7, "text"] = " -- "
    else:
        chunks.loc[7, "text"] = chunks.loc[3, "text"]
    result = check_payload_integrity(Payload(vectors, chunks, p.manifest), expected_dim)
    assert not result.passed
    assert rule in result.details["counts"] and result.figure >= 1
    assert "PAYLOAD BROKEN: " in result.message and rule in result.message
    if defect != "dim":
        assert any("row 7 = article 'art-0' (index 0) chunk" in e for e in result.examples)


def test_canary_passes_when_the_encoder_reproduces_the_payload():
    p = _sound_payload()
    result = check_embedder_canary(p, LookupEncoder(p), GuardConfig(canary_sample=16))
    assert result.passed and result.figure > 0.9999
    assert len(result.details["rows"]) == 16


def test_canary_blocks_same_name_other_encoder():
    p = _sound_payload()
    q, _ = np.linalg.qr(np.random.default_rng(0).standard_normal((p.dim, p.dim)))
    other = LookupEncoder(p, transform=lambda v: (v @ q).astype(np.float32))
    result = check_embedder_canary(p, other, GuardConfig(canary_sample=16))
    assert not result.passed and result.figure < 0.9
    assert "ENCODER MISMATCH" in result.message and "below 0.99" in result.message
    assert "configured embedder 'synthetic'" in result.message
    assert result.examples and "article 'art-" in result.examples[0]
    wrong_dim = check_embedder_canary(p, LookupEncoder(p, dim=48))
    assert not wrong_dim.passed and "makes 48-d vectors, the payload holds 32-d" in wrong_dim.message


# --------------------------------------------------------------------------- learnability


def test_aligned_windows_are_learnable_and_misaligned_ones_are_not(synthetic_payload):
    sets = build_windows(synthetic_payload, SplitConfig())
    ok = check_learnability(synthetic_payload, sets["train"], sets["val"])
    print(ok.message)
    assert ok.passed and ok.figure >= ok.threshold
    assert ok.details["chance"] == pytest.approx(ok.details["k"] / (len(synthetic_payload) - 5))
    rng = np.random.default_rng(0)
    for split in ("train", "val"):
        # Targets that are some other chunk of the corpus: what aligning another encoder's
        # vectors to their nearest payload rows gives. (Shuffling within a split of 4 articles
        # would keep each target in its topic.)
        broken = dict(sets)
        s = sets[split]
        random_rows = rng.integers(0, len(synthetic_payload), len(s)).astype(np.int32)
        broken[split] = SequenceSet(split, s.context_rows, random_rows, s.truth_keys)
        bad = check_learnability(synthetic_payload, broken["train"], broken["val"])
        print(split, bad.message)
        assert not bad.passed, split
        assert "NOT LEARNABLE" in bad.message and "chance" in bad.message
        assert f"threshold 10× = {bad.threshold:.4f}" in bad.message


def test_learnability_threshold_is_configurable(synthetic_payload):
    sets = build_windows(synthetic_payload, SplitConfig())
    strict = check_learnability(synthetic_payload, sets["train"], sets["val"],
                                GuardConfig(min_learnability_ratio=1e6))
    assert not strict.passed and strict.threshold > 1


# --------------------------------------------------------------------------- index, lineage, suites


def test_index_guard_wants_every_sampled_row_to_find_itself(synthetic_payload):
    from lvm_pipeline.guards import check_index
    from lvm_pipeline.index import IndexConfig, build_index

    ok = check_index(build_index(synthetic_payload.vectors, IndexConfig()), synthetic_payload)
    assert ok.passed and ok.figure == 1.0
    shuffled = np.array(synthetic_payload.vectors)[np.random.default_rng(0).permutation(
        len(synthetic_payload))]
    bad = check_index(build_index(shuffled, IndexConfig()), synthetic_payload)
    assert not bad.passed and "INDEX DISAGREES WITH PAYLOAD" in bad.message


def test_lineage_names_both_build_ids(store, synthetic_payload):
    build = publish_sequences(store, EVAL_KIND, synthetic_payload,
                              build_windows(synthetic_payload, SplitConfig()),
                              native_info(SplitConfig()))
    assert check_lineage(store, build).passed
    other = publish_synthetic_payload(store, [10] * 12, seed=9)
    result = check_lineage(store, build)
    assert not result.passed and "STALE LINEAGE" in result.message
    assert (f"built from payload {synthetic_payload.build_id[:12]}, but the current payload is "
            f"{other.build_id[:12]}") in result.examples[0]


def test_require_passed_raises_with_every_failed_guard(synthetic_payload):
    s = _train(synthetic_payload)
    keys = s.truth_keys.copy()
    keys[:, 0] += 1
    bad = {"train": SequenceSet("train", s.context_rows, s.target_row, keys)}
    with pytest.raises(GuardError, match=r"(?s)MISALIGNED.*TRUTH KEYS BROKEN"):
        require_passed([check_alignment(synthetic_payload, bad),
                        check_truth_keys(synthetic_payload, bad)])


def test_guard_resource_exposes_every_guard_threshold():
    from lvm_pipeline.defs.resources import GuardsResource

    assert GuardsResource().config() == GuardConfig()
    assert set(GuardsResource.model_fields) == {f.name for f in dataclasses.fields(GuardConfig)}
