"""The one row normalisation, row cosine and row sampler."""

from __future__ import annotations

import numpy as np

from lvm_pipeline.embedding.vectors import row_norms, rowwise_cos, sample_rows, unit_rows


def test_unit_rows_are_float32_contiguous_unit_rows_and_zero_rows_stay_zero():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((6, 3, 16)) * 40  # (..., D) float64, far from unit
    x[2, 1] = 0.0
    out = unit_rows(x)
    assert out.dtype == np.float32 and out.flags.c_contiguous and out.shape == x.shape
    norms = row_norms(out)
    assert norms[2, 1] == 0.0
    np.testing.assert_allclose(np.delete(norms.reshape(-1), 2 * 3 + 1), 1.0, atol=1e-6)
    np.testing.assert_allclose(unit_rows(x.astype(np.float16)), out, atol=2e-3)
    strided = x[:, 0, ::2]
    np.testing.assert_array_equal(unit_rows(strided), unit_rows(np.ascontiguousarray(strided)))


def test_rowwise_cos_is_the_float64_cosine_and_zero_for_a_zero_row():
    a = np.array([[1.0, 0.0], [3.0, 4.0], [0.0, 0.0]], np.float32)
    b = np.array([[0.0, 2.0], [3.0, 4.0], [1.0, 0.0]], np.float32)
    np.testing.assert_allclose(rowwise_cos(a, b), [0.0, 1.0, 0.0])


def test_sample_rows_is_seeded_sorted_and_distinct():
    rows = sample_rows(1000, 64, seed=3)
    assert len(np.unique(rows)) == 64 and np.all(np.diff(rows) > 0) and rows.max() < 1000
    np.testing.assert_array_equal(rows, sample_rows(1000, 64, seed=3))
    np.testing.assert_array_equal(sample_rows(10, 64, seed=3), np.arange(10))
