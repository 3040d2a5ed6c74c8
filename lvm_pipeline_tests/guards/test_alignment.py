"""The alignment guard: targets and contexts are the payload vectors their truth keys name."""

from __future__ import annotations

import numpy as np

from lvm_pipeline.guards import check_alignment
from lvm_pipeline.sequences.windows import SequenceSet
from lvm_pipeline_tests.guard_cases import train_windows


def test_native_windows_are_aligned_at_cosine_one(synthetic_payload):
    result = check_alignment(synthetic_payload, {"train": train_windows(synthetic_payload)})
    assert result.passed and result.figure > 0.9999
    assert result.details["splits"]["train"]["target_cos_min"] > 0.9999


def test_shuffled_target_rows_fail_with_the_figure_and_examples(synthetic_payload):
    s = train_windows(synthetic_payload)
    rng = np.random.default_rng(0)
    bad = SequenceSet("train", s.context_rows, s.target_row[rng.permutation(len(s))], s.truth_keys)
    result = check_alignment(synthetic_payload, {"train": bad})
    assert not result.passed and result.figure < 0.9
    assert "MISALIGNED" in result.message and "threshold 0.99" in result.message
    assert result.examples and "truth key (article" in result.examples[0]


def test_off_by_one_article_keys_fail(synthetic_payload):
    s = train_windows(synthetic_payload)
    keys = s.truth_keys.copy()
    keys[:, 0] += 1
    result = check_alignment(synthetic_payload,
                             {"train": SequenceSet("train", s.context_rows, s.target_row, keys)})
    assert not result.passed


def test_aligned_targets_with_foreign_contexts_fail_on_the_context_half(synthetic_payload):
    s = train_windows(synthetic_payload)
    context_cos = np.full(s.context_rows.shape, 0.15, np.float32)
    foreign_ctx = SequenceSet("train", s.context_rows, s.target_row, s.truth_keys,
                              target_cos=np.ones(len(s), np.float32), context_cos=context_cos)
    result = check_alignment(synthetic_payload, {"train": foreign_ctx})
    stats = result.details["splits"]["train"]
    assert not result.passed
    assert stats["target_cos_min"] > 0.99 and stats["context_cos_min"] < 0.2


def test_rows_outside_the_payload_fail(synthetic_payload):
    s = train_windows(synthetic_payload)
    rows = s.target_row.copy()
    rows[0] = len(synthetic_payload) + 3
    result = check_alignment(synthetic_payload,
                             {"train": SequenceSet("train", s.context_rows, rows, s.truth_keys)})
    assert not result.passed and "outside the payload" in result.message
