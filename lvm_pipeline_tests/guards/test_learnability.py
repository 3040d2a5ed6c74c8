"""The learnability smoke test: aligned windows pass, misaligned ones fail, and too little data
fails with its rule instead of crashing."""

from __future__ import annotations

import numpy as np
import pytest

from lvm_pipeline.evaluation import forward_signal_per_window
from lvm_pipeline.guards import GuardConfig, check_learnability
from lvm_pipeline.guards.learnability import _held_out_articles
from lvm_pipeline.sequences.windows import SequenceSet, SplitConfig, build_windows
from lvm_pipeline_tests.conftest import publish_synthetic_payload


def test_aligned_windows_are_learnable_and_misaligned_ones_are_not(synthetic_payload):
    sets = build_windows(synthetic_payload, SplitConfig())
    ok = check_learnability(synthetic_payload, sets["train"], sets["val"])
    print(ok.message)
    assert ok.passed and ok.figure >= ok.threshold
    assert ok.details["chance"] == pytest.approx(ok.details["k"] / (len(synthetic_payload) - 5))
    # The forward signal of the windows it read, recorded beside the verdict (every window of
    # a set this small is read).
    for split in ("train", "val"):
        assert ok.details[f"forward_signal_{split}"] == pytest.approx(
            forward_signal_per_window(synthetic_payload.vectors, sets[split]).mean())
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


def _article_windows(split: str, articles: list[int], chunks: int) -> SequenceSet:
    """Every window of ``articles`` in a payload of equal articles of ``chunks`` chunks."""
    ctx, tgt, keys = [], [], []
    for a in articles:
        for c in range(5, chunks):
            ctx.append([a * chunks + c - 5 + j for j in range(5)])
            tgt.append(a * chunks + c)
            keys.append([a, c])
    return SequenceSet(split, np.array(ctx, np.int32), np.array(tgt, np.int32),
                       np.array(keys, np.int32))


def test_every_train_article_is_never_held_out():
    """Holding out every train article left the fit empty, and Cholesky crashed on it."""
    for seed in range(200):
        held = _held_out_articles(np.array([3, 7]), seed)
        assert len(held) < 2, seed
    assert len(_held_out_articles(np.array([3]), 0)) == 0


def test_tiny_sets_give_a_verdict_with_rule_figure_and_threshold(store):
    payload = publish_synthetic_payload(store, [8, 8, 8])  # 24 rows, 3 windows per article
    train, val = _article_windows("train", [0, 1], 8), _article_windows("val", [2], 8)
    for seed in range(30):  # seed 24 held out both train articles before the fix
        result = check_learnability(payload, train, val, GuardConfig(seed=seed))
        assert "Contain@1 >= 10 × chance" in result.rule, seed
        assert result.figure is not None and result.threshold == pytest.approx(10 / 19), seed
        assert result.details["fit_windows"] > result.details["heldout_windows"], seed


def test_too_little_data_to_judge_fails_with_the_reason(store):
    payload = publish_synthetic_payload(store, [7, 7])  # 14 rows: 10 × chance = 10/9 > 1
    train, val = _article_windows("train", [0], 7), _article_windows("val", [1], 7)
    result = check_learnability(payload, train, val)
    assert not result.passed and result.threshold > 1 and "Contain@1" in result.rule
    assert "cannot judge on a payload of 14 rows" in result.message
    assert "needs >= 15 rows" in result.message
    one = check_learnability(payload, SequenceSet("train", train.context_rows[:1],
                                                  train.target_row[:1], train.truth_keys[:1]), val)
    assert not one.passed and "cannot measure with 1 train and 2 val windows" in one.message
