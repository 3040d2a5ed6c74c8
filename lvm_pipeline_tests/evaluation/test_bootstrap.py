"""Paired bootstrap intervals on synthetic ranks: points, verdicts, seeds, and pairing."""

from __future__ import annotations

import numpy as np
import pytest

from lvm_pipeline.evaluation import bootstrap
from lvm_pipeline.evaluation.bootstrap import (
    BootstrapConfig,
    confidence,
    per_query,
    resampled_means,
    unpaired_difference_interval,
)
from lvm_pipeline.evaluation.bootstrap import confidence_markdown as markdown
from lvm_pipeline.evaluation.metrics import mrr_at_k


def _ranks(n=400, seed=0):
    """Query difficulty shared by every predictor (correlated, like real ones)."""
    rng = np.random.default_rng(seed)
    return rng.geometric(0.3, size=n)  # (Q,) 1-based ranks, many in the top 10


def test_a_constant_difference_has_a_point_interval():
    n = 300
    conf = confidence({"model": np.ones(n, int), "copy_last_context": np.full(n, 2)},
                      ["model"], ["copy_last_context"])
    d = conf["differences"]["model"]["copy_last_context"]
    assert d["mrr_at_10"] == {"value": 0.5, "low": 0.5, "high": 0.5, "verdict": "better"}
    assert d["r_at_1"]["low"] == d["r_at_1"]["high"] == 1.0
    assert d["r_at_5"] == {"value": 0.0, "low": 0.0, "high": 0.0, "verdict": "indistinguishable"}
    assert conf["mrr_at_10_resolution"] == 0.0
    assert conf["intervals"]["model"]["mrr_at_10"]["value"] == mrr_at_k(np.ones(n))


def test_verdicts_better_indistinguishable_worse():
    base = _ranks()
    better = np.maximum(1, base - 3)  # every query at least as good, most clearly better
    worse = base + 3
    conf = confidence({"better": better, "same": base.copy(), "worse": worse, "base": base},
                      ["better", "same", "worse"], ["base"])
    verdicts = {m: conf["differences"][m]["base"]["mrr_at_10"]["verdict"]
                for m in ("better", "same", "worse")}
    assert verdicts == {"better": "better", "same": "indistinguishable", "worse": "worse"}
    same = conf["differences"]["same"]["base"]["mrr_at_10"]
    assert same["low"] == same["high"] == 0.0  # identical ranks: the difference is always 0
    for name in ("better", "base"):
        i = conf["intervals"][name]["mrr_at_10"]
        assert i["low"] < i["value"] < i["high"]
        assert i["value"] == pytest.approx(mrr_at_k(better if name == "better" else base))


def test_seeded_results_are_reproducible_and_the_seed_matters():
    ranks = {"a": _ranks(seed=1), "copy_last_context": _ranks(seed=2)}
    first = confidence(ranks, ["a"], ["copy_last_context"], BootstrapConfig(seed=7))
    assert first == confidence(ranks, ["a"], ["copy_last_context"], BootstrapConfig(seed=7))
    other = confidence(ranks, ["a"], ["copy_last_context"], BootstrapConfig(seed=8))
    assert other["intervals"]["a"]["mrr_at_10"] != first["intervals"]["a"]["mrr_at_10"]
    assert first["resamples"] == 1000 and first["seed"] == 7 and first["n_queries"] == 400


def test_the_paired_interval_is_narrower_than_the_unpaired_for_correlated_predictors():
    rng = np.random.default_rng(3)
    base = _ranks(n=600, seed=3)
    model = np.where(rng.random(600) < 0.2, np.maximum(1, base - 1), base)  # mostly the same
    paired = confidence({"model": model, "base": base}, ["model"], ["base"])
    d = paired["differences"]["model"]["base"]["mrr_at_10"]
    low, high = unpaired_difference_interval(per_query(model)["mrr_at_10"],
                                             per_query(base)["mrr_at_10"])
    assert (d["high"] - d["low"]) < 0.5 * (high - low)
    assert low < 0 < high and d["verdict"] == "better"  # only the paired design resolves it


def test_block_resampling_is_the_plain_resample_mean(monkeypatch):
    """The count-matrix form equals the mean over the drawn rows, across blocks."""
    monkeypatch.setattr(bootstrap, "BLOCK", 7)
    values = np.random.default_rng(0).random((50, 3))
    got = resampled_means(values, 20, np.random.default_rng(5))
    rng = np.random.default_rng(5)
    want = np.concatenate([values[rng.integers(0, 50, size=(b, 50))].mean(axis=1)
                           for b in (7, 7, 6)])
    np.testing.assert_allclose(got, want, rtol=1e-12)


def test_refusals_name_what_is_wrong_and_markdown_shows_verdicts():
    with pytest.raises(ValueError, match="resamples >= 1000"):
        BootstrapConfig(resamples=100)
    with pytest.raises(ValueError, match="same queries"):
        confidence({"a": np.ones(3), "b": np.ones(4)}, ["a"], ["b"])
    with pytest.raises(ValueError, match=r"no ranks for \['copy_last_context'\]"):
        confidence({"a": np.ones(3)}, ["a"], ["copy_last_context"])
    conf = confidence({"m": _ranks(seed=4), "copy_last_context": _ranks(seed=5)},
                      ["m"], ["copy_last_context"])
    text = markdown(conf)
    assert "**Resolution:**" in text and f"±{conf['mrr_at_10_resolution']:.3f}" in text
    verdict = conf["differences"]["m"]["copy_last_context"]["mrr_at_10"]["verdict"]
    assert f"**{verdict}**" in text and "| m |" in text
