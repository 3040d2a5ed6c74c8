"""The truth-key guard: unique keys naming their own target, windows of 6 consecutive chunks."""

from __future__ import annotations

import numpy as np

from lvm_pipeline.guards import check_truth_keys
from lvm_pipeline.sequences.windows import SequenceSet, SplitConfig, build_windows
from lvm_pipeline_tests.guard_cases import modified_copy, train_windows


def test_native_truth_keys_pass(synthetic_payload):
    sets = build_windows(synthetic_payload, SplitConfig())
    result = check_truth_keys(synthetic_payload, sets)
    assert result.passed and result.figure == 0
    assert all(v["key_coverage"] == 1.0 for v in result.details["splits"].values())


def test_duplicate_truth_keys_in_a_set_fail(synthetic_payload):
    s = train_windows(synthetic_payload)
    dup = np.concatenate([np.arange(len(s)), [0, 1, 1]])  # window 0 twice, window 1 three times
    bad = SequenceSet("train", s.context_rows[dup], s.target_row[dup], s.truth_keys[dup])
    result = check_truth_keys(synthetic_payload, {"train": bad})
    assert not result.passed and result.figure == 3
    assert result.details["counts"]["duplicate truth keys in the sets"] == 3
    assert "TRUTH KEYS BROKEN: 3 duplicate truth keys" in result.message
    assert "is used by 3 windows: train window 1" in " ".join(result.examples)


def test_off_by_one_article_index_names_another_chunk(synthetic_payload):
    s = train_windows(synthetic_payload)
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
    s = train_windows(synthetic_payload)
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
    broken = modified_copy(synthetic_payload, chunks=chunks)
    result = check_truth_keys(broken, {"train": train_windows(synthetic_payload)})
    assert not result.passed
    assert result.details["counts"]["duplicate keys in the payload"] == 1
