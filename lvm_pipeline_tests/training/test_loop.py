"""Training: losses, schedule, early stopping, and resume after an interruption."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch

from lvm_pipeline.models import LVM, preset
from lvm_pipeline.sequences.windows import SplitConfig, build_windows
from lvm_pipeline.training.batching import ArticleRows, article_negatives, batches, payload_negatives
from lvm_pipeline.training.config import TrainConfig
from lvm_pipeline.training.loop import train
from lvm_pipeline.training.losses import compute_loss, infonce_loss, reference_loss
from lvm_pipeline.training.lr_schedule import lr_at
from lvm_pipeline.training.validation import evaluate_val


def test_reference_loss_is_zero_on_the_target_and_infonce_prefers_the_own_target():
    t = torch.nn.functional.normalize(torch.randn(8, 16, generator=torch.Generator().manual_seed(1)),
                                      dim=-1)
    assert float(reference_loss(t, t)) == pytest.approx(0.0, abs=1e-6)
    shuffled = t[torch.randperm(8, generator=torch.Generator().manual_seed(0))]
    assert float(infonce_loss(t, t, 0.05)) < float(infonce_loss(shuffled, t, 0.05))
    mix = compute_loss(t, t, TrainConfig(loss="mix", infonce_weight=0.5))
    assert float(mix) == pytest.approx(0.5 * float(infonce_loss(t, t, 0.05)), abs=1e-6)


def test_lr_warms_up_then_decays_by_cosine_to_min_lr():
    cfg = TrainConfig(lr=1e-3, warmup_fraction=0.05, min_lr_ratio=0.1)
    lrs = [lr_at(s, 1000, cfg) for s in range(1000)]
    assert lrs[0] == pytest.approx(1e-3 / 50)
    assert max(lrs) == pytest.approx(1e-3) and int(np.argmax(lrs)) == 49
    assert lrs[-1] == pytest.approx(1e-4, rel=1e-2)
    assert all(a >= b for a, b in itertools.pairwise(lrs[49:]))
    assert lr_at(525, 1000, cfg) == pytest.approx(1e-4 + 0.5 * 9e-4 * (1 + math.cos(math.pi / 2)))


def test_unknown_loss_lists_the_valid_ones():
    with pytest.raises(ValueError, match="unknown loss 'l1'; valid: reference, infonce, mix"):
        TrainConfig(loss="l1")


def articles_of(payload) -> np.ndarray:
    """The payload's article per row, which the default recipe's own-article negatives need."""
    return payload.chunks["article_index"].to_numpy()


def _setup(synthetic_payload):
    sets = build_windows(synthetic_payload, SplitConfig())
    torch.manual_seed(0)
    model = LVM(preset("mamba_s", "tiny", d_in=synthetic_payload.dim))
    return model, sets


def test_training_keeps_the_epoch_with_the_best_val_retrieval(synthetic_payload):
    model, sets = _setup(synthetic_payload)
    cfg = TrainConfig(epochs=6, batch_size=16, patience=10)
    result = train(model, synthetic_payload.vectors, sets["train"], sets["val"], cfg,
                   article_of_row=articles_of(synthetic_payload))
    mrr = [h["val_mrr_at_10"] for h in result.history]
    assert result.best_epoch == int(np.argmax(mrr))
    assert all(0 <= h["val_r_at_5"] <= 1 for h in result.history)
    assert result.history[-1]["train_loss"] < result.history[0]["train_loss"]
    assert result.device == "cpu"


def test_val_loss_is_the_mean_over_the_windows_it_scored(synthetic_payload):
    """17 windows in batches of 16: the last batch of one has no InfoNCE negative, so it is
    not scored, and must not count in the mean either (it did: the loss came out 16/17 low)."""
    model, sets = _setup(synthetic_payload)
    seqs = sets["train"].subset(np.arange(len(sets["train"])) < 17)
    cfg = TrainConfig(batch_size=16)
    val = evaluate_val(model, synthetic_payload.vectors, seqs, cfg, "cpu")
    model.eval()
    with torch.no_grad():
        _, context, target = next(batches(synthetic_payload.vectors, seqs, 16))
        expected = float(compute_loss(model(context), target, cfg))
    assert val["loss"] == pytest.approx(expected, rel=1e-6)


def test_payload_negatives_mask_the_queries_own_rows(synthetic_payload):
    sets = build_windows(synthetic_payload, SplitConfig())
    idx = np.arange(8)
    rng = np.random.default_rng(0)
    negatives, mask = payload_negatives(synthetic_payload.vectors, sets["train"], idx,
                                        len(synthetic_payload), rng)
    assert negatives.shape == (len(synthetic_payload), synthetic_payload.dim)
    # Every row was drawn, so each query masks exactly its target and its 5 context rows.
    assert mask.sum(dim=1).tolist() == [6] * 8
    loss = infonce_loss(torch.nn.functional.normalize(torch.randn(8, synthetic_payload.dim),
                                                      dim=-1),
                        torch.from_numpy(synthetic_payload.vectors[sets["train"].target_row[idx]]),
                        0.05, negatives, mask)
    assert torch.isfinite(loss)


def test_early_stopping_waits_patience_epochs(synthetic_payload):
    model, sets = _setup(synthetic_payload)
    # lr 0 never improves on epoch 0's val MRR: stop after epoch 0 + patience 2 epochs.
    cfg = TrainConfig(epochs=20, batch_size=16, patience=2, lr=0.0)
    result = train(model, synthetic_payload.vectors, sets["train"], sets["val"], cfg,
                   article_of_row=articles_of(synthetic_payload))
    assert result.stopped_early and len(result.history) == 3


class Interrupt(Exception):
    pass


def test_interrupted_training_resumes_to_the_same_weights(synthetic_payload, tmp_path):
    cfg = TrainConfig(epochs=4, batch_size=16, patience=10)
    model, sets = _setup(synthetic_payload)
    straight = train(model, synthetic_payload.vectors, sets["train"], sets["val"], cfg,
                     article_of_row=articles_of(synthetic_payload))

    def stop_after_epoch_2(done, total, **_):
        if done == 2:
            raise Interrupt

    model, _ = _setup(synthetic_payload)
    with pytest.raises(Interrupt):
        train(model, synthetic_payload.vectors, sets["train"], sets["val"], cfg,
              stop_after_epoch_2, work_dir=tmp_path, article_of_row=articles_of(synthetic_payload))
    # The epoch-2 checkpoint was not written (the interrupt came first): resume from epoch 1.
    model, _ = _setup(synthetic_payload)
    resumed = train(model, synthetic_payload.vectors, sets["train"], sets["val"], cfg,
                    article_of_row=articles_of(synthetic_payload),
                    work_dir=tmp_path)
    assert resumed.resumed_from_epoch == 1
    assert [h["val_loss"] for h in resumed.history] == pytest.approx(
        [h["val_loss"] for h in straight.history], rel=1e-5)
    assert resumed.best_epoch == straight.best_epoch
    for (name, a), b in zip(straight.model.state_dict().items(),
                            resumed.model.state_dict().values(), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6, msg=name)


def test_a_corpus_smaller_than_a_batch_trains_on_one_batch_and_says_so(synthetic_payload):
    model, sets = _setup(synthetic_payload)
    result = train(model, synthetic_payload.vectors, sets["train"], sets["val"],
                   TrainConfig(batch_size=100000, epochs=1),
                   article_of_row=articles_of(synthetic_payload))
    assert result.batch_size == len(sets["train"])


def test_article_negatives_come_from_the_querys_own_article(synthetic_payload):
    _, sets = _setup(synthetic_payload)
    articles = articles_of(synthetic_payload)
    idx = np.arange(32)
    negatives, mask = article_negatives(synthetic_payload.vectors, sets["train"], idx, idx, 8,
                                        ArticleRows.of(articles), np.random.default_rng(0))
    rows = rows_of(synthetic_payload.vectors, negatives.numpy())
    own_article = articles[sets["train"].target_row[idx]]
    assert negatives.shape == (32 * 8, synthetic_payload.dim) and mask.shape == (32, 32 * 8)
    # query i drew rows i·8 … i·8+7, all from its own article
    assert (articles[rows].reshape(32, 8) == own_article[:, None]).all()
    own = np.concatenate([sets["train"].target_row[idx, None], sets["train"].context_rows[idx]], 1)
    expected = (rows[None, None, :] == own[:, :, None]).any(axis=1)
    assert (mask.numpy() == expected).all() and expected.any()


def test_article_negatives_need_the_payloads_articles(synthetic_payload):
    model, sets = _setup(synthetic_payload)
    with pytest.raises(ValueError, match="article_negatives=4 needs the payload's article_index"):
        train(model, synthetic_payload.vectors, sets["train"], sets["val"],
              TrainConfig(epochs=1, batch_size=16, article_negatives=4))


def rows_of(vectors: np.ndarray, found: np.ndarray) -> np.ndarray:
    """The payload row of each vector in ``found`` (exact copies)."""
    return np.argmax(found @ vectors.T, axis=1)


def test_a_long_epoch_reports_windows_done_rate_and_time_left(synthetic_payload):
    """In-epoch progress goes through the same callback as the epochs' (so into the run's
    log and the terminal's bar), spaced by ``progress_every_s``; 0 reports every batch."""
    model, sets = _setup(synthetic_payload)
    calls = []
    cfg = TrainConfig(epochs=2, batch_size=16, patience=10)
    train(model, synthetic_payload.vectors, sets["train"], sets["val"], cfg,
          lambda done, total, **m: calls.append((done, total, m)), progress_every_s=0.0,
          article_of_row=articles_of(synthetic_payload))
    steps = len(sets["train"]) // 16
    in_epoch = [c for c in calls if "windows_done" in c[2]]
    epochs = [c for c in calls if "train_loss" in c[2]]
    assert [c[0] for c in epochs] == [1, 2] and len(in_epoch) == 2 * (steps - 1)
    # Epoch 0's reports: 0 epochs done, windows counted up to (not including) the last batch.
    first = [m for done, total, m in in_epoch if done == 0]
    assert [m["windows_done"] for m in first] == [16 * k for k in range(1, steps)]
    assert all(m["epoch_windows"] == 16 * steps and m["windows_per_s"] > 0
               and m["epoch_eta_s"] >= 0 for m in first)
    # The interval spaces them: one no epoch lasts reports nothing within an epoch.
    calls.clear()
    model, _ = _setup(synthetic_payload)
    train(model, synthetic_payload.vectors, sets["train"], sets["val"], cfg,
          lambda done, total, **m: calls.append((done, total, m)), progress_every_s=math.inf,
          article_of_row=articles_of(synthetic_payload))
    assert [c[0] for c in calls] == [1, 2] and all("train_loss" in m for _, _, m in calls)


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_device_auto_is_the_cpu_here_and_cuda_without_a_gpu_says_so(synthetic_payload):
    assert TrainConfig().device == "auto"
    model, sets = _setup(synthetic_payload)
    cfg = TrainConfig(epochs=1, batch_size=16)
    assert train(model, synthetic_payload.vectors, sets["train"], sets["val"], cfg,
                 article_of_row=articles_of(synthetic_payload)).device == "cpu"
    with pytest.raises(ValueError, match=r"device 'cuda' requested but torch .* sees no CUDA "
                                         r"GPU; use device 'cpu'"):
        train(model, synthetic_payload.vectors, sets["train"], sets["val"],
              TrainConfig(epochs=1, batch_size=16, device="cuda"),
              article_of_row=articles_of(synthetic_payload))
