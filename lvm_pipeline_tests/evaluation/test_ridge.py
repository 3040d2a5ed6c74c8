"""The one ridge solver: closed form, a prior to shrink towards, and a clear refusal of an
empty fit (the learnability guard used to crash in Cholesky there)."""

from __future__ import annotations

import numpy as np
import pytest

from lvm_pipeline.evaluation.ridge import copy_last_prior, normal_equations, solve_ridge
from lvm_pipeline.payload.gather import gather
from lvm_pipeline.sequences.windows import SplitConfig, build_windows


def test_a_prior_is_ridge_on_the_residual(synthetic_payload):
    """Shrinking towards copy-last is the same fit as last context + ridge of the residual
    (target − last context), the learnability guard's predictor."""
    train = build_windows(synthetic_payload, SplitConfig())["train"]
    v = synthetic_payload.vectors
    rows = np.arange(0, len(train), 2)
    xtx, xty = normal_equations(v, train, rows)
    ctx = gather(v, train.context_rows[rows]).astype(np.float64)  # (n, 5, D)
    x = ctx.reshape(len(rows), -1)
    residual = gather(v, train.target_row[rows]) - ctx[:, -1]  # (n, D)
    np.testing.assert_allclose(xtx, x.T @ x, rtol=1e-10, atol=1e-10)
    lam = 1e-2 * len(rows)
    w_residual = np.linalg.solve(x.T @ x + lam * np.eye(x.shape[1]), x.T @ residual)
    w = solve_ridge(xtx, xty, 1e-2, len(rows), copy_last_prior(v.shape[1]))
    np.testing.assert_allclose(x @ w, ctx[:, -1] + x @ w_residual, atol=1e-8)


def test_an_empty_fit_is_refused_with_its_rule():
    with pytest.raises(ValueError, match="ridge needs >= 1 window and a penalty > 0, got 0"):
        solve_ridge(np.zeros((10, 10)), np.zeros((10, 2)), 1e-3, 0)
