"""Baselines: shapes, and a ridge that finds a linear next-chunk rule when there is one."""

from __future__ import annotations

import faiss
import numpy as np

from lvm_pipeline import ridge as ridge_module
from lvm_pipeline.baselines import copy_last_context, fit_ridge, mean_of_context
from lvm_pipeline.evaluation import evaluate
from lvm_pipeline.sequences import SplitConfig, build_windows, gather
from lvm_pipeline_tests.conftest import publish_synthetic_payload


def test_context_baselines_are_unit_vectors():
    rng = np.random.default_rng(0)
    context = rng.standard_normal((4, 5, 8)).astype(np.float32)
    np.testing.assert_array_equal(copy_last_context(context), context[:, -1])
    mean = mean_of_context(context)
    np.testing.assert_allclose(np.linalg.norm(mean, axis=1), 1.0, rtol=1e-6)


def test_ridge_learns_a_linear_next_chunk_rule(store):
    """Chunks follow v[t+1] = Q v[t] (+ noise): ridge recovers Q, copy-last cannot."""
    rng = np.random.default_rng(0)
    dim, lengths = 16, [12] * 60
    q, _ = np.linalg.qr(rng.standard_normal((dim, dim)))
    vectors = []
    for n in lengths:
        v = rng.standard_normal(dim)
        for _ in range(n):
            v = q @ v + 0.05 * rng.standard_normal(dim)
            v /= np.linalg.norm(v)
            vectors.append(v)
    payload = publish_synthetic_payload(store, lengths, dim=dim,
                                        vectors=np.asarray(vectors, np.float32))
    sets = build_windows(payload, SplitConfig())
    ridge = fit_ridge(payload.vectors, sets["train"], sets["val"])
    index = faiss.IndexFlatIP(dim)
    index.add(payload.vectors)
    context = gather(payload.vectors, sets["eval"].context_rows)
    out = evaluate({"ridge": ridge(context), "copy_last": copy_last_context(context)},
                   payload.vectors, index, sets["eval"])
    assert out["ridge"].metrics["r_at_1"] > 0.9 > out["copy_last"].metrics["r_at_1"]
    assert ridge.val_mrr_at_10 > 0.9


def test_ridge_weight_is_the_closed_form_solution_across_blocks(synthetic_payload, monkeypatch):
    """The normal equations are summed block by block (one triangle of XᵀX by BLAS syrk); the
    weight must be exactly (XᵀX + λI)⁻¹ XᵀY over all training windows at the picked λ
    (λ = penalty per window × windows)."""
    monkeypatch.setattr(ridge_module, "BLOCK", 37)  # several blocks, the last one partial
    sets = build_windows(synthetic_payload, SplitConfig())
    train = sets["train"]
    ridge = fit_ridge(synthetic_payload.vectors, train, sets["val"])
    x = gather(synthetic_payload.vectors, train.context_rows).reshape(len(train), -1)
    y = gather(synthetic_payload.vectors, train.target_row)
    x, y = x.astype(np.float64), y.astype(np.float64)
    lam = ridge.penalty * len(train)
    want = np.linalg.solve(x.T @ x + lam * np.eye(x.shape[1]), x.T @ y)
    np.testing.assert_allclose(ridge.weight, want, rtol=1e-8, atol=1e-10)
