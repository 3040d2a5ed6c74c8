"""Alignment guard: the vectors training reads are the payload vectors their truth keys name."""

from __future__ import annotations

from typing import Any

import numpy as np

from lvm_pipeline.embedding import rowwise_cos
from lvm_pipeline.guards.config import MIN_ALIGNMENT_COSINE
from lvm_pipeline.guards.result import N_EXAMPLES, GuardResult, blocks
from lvm_pipeline.payload import Payload, gather
from lvm_pipeline.sequences import CONTEXT, SequenceSet

# A low cosine worth showing: (cos, split, window, "target" | "context").
Worst = tuple[float, str, int, str]


# What the figure is: the lowest cosine of any target or context vector to the payload vector its
# truth key names.
MEASURE = "min_cosine_to_payload"


def check_alignment(
    payload: Payload,
    sets: dict[str, SequenceSet],
    threshold: float = MIN_ALIGNMENT_COSINE,
    name: str = "check_alignment",
) -> GuardResult:
    """Targets **and contexts** are the payload vectors of the chunks their truth keys name.

    For every window the vectors training will read (gathered by row) are compared by cosine
    with the payload vector at the window's truth key: ``(article, chunk)`` for the target and
    ``(article, chunk - 5 + j)`` for context ``j``. Imported sets also carry the cosine of each
    foreign vector to the row it was aligned to; those count too. A shuffled row, an off-by-one
    key, vectors from another encoder or another corpus all show up as a low minimum.
    """
    rule = (f"every target and context vector equals the payload vector its truth key names "
            f"(cosine >= {threshold}) in payload {payload.build_id[:12]}")
    n_rows = len(payload)
    stats: dict[str, Any] = {}
    worst: list[Worst] = []
    missing: list[str] = []
    overall_min = 1.0
    for split, seqs in sets.items():
        if len(seqs) == 0:
            stats[split] = {"windows": 0}
            continue
        bad_rows = (seqs.context_rows < 0) | (seqs.context_rows >= n_rows)
        bad_rows = bad_rows.any(axis=1) | (seqs.target_row < 0) | (seqs.target_row >= n_rows)
        if bad_rows.any():
            first = np.flatnonzero(bad_rows)[:N_EXAMPLES]
            return GuardResult(
                name, False, rule, 0.0, threshold,
                f"{int(bad_rows.sum())} {split} windows point outside the payload's {n_rows} rows "
                f"(payload {payload.build_id[:12]})",
                [f"{split} window {i}: rows {seqs.context_rows[i].tolist()} → "
                 f"{int(seqs.target_row[i])}" for i in first], measure=MEASURE)
        stats[split], split_missing, split_worst = _split_alignment(payload, split, seqs,
                                                                    threshold)
        missing.extend(split_missing[:N_EXAMPLES - len(missing)])
        worst.extend(split_worst)
        overall_min = min(overall_min, stats[split]["target_cos_min"],
                          stats[split]["context_cos_min"])
    worst.sort()
    examples = missing + [
        f"{split} window {i} {part}: cos {cos:.3f}; truth key "
        f"(article {sets[split].truth_keys[i][0]}, chunk {sets[split].truth_keys[i][1]}), "
        f"target {payload.describe_row(int(sets[split].target_row[i]))}"
        for cos, split, i, part in worst[:N_EXAMPLES]]
    passed = overall_min >= threshold and not missing
    parts = ", ".join(f"{s} targets min {v['target_cos_min']:.3f} / contexts min "
                      f"{v['context_cos_min']:.3f}" for s, v in stats.items() if v["windows"])
    message = (f"{'aligned' if passed else 'MISALIGNED'}: {parts} "
               f"(threshold {threshold}, payload {payload.build_id[:12]})")
    if not passed:
        message += (". Training on these windows would teach the model vectors that are not "
                    "the payload's; rebuild them from this payload or re-embed with its encoder")
    return GuardResult(name, passed, rule, overall_min, threshold, message, examples,
                       {"splits": stats}, measure=MEASURE)


def _split_alignment(payload: Payload, split: str, seqs: SequenceSet, threshold: float
                     ) -> tuple[dict[str, Any], list[str], list[Worst]]:
    """One split, block by block: its figures for the details, the first
    :data:`N_EXAMPLES` windows whose keys are not in the payload, and each block's lowest
    cosines under ``threshold``."""
    t_min, c_min, t_sum, c_sum = 1.0, 1.0, 0.0, 0.0
    n_missing = 0
    missing: list[str] = []
    worst: list[Worst] = []
    for block in blocks(len(seqs)):
        keys, t_cos, c_cos, unresolved = _block_cosines(payload, seqs, block)
        if unresolved.any():
            n_missing += int(unresolved.sum())
            for i in np.flatnonzero(unresolved)[:N_EXAMPLES - len(missing)]:
                a, c = keys[i]
                missing.append(f"{split} window {block.start + i}: truth key (article "
                               f"{a}, chunk {c}) or one of its 5 context keys is not in "
                               "the payload")
        t_min, c_min = min(t_min, float(t_cos.min())), min(c_min, float(c_cos.min()))
        t_sum, c_sum = t_sum + float(t_cos.sum()), c_sum + float(c_cos.sum())
        c_row_min = c_cos.min(axis=1)
        for part, cos in (("target", t_cos), ("context", c_row_min)):
            for i in np.argsort(cos)[:N_EXAMPLES]:
                if cos[i] < threshold:
                    worst.append((float(cos[i]), split, block.start + int(i), part))
    stats = {"windows": len(seqs), "target_cos_min": t_min,
             "target_cos_mean": t_sum / len(seqs), "context_cos_min": c_min,
             "context_cos_mean": c_sum / (len(seqs) * CONTEXT), "unresolved_keys": n_missing}
    return stats, missing, worst


def _block_cosines(payload: Payload, seqs: SequenceSet, block: slice
                   ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The windows ``block`` of ``seqs``: their truth keys (b, 2) int64, the cosine of each
    target (b,) and context (b, 5) with the payload vector its key names (the lower of that and
    the recorded alignment cosine of an imported set), and which windows have a key in no
    payload row (b,) bool; their cosines are 0."""
    keys = seqs.truth_keys[block].astype(np.int64)  # (b, 2)
    ctx_chunks = keys[:, 1:2] - np.arange(CONTEXT, 0, -1)[None, :]  # (b, 5)
    key_rows = payload.rows_for_keys(keys[:, 0], keys[:, 1])  # (b,)
    ctx_key_rows = payload.rows_for_keys(
        np.repeat(keys[:, 0], CONTEXT), ctx_chunks.reshape(-1)).reshape(-1, CONTEXT)
    unresolved = (key_rows < 0) | (ctx_key_rows < 0).any(axis=1)
    key_rows = np.where(key_rows < 0, 0, key_rows)
    ctx_key_rows = np.where(ctx_key_rows < 0, 0, ctx_key_rows)
    t_cos = rowwise_cos(gather(payload.vectors, seqs.target_row[block]),
                        gather(payload.vectors, key_rows))  # (b,)
    c_cos = rowwise_cos(gather(payload.vectors, seqs.context_rows[block]),
                        gather(payload.vectors, ctx_key_rows))  # (b, 5)
    if seqs.target_cos is not None:
        t_cos = np.minimum(t_cos, seqs.target_cos[block])
    if seqs.context_cos is not None:
        c_cos = np.minimum(c_cos, seqs.context_cos[block])
    t_cos[unresolved] = 0.0
    c_cos[unresolved] = 0.0
    return keys, t_cos, c_cos, unresolved
