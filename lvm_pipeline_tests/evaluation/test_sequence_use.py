"""The sequence-use diagnostics on a synthetic payload: parts, shares, shuffles."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from lvm_pipeline.evaluation.metrics import evaluate, ranks_only
from lvm_pipeline.evaluation.sequence_use import measure_sequence_use, shuffled_order
from lvm_pipeline.evaluation.sequence_use import sequence_use_markdown as markdown
from lvm_pipeline.models import LVM, preset
from lvm_pipeline.payload.gather import gather
from lvm_pipeline.search.index import IndexConfig, build_index
from lvm_pipeline.sequences.windows import SplitConfig, build_windows


def test_shuffled_order_is_a_seeded_permutation_per_query():
    order = shuffled_order(200, 5)
    assert order.shape == (200, 5)
    np.testing.assert_array_equal(np.sort(order, axis=1), np.tile(np.arange(5), (200, 1)))
    assert len({tuple(r) for r in order}) > 50  # one per query, not one for all
    np.testing.assert_array_equal(order, shuffled_order(200, 5))


def test_ranks_only_are_the_evaluation_ranks(synthetic_payload):
    v = synthetic_payload.vectors
    seqs = build_windows(synthetic_payload, SplitConfig())["eval"]
    preds = {"last": gather(v, seqs.context_rows[:, -1]), "first": gather(v, seqs.context_rows[:, 0])}
    full = evaluate(preds, v, build_index(np.asarray(v), IndexConfig()), seqs)
    for name, r in ranks_only(preds, v, seqs).items():
        np.testing.assert_array_equal(r, full[name].ranks)


def test_a_fresh_model_is_its_blend_and_a_trained_head_shows_its_share(synthetic_payload):
    v = synthetic_payload.vectors
    seqs = build_windows(synthetic_payload, SplitConfig())["eval"]
    torch.manual_seed(0)
    fresh = LVM(preset("mamba_s", "tiny", d_in=v.shape[1])).eval()
    noisy = LVM(preset("mamba_s", "tiny", d_in=v.shape[1])).eval()
    torch.nn.init.normal_(noisy.head.weight, std=1.0)  # a large correction
    copy_last = ranks_only({"c": gather(v, seqs.context_rows[:, -1])}, v, seqs)["c"]
    mrr = float(np.mean(np.where(copy_last <= 10, 1 / copy_last, 0)))
    use = measure_sequence_use({"fresh": fresh, "noisy": noisy}, v, seqs, {"fresh": mrr, "noisy": 0.0})
    f = use["fresh"]
    assert f["context_mix"] == [0, 0, 0, 0, 1] and f["correction_norm_mean"] == 0
    assert f["correction_to_blend"] == 0 and f["blend_norm_mean"] == pytest.approx(1.0)
    # A zero head has no direction: its network path retrieves nothing (not rank 1 by ties).
    assert f["network_only"] == {"mrr_at_10": 0.0, "r_at_5": 0.0}
    assert f["blend_only"]["mrr_at_10"] == pytest.approx(mrr)  # the blend is copy-last
    # Copy-last reads one position: shuffling moves it away in 4 of 5 queries, so it drops.
    assert f["shuffle_drop_mrr_at_10"] > 0
    assert use["noisy"]["correction_to_blend"] > 1
    text = markdown(use)
    assert "| fresh | +0.00 +0.00 +0.00 +0.00 +1.00 | 0.000 |" in text
