"""Windows, article splits and the gather path training reads through."""

from __future__ import annotations

import numpy as np
import pytest

from lvm_pipeline.payload.gather import gather
from lvm_pipeline.sequences.windows import (
    SplitConfig,
    article_splits,
    build_windows,
    load_sets,
    native_info,
    publish_sequences,
    require_meaningful_split,
    require_payload,
    windows,
    windows_ref,
)
from lvm_pipeline.store import kinds
from lvm_pipeline.store.artifacts import ArtifactError
from lvm_pipeline_tests.conftest import publish_synthetic_payload


@pytest.mark.parametrize("seed", range(5))
def test_vectorised_windows_match_the_reference_loop(seed):
    rng = np.random.default_rng(seed)
    lengths = rng.integers(1, 15, size=30)
    article = np.repeat(np.arange(30), lengths)
    chunk = np.concatenate([np.arange(n) for n in lengths])
    # Gaps in chunk numbering (a dropped chunk) must break windows, not bridge them.
    chunk[rng.random(len(chunk)) < 0.05] += 1
    ctx, tgt = windows(article, chunk)
    ctx_ref, tgt_ref = windows_ref(article, chunk)
    np.testing.assert_array_equal(ctx, ctx_ref)
    np.testing.assert_array_equal(tgt, tgt_ref)


def test_every_window_is_six_consecutive_chunks_of_one_article(synthetic_payload):
    sets = build_windows(synthetic_payload, SplitConfig())
    table = synthetic_payload.chunks
    for s in sets.values():
        rows = np.concatenate([s.context_rows, s.target_row[:, None]], axis=1)  # (N, 6)
        arts = table.article_index.to_numpy()[rows]
        chunks = table.chunk_index.to_numpy()[rows]
        assert (arts == arts[:, :1]).all()
        assert (np.diff(chunks, axis=1) == 1).all()
        np.testing.assert_array_equal(s.truth_keys[:, 0], arts[:, -1])
        np.testing.assert_array_equal(s.truth_keys[:, 1], chunks[:, -1])


def test_splits_are_article_disjoint_and_cover_every_window(synthetic_payload):
    sets = build_windows(synthetic_payload, SplitConfig(seed=3))
    articles = {k: set(s.articles().tolist()) for k, s in sets.items()}
    assert not (articles["train"] & articles["val"] or articles["train"] & articles["eval"]
                or articles["val"] & articles["eval"])
    ctx, _ = windows(synthetic_payload.chunks.article_index, synthetic_payload.chunks.chunk_index)
    assert sum(len(s) for s in sets.values()) == len(ctx)
    assert all(len(s) > 0 for s in sets.values())


def test_split_does_not_depend_on_corpus_order(synthetic_payload):
    ids = synthetic_payload.chunks.article_id.unique().tolist()
    from lvm_pipeline.sequences.windows import assign_splits

    assert assign_splits(ids, SplitConfig()) == assign_splits(ids[::-1], SplitConfig())


def test_indices_cost_24_bytes_a_window(store, synthetic_payload):
    sets = build_windows(synthetic_payload, SplitConfig())
    build = publish_sequences(store, kinds.TRAIN_SEQUENCES, synthetic_payload, sets,
                              native_info(SplitConfig()))
    n = len(sets["train"])
    assert build.manifest["files"]["train/context_rows.npy"]["bytes"] <= n * 20 + 256
    loaded = load_sets(build)
    np.testing.assert_array_equal(loaded["train"].context_rows, sets["train"].context_rows)
    assert loaded["train"].context_rows.dtype == np.int32


def test_gather_returns_payload_rows_in_any_shape(synthetic_payload):
    rows = np.array([[3, 1], [0, 2]])
    out = gather(synthetic_payload.vectors, rows)
    assert out.shape == (2, 2, synthetic_payload.dim)
    np.testing.assert_array_equal(out[0, 1], synthetic_payload.vectors[1])


def test_sequences_of_another_payload_are_refused(store, synthetic_payload):
    sets = build_windows(synthetic_payload, SplitConfig())
    build = publish_sequences(store, kinds.EVAL_SEQUENCES, synthetic_payload, sets,
                              native_info(SplitConfig()))
    other = publish_synthetic_payload(store, [10] * 12, seed=9)
    with pytest.raises(Exception, match=r"indexes payload .* but the current payload is"):
        require_payload(build, other)


def test_a_stored_split_whose_arrays_disagree_is_refused_naming_the_file(store,
                                                                          synthetic_payload):
    sets = build_windows(synthetic_payload, SplitConfig())
    build = publish_sequences(store, kinds.TRAIN_SEQUENCES, synthetic_payload, sets,
                              native_info(SplitConfig()))
    np.save(build.path / "val" / "context_rows.npy", sets["val"].context_rows[:, :4])
    with pytest.raises(ArtifactError, match=r"/val: split 'val' \(\d+ windows in target_row.npy\): "
                                            r"context_rows.npy has shape \(\d+, 4\), expected "
                                            r"\(\d+, 5\)"):
        load_sets(build, verify=False)  # verify=True would stop at the changed hash first


@pytest.mark.parametrize("n_articles, refused", [(3, True), (14, True), (15, False)])
def test_a_corpus_too_small_to_split_is_refused_with_its_numbers(store, n_articles, refused):
    """Three articles give each split one: a run would score models on one eval text. The
    refusal says what each split got and how many articles would do (15 at 10 % / 10 %)."""
    payload = publish_synthetic_payload(store, [8] * n_articles)
    config = SplitConfig()
    sets = build_windows(payload, config, drop_near_duplicates=False)
    split_of = article_splits(payload, config)
    if not refused:
        require_meaningful_split(split_of, sets, config)
        return
    with pytest.raises(ValueError) as caught:
        require_meaningful_split(split_of, sets, config)
    message = str(caught.value)
    assert f"too small to split meaningfully: its {n_articles} articles with 6+ chunks" in message
    assert f"eval 1 article ({len(sets['eval'])} windows)" in message
    assert "every split needs at least 2 articles" in message
    assert "Give at least 15 such articles" in message


def test_a_payload_key_beyond_int32_is_refused_not_wrapped(synthetic_payload):
    """A payload published elsewhere may carry int64 article indices; a truth key of
    2**31 + 5 must not become -2147483643 in the windows."""
    from lvm_pipeline.payload import Payload

    chunks = synthetic_payload.chunks.copy()
    chunks["article_index"] = chunks["article_index"].astype(np.int64) + 2**31 + 5
    wide = Payload(synthetic_payload.vectors, chunks, dict(synthetic_payload.manifest))
    with pytest.raises(ArtifactError, match=rf"payload {synthetic_payload.build_id[:12]} \w+ "
                                            r"truth keys .*row 0: \[2147483653, \d+\] does not "
                                            "fit int32"):
        build_windows(wide, SplitConfig())
