"""Baselines: shapes, and a ridge that finds a linear next-chunk rule when there is one."""

from __future__ import annotations

from dataclasses import asdict

import faiss
import numpy as np
import torch
import torch.nn.functional as F

from lvm_pipeline.evaluation import ridge as ridge_module
from lvm_pipeline.evaluation.baselines import copy_last_context, fit_ridge, mean_of_context
from lvm_pipeline.evaluation.metrics import evaluate
from lvm_pipeline.payload.gather import gather
from lvm_pipeline.report.trained_baselines import (
    TRAINED_BASELINES,
    BlendConfig,
    ContextBlend,
    fit_trained_baselines,
    recipe_of,
)
from lvm_pipeline.sequences.windows import SplitConfig, build_windows
from lvm_pipeline.training.config import TrainConfig
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


def _second_to_last_rule_payload(store):
    """Chunks alternate between two drifting topics (v[t] ≈ v[t-2]): the next chunk is near the
    second-to-last context, so copy-last is poor and a blend weighted at position 4 is good."""
    rng = np.random.default_rng(0)
    dim, lengths = 16, [12] * 80
    vectors = []
    for n in lengths:
        pair = [rng.standard_normal(dim), rng.standard_normal(dim)]
        for t in range(n):
            pair[t % 2] = pair[t % 2] + 0.25 * rng.standard_normal(dim)
            pair[t % 2] /= np.linalg.norm(pair[t % 2])
            vectors.append(pair[t % 2])
    return publish_synthetic_payload(store, lengths, dim=dim,
                                     vectors=np.asarray(vectors, np.float32))


# The default recipe with batches small enough for ~15 steps an epoch on 450 windows.
QUICK = TrainConfig(epochs=20, batch_size=32)


def test_trained_baselines_learn_the_blend_copy_last_misses_and_are_seeded(store):
    payload = _second_to_last_rule_payload(store)
    sets = build_windows(payload, SplitConfig(), drop_near_duplicates=False)
    articles = payload.chunks["article_index"].to_numpy()
    fitted = fit_trained_baselines(payload.vectors, sets["train"], sets["val"], QUICK,
                                   article_of_row=articles)
    assert set(fitted) == set(TRAINED_BASELINES)
    blend = fitted["learned_blend"]
    assert int(np.argmax(blend.model.context_mix.detach().numpy())) == 3  # the second-to-last
    assert blend.model.num_params() == 5
    assert fitted["linear_infonce"].model.num_params() == 5 + 5 * 16 * 16
    index = faiss.IndexFlatIP(payload.dim)
    index.add(payload.vectors)
    context = torch.from_numpy(gather(payload.vectors, sets["eval"].context_rows))
    with torch.no_grad():
        predictions = {name: f.model(context).numpy() for name, f in fitted.items()}
    predictions["copy_last"] = copy_last_context(context.numpy())
    out = evaluate(predictions, payload.vectors, index, sets["eval"])
    for name in TRAINED_BASELINES:
        assert out[name].metrics["mrr_at_10"] > out["copy_last"].metrics["mrr_at_10"] + 0.2, name
    record = blend.record()
    assert record["n_train_windows"] == len(sets["train"]) and record["train_config"]["epochs"] == 20
    # Seeded: a second fit, on a capped sample of the windows, is reproducible to the bit.
    capped = [fit_trained_baselines(payload.vectors, sets["train"], sets["val"], QUICK,
                                    max_train_windows=200, article_of_row=articles
                                    )["linear_infonce"] for _ in range(2)]
    assert capped[0].n_train_windows == 200
    first, second = (c.model.state_dict() for c in capped)
    for key in first:
        torch.testing.assert_close(first[key], second[key], rtol=0, atol=0)


def test_trained_baselines_start_at_copy_last_and_follow_the_models_recipe():
    context = torch.randn(4, 5, 8)
    for linear in (False, True):
        model = ContextBlend(BlendConfig(d_in=8, linear=linear))
        torch.testing.assert_close(model(context), F.normalize(context[:, -1], dim=-1))
    assert recipe_of([]) == TrainConfig(device="cpu")
    short = asdict(TrainConfig(epochs=2, batch_size=32, device="cuda", loss="mix"))
    longer = asdict(TrainConfig(epochs=5, batch_size=32, device="cuda", loss="mix"))
    recipe = recipe_of([short, longer])
    assert recipe == TrainConfig(epochs=5, batch_size=32, loss="mix", device="cpu")
