"""The forward signal: mean cos(last context, next) − cos(last context, previous), the same
number a direct numpy computation gives, in blocks or not, with an interval around it."""

from __future__ import annotations

import numpy as np
import pytest

from lvm_pipeline.evaluation import forward_signal as module
from lvm_pipeline.evaluation import (
    forward_signal_per_window,
    forward_signal_text,
    measure_forward_signal,
)
from lvm_pipeline.sequences.windows import SequenceSet, SplitConfig, build_windows


def _direct(vectors: np.ndarray, seqs: SequenceSet) -> float:
    """The definition, one window at a time."""
    def cos(a: np.ndarray, b: np.ndarray) -> float:
        return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))

    values = [cos(vectors[c[-1]], vectors[t]) - cos(vectors[c[-1]], vectors[c[-2]])
              for c, t in zip(seqs.context_rows, seqs.target_row, strict=True)]
    return float(np.mean(values))


def test_forward_signal_is_the_mean_of_the_direct_computation(synthetic_payload, monkeypatch):
    seqs = build_windows(synthetic_payload, SplitConfig())["eval"]
    vectors = np.asarray(synthetic_payload.vectors)
    signal = measure_forward_signal(vectors, seqs)
    assert signal["value"] == pytest.approx(_direct(vectors, seqs), abs=1e-6)
    assert signal["low"] <= signal["value"] <= signal["high"]
    assert signal["n_windows"] == len(seqs) and signal["level"] == 0.95
    # Gathered in blocks: the block size changes nothing.
    monkeypatch.setattr(module, "BLOCK", 3)
    np.testing.assert_allclose(forward_signal_per_window(vectors, seqs),
                               forward_signal_per_window(vectors, seqs, np.arange(len(seqs))))
    assert measure_forward_signal(vectors, seqs) == signal
    assert f"{signal['value']:+.4f}" in forward_signal_text(signal)


def test_a_text_that_runs_forward_has_a_positive_signal_and_its_reverse_a_negative_one():
    # Chunk 4 (the last context) equals chunk 5 (next) and is orthogonal to chunk 3 (previous).
    vectors = np.zeros((6, 3), np.float32)
    vectors[:3, 0] = 1.0
    vectors[3, 1] = 1.0
    vectors[4:, 2] = 2.0  # cosine, not the dot product: norms do not count
    forward = SequenceSet("eval", np.array([[0, 1, 2, 3, 4]], np.int32), np.array([5], np.int32),
                          np.array([[0, 5]], np.int32))
    assert measure_forward_signal(vectors, forward)["value"] == pytest.approx(1.0)
    backward = SequenceSet("eval", np.array([[0, 1, 2, 5, 4]], np.int32),
                           np.array([3], np.int32), np.array([[0, 3]], np.int32))
    assert measure_forward_signal(vectors, backward)["value"] == pytest.approx(-1.0)
    empty = SequenceSet("eval", np.zeros((0, 5), np.int32), np.zeros(0, np.int32),
                        np.zeros((0, 2), np.int32))
    assert measure_forward_signal(vectors, empty)["value"] is None
