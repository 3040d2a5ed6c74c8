"""Learnability smoke test: a closed-form ridge predictor fit on train windows must retrieve
held-out targets far above chance, which catches misalignment of a kind nobody wrote a rule
for (docs/guards.md, row 9)."""

from __future__ import annotations

import numpy as np

from lvm_pipeline.embedding import unit_rows
from lvm_pipeline.evaluation import (
    PENALTIES,
    copy_last_prior,
    forward_signal_per_window,
    normal_equations,
    solve_ridge,
)
from lvm_pipeline.guards.config import GuardConfig
from lvm_pipeline.guards.result import GuardResult, verdict
from lvm_pipeline.payload import Payload, gather
from lvm_pipeline.sequences import CONTEXT, SequenceSet

# Share of the fit's train articles held out to choose the penalty and score the fit.
HELD_OUT_SHARE = 0.2


def learnability_k(n_rows: int, config: GuardConfig) -> int:
    """Contain@k's k: the configured one, capped at 1 % of the candidates so that
    ``ratio × chance`` stays reachable on a small payload (450 rows → k = 4)."""
    return max(1, min(config.learnability_k, (n_rows - CONTEXT) // 100))


def _contain_at_k(vectors: np.ndarray, seqs: SequenceSet, rows: np.ndarray,
                  weights: np.ndarray | None, k: int) -> float:
    """Share of windows ``rows`` whose target ranks in the top k for the prediction
    ``flatten(context) @ weights`` (5D, D) (None: the last context alone, the copy-last
    baseline), the window's own context rows excluded from the candidates as in the report."""
    # Imported here: evaluation imports torch, and importing the guards (every CLI command,
    # the Dagster definitions) should not.
    from lvm_pipeline.search import truth_ranks

    ctx = gather(vectors, seqs.context_rows[rows])  # (Q, 5, D)
    if weights is None:
        pred = unit_rows(ctx[:, -1])  # (Q, D)
    else:
        pred = unit_rows(ctx.reshape(len(rows), -1).astype(np.float64) @ weights)  # (Q, D)
    ranks = truth_ranks(pred, vectors, seqs.target_row[rows].astype(np.int64),
                        seqs.context_rows[rows].astype(np.int64))
    return float(np.mean(ranks <= k))


def _held_out_articles(articles: np.ndarray, seed: int) -> np.ndarray:
    """~:data:`HELD_OUT_SHARE` of ``articles`` (at least one), never all of them: the fit
    needs at least one article. One article alone is not held out (nothing would be left)."""
    if len(articles) < 2:
        return articles[:0]
    draw = np.random.default_rng(seed).random(len(articles))
    held = draw <= max(HELD_OUT_SHARE, draw.min())
    if held.all():
        held[np.argmax(draw)] = False
    return articles[held]


def check_learnability(payload: Payload, train: SequenceSet, val: SequenceSet,
                       config: GuardConfig = GuardConfig(),
                       name: str = "check_learnability") -> GuardResult:
    """A closed-form ridge predictor fit on training windows retrieves held-out targets far
    above chance: Contain@k >= ``min_learnability_ratio`` × chance on the val split *and* on
    train articles held out of the fit.

    The reference's lesson was "test end to end before full training". The predictor is a
    ridge map of the 5 flattened context vectors (5D → D) shrunk towards copying the last
    context (:func:`lvm_pipeline.evaluation.ridge.copy_last_prior`: the last context plus a ridge fit of
    the residual); its penalty is chosen among :data:`lvm_pipeline.evaluation.ridge.PENALTIES` on the
    held-out train articles. A large penalty leaves the last context alone, which is why a few
    hundred windows still pass (a ridge on raw contexts needs many times 5D windows before it
    beats chance across articles; on the default it reached only 0.35 Contain@50 where copy-last
    gets 0.53). Scoring both the held-out train windows and val means a defect in either split
    fails it, whatever the defect: shuffled targets, contexts from another encoder, windows
    cut across articles. Chance is k / (rows - 5): the truth's rank among the candidates left
    after the window's own 5 context rows are excluded.

    Too little data to judge fails with the reason as its message, never an exception: fewer
    than 2 train or 1 val windows, or a payload so small that ``ratio × chance`` exceeds 1.
    """
    n_rows = len(payload)
    k = learnability_k(n_rows, config)
    measure = f"ridge_contain_at_{k}"  # the worse of val and held-out train
    chance = k / max(n_rows - CONTEXT, 1)
    need = config.min_learnability_ratio * chance
    rule = (f"a ridge predictor fit on train windows retrieves held-out train and val targets: "
            f"Contain@{k} >= {config.min_learnability_ratio:g} × chance ({chance:.4f}) = "
            f"{need:.4f} on both")
    refusal = _cannot_judge(len(train), len(val), n_rows, k, need, config)
    if refusal is not None:
        return GuardResult(name, False, rule, 0.0, need, refusal, measure=measure)
    rng = np.random.default_rng(config.seed)
    fit = np.sort(rng.choice(len(train), min(len(train), config.learnability_max_windows),
                             replace=False))
    queries = np.sort(rng.choice(len(val), min(len(val), config.learnability_max_queries),
                                 replace=False))
    held_articles = _held_out_articles(np.unique(train.truth_keys[fit, 0]), config.seed + 1)
    held_mask = np.isin(train.truth_keys[fit, 0], held_articles)
    held = fit[held_mask][:config.learnability_max_queries]
    prior = copy_last_prior(payload.dim)
    xtx_fit, xty_fit = normal_equations(payload.vectors, train, fit[~held_mask])
    penalty, held_contain, scores = _choose_penalty(
        payload.vectors, train, held, (xtx_fit, xty_fit), int((~held_mask).sum()), prior, k)
    xtx_held, xty_held = normal_equations(payload.vectors, train, fit[held_mask])
    weights = solve_ridge(xtx_fit + xtx_held, xty_fit + xty_held, penalty, len(fit), prior)
    val_contain = _contain_at_k(payload.vectors, val, queries, weights, k)
    copy_last = _contain_at_k(payload.vectors, val, queries, None, k)
    figure = val_contain if held_contain is None else min(val_contain, held_contain)
    passed = figure >= need
    held_text = ("no train article could be held out" if held_contain is None else
                 f"held-out train {held_contain:.4f} ({len(held)} windows)")
    figures = (f"ridge Contain@{k}: val {val_contain:.4f} ({len(queries)} windows), {held_text}; "
               f"chance {chance:.4f}, threshold {config.min_learnability_ratio:g}× = {need:.4f} "
               f"(worst {figure / chance:.1f}× chance); copy-last-context on val "
               f"{copy_last:.4f}; penalty {penalty:g}")
    message = verdict(
        passed, f"learnable: {figures}",
        f"NOT LEARNABLE: {figures}. Contexts do not predict their targets in this data: the "
        "windows are misaligned in some way; no model should train on them")
    examples = [] if passed else _examples(payload, (("val", val, queries), ("train", train, held)))
    return GuardResult(name, passed, rule, figure, need, message, examples,
                       {"k": k, "chance": chance, "val_contain": val_contain,
                        "heldout_train_contain": held_contain, "ratio": figure / chance,
                        "penalty": penalty, "penalty_scores_on_heldout": scores,
                        "copy_last_val_contain": copy_last, "fit_windows": len(fit),
                        "heldout_windows": len(held), "val_queries": len(queries),
                        **_forward_signals(payload.vectors, train, fit, val, queries)},
                       measure=measure)


def _examples(payload: Payload, splits: tuple[tuple[str, SequenceSet, np.ndarray], ...]
              ) -> list[str]:
    """Two windows of each (split name, set, window indices): target and last context, the
    rows to look at when the data is not learnable."""
    return [f"{split} window {i}: target {payload.describe_row(int(s.target_row[i]))}; last "
            f"context {payload.describe_row(int(s.context_rows[i, -1]))}"
            for split, s, rows in splits for i in rows[:2]]


def _forward_signals(vectors: np.ndarray, train: SequenceSet, fit: np.ndarray,
                     val: SequenceSet, queries: np.ndarray) -> dict[str, float | None]:
    """The forward signal (mean cos(last context, next) − cos(last context, previous),
    :mod:`lvm_pipeline.evaluation.forward_signal`) of the train windows the ridge was fit on
    and of the val windows it was scored on. Recorded, not judged: near 0 or below, the
    embedding barely knows which way the text runs, which bounds what training can gain over
    copying the last context; the report states the same figure on the eval windows."""
    out: dict[str, float | None] = {}
    for split, seqs, rows in (("train", train, fit), ("val", val, queries)):
        values = forward_signal_per_window(vectors, seqs, rows)
        out[f"forward_signal_{split}"] = float(values.mean()) if len(values) else None
    return out


def _cannot_judge(n_train: int, n_val: int, n_rows: int, k: int, need: float,
                  config: GuardConfig) -> str | None:
    """Why there is too little data to judge (the failure's message), or None."""
    if n_train < 2 or n_val == 0:
        return (f"NOT LEARNABLE: cannot measure with {n_train} train and {n_val} "
                "val windows (need >= 2 and >= 1)")
    if need > 1:
        return (f"NOT LEARNABLE: cannot judge on a payload of {n_rows} rows: "
                f"{config.min_learnability_ratio:g} × chance = {need:.4f} > 1, which "
                f"no predictor reaches (it needs >= "
                f"{CONTEXT + config.min_learnability_ratio * k:g} rows)")
    return None


def _choose_penalty(vectors: np.ndarray, train: SequenceSet, held: np.ndarray,
                    fit_equations: tuple[np.ndarray, np.ndarray], n_fit: int,
                    prior: np.ndarray, k: int) -> tuple[float, float | None, dict[str, float]]:
    """The penalty of :data:`PENALTIES` whose fit (normal equations ``fit_equations`` of
    ``n_fit`` windows) retrieves the held-out train windows ``held`` (H,) best: (penalty, its
    Contain@k, every penalty's Contain@k). No held-out window (one train article): nothing to
    choose on, so the penalty closest to copy-last, with no figure."""
    if not len(held):
        return max(PENALTIES), None, {}
    scores: dict[str, float] = {}
    for penalty in PENALTIES:
        w = solve_ridge(*fit_equations, penalty, n_fit, prior)
        scores[f"{penalty:g}"] = _contain_at_k(vectors, train, held, w, k)
    chosen = max(scores, key=lambda p: scores[p])
    return float(chosen), scores[chosen], scores
