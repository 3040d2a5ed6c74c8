"""Truth keys and row numbers are int32: a value that does not fit is refused, never wrapped."""

from __future__ import annotations

import numpy as np
import pytest

from lvm_pipeline.payload import int32_keys


def test_keys_that_fit_are_kept_as_int32():
    keys = int32_keys(np.array([[0, 3], [2**31 - 1, 0]], np.int64), "k.npz truth_keys")
    assert keys.dtype == np.int32 and keys.tolist() == [[0, 3], [2**31 - 1, 0]]
    assert int32_keys(np.empty((0, 2), np.int64), "k").shape == (0, 2)


def test_a_key_beyond_int32_is_refused_naming_the_row_not_wrapped():
    keys = np.array([[0, 1], [2**31 + 5, 2]], np.int64)
    assert keys.astype(np.int32)[1, 0] == -2**31 + 5  # what a plain cast makes of it
    with pytest.raises(ValueError, match=r"^k\.npz truth_keys row 1: \[2147483653, 2\] does not "
                                         r"fit int32 .*refused rather than wrapped"):
        int32_keys(keys, "k.npz truth_keys")


def test_keys_that_are_not_integers_are_refused():
    with pytest.raises(ValueError, match="holds float64 values; keys and rows must be integers"):
        int32_keys(np.array([[1.0, 2.5]]), "k.npz truth_keys")
