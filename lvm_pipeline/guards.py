"""The guards: plain functions that decide whether data is fit to train or evaluate on.

Each guard returns a :class:`GuardResult` with the rule in plain words, the measured figure, the
threshold and the first offending rows. The Dagster layer turns them into blocking asset
checks, and the consuming assets (sequence builders, index, trainers, evaluator) call the same
functions again through the suites at the bottom (:func:`payload_guards`,
:func:`training_guards`, :func:`evaluation_guards`), because a blocking check only gates
assets in its own run. Every figure is measured on the artifact as training reads it
(:func:`lvm_pipeline.sequences.gather`), never taken from a manifest.

One guard per way the reference project's data went wrong (docs/guards.md has the table):
alignment of targets and contexts, truth keys, leakage between splits, payload integrity, the
embedder canary, stale lineage, and the learnability smoke test that catches misalignment of a
kind nobody wrote a rule for.
"""

from __future__ import annotations

import hashlib
import itertools
from collections import OrderedDict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
import pandas as pd

from lvm_pipeline.artifacts import ArtifactStore, Build
from lvm_pipeline.corpus import normalise_text
from lvm_pipeline.payload import Payload, pack_keys
from lvm_pipeline.sequences import (
    CONTEXT,
    NEAR_DUPLICATE_COSINE,
    SPLITS,
    SequenceSet,
    gather,
    load_sets,
    near_duplicates,
    require_payload,
)

# Cosine above which two unit vectors count as "the same chunk". Re-embedding the same text
# with the same model gives >= 0.9999; two different chunks of one article ~0.5 (GTR-T5 on
# Wikipedia: 0.48); the founding incident measured 0.14.
MIN_ALIGNMENT_COSINE = 0.99
# Rows normalised in float64 and stored as float32 are unit to ~1e-7; an encoder whose output
# was never normalised is off by tens of percent. 1e-3 sits far from both.
MAX_NORM_ERROR = 1e-3
# Texts the canary re-embeds: ~2-10 s on two CPU cores, and 64 independent chances to see an
# encoder whose outputs differ (CLS pooling of the default's weights: min cosine 0.17).
CANARY_SAMPLE = 64
# Same text, same encoder: measured min 0.9999999 on the default; CPU vs CUDA differ by ~1e-4.
MIN_CANARY_COSINE = 0.99
# The learnability smoke test asks for Contain@k of a ridge predictor >= ratio × chance.
LEARNABILITY_K = 50
MIN_LEARNABILITY_RATIO = 10.0
# Ridge penalties of the residual map (times the number of windows), chosen on held-out train
# articles: 1e-3 lets ~3,000 windows learn a little beyond copy-last; 1 is copy-last itself for
# a few hundred windows, whose unregularised fit of 1,920 features would be noise.
RIDGE_PENALTIES = (1e-3, 1e-2, 1e-1, 1.0)
# Caps that keep the smoke test at seconds on a 500k-window corpus; it is a smoke test.
LEARNABILITY_MAX_WINDOWS = 20000
LEARNABILITY_MAX_QUERIES = 2000
# A flat index must find every sampled row itself (ties with identical rows count).
MIN_INDEX_SELF_RECALL = 0.99
# Windows per block when gathering vectors, so 500k windows never sit in RAM at once: at
# 768-d a block's contexts and their float64 copies take ~0.4 GB (32768 took ~3 GB).
BLOCK = 4096
N_EXAMPLES = 5


@dataclass(frozen=True)
class GuardConfig:
    """Every guard threshold in one place; written into check metadata next to each figure."""

    min_alignment_cosine: float = MIN_ALIGNMENT_COSINE
    max_norm_error: float = MAX_NORM_ERROR
    canary_sample: int = CANARY_SAMPLE
    min_canary_cosine: float = MIN_CANARY_COSINE
    near_duplicate_cosine: float = NEAR_DUPLICATE_COSINE
    learnability_k: int = LEARNABILITY_K
    min_learnability_ratio: float = MIN_LEARNABILITY_RATIO
    learnability_max_windows: int = LEARNABILITY_MAX_WINDOWS
    learnability_max_queries: int = LEARNABILITY_MAX_QUERIES
    min_index_self_recall: float = MIN_INDEX_SELF_RECALL
    seed: int = 0

    def __post_init__(self) -> None:
        if self.canary_sample < 1 or self.learnability_k < 1:
            raise ValueError(f"canary_sample and learnability_k must be >= 1: {self}")


class GuardError(RuntimeError):
    """Raised by a consuming asset when a guard fails; the message is the guard's message."""


@dataclass(frozen=True)
class GuardResult:
    """Outcome of one guard: pass/fail, the measured figure against its threshold, evidence."""

    name: str
    passed: bool
    rule: str
    figure: float | None
    threshold: float | None
    message: str
    examples: list[str] = field(default_factory=list)
    details: dict[str, Any] = field(default_factory=dict)

    def raise_if_failed(self) -> None:
        if not self.passed:
            raise GuardError(self.full_message())

    def full_message(self) -> str:
        tail = "".join(f"\n  - {e}" for e in self.examples)
        return f"{self.name}: {self.message}{tail}"


class TextEncoder(Protocol):
    """What the canary needs of an embedder (:class:`lvm_pipeline.embedding.Embedder` fits)."""

    dim: int

    def encode(self, texts: list[str]) -> np.ndarray:
        """(N,) texts → (N, D) float32 unit rows."""

    def identity(self) -> dict[str, Any]:
        """id, dim and the measured fingerprint (weights_sha256, config_sha256)."""


def _blocks(n: int, size: int = BLOCK) -> Iterator[slice]:
    for lo in range(0, n, size):
        yield slice(lo, min(lo + size, n))


def _rowwise_cos(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Row-wise cosine of (..., D) arrays, in float64 so 0.99 vs 0.9899 is decided exactly."""
    a64, b64 = a.astype(np.float64), b.astype(np.float64)
    num = np.einsum("...d,...d->...", a64, b64)
    den = np.linalg.norm(a64, axis=-1) * np.linalg.norm(b64, axis=-1)
    return np.where(den > 0, num / np.maximum(den, 1e-300), 0.0)


def _verdict(passed: bool, ok: str, bad: str) -> str:
    return ok if passed else bad


# --------------------------------------------------------------------------- alignment


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
    worst: list[tuple[float, str, int, str]] = []  # (cos, split, window, part)
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
                 f"{int(seqs.target_row[i])}" for i in first])
        t_min, c_min, t_sum, c_sum = 1.0, 1.0, 0.0, 0.0
        n_missing = 0
        for block in _blocks(len(seqs)):
            keys = seqs.truth_keys[block].astype(np.int64)  # (b, 2)
            ctx_chunks = keys[:, 1:2] - np.arange(CONTEXT, 0, -1)[None, :]  # (b, 5)
            key_rows = payload.rows_for_keys(keys[:, 0], keys[:, 1])  # (b,)
            ctx_key_rows = payload.rows_for_keys(
                np.repeat(keys[:, 0], CONTEXT), ctx_chunks.reshape(-1)).reshape(-1, CONTEXT)
            unresolved = (key_rows < 0) | (ctx_key_rows < 0).any(axis=1)
            if unresolved.any():
                n_missing += int(unresolved.sum())
                for i in np.flatnonzero(unresolved)[:N_EXAMPLES - len(missing)]:
                    a, c = keys[i]
                    missing.append(f"{split} window {block.start + i}: truth key (article "
                                   f"{a}, chunk {c}) or one of its 5 context keys is not in "
                                   "the payload")
            key_rows = np.where(key_rows < 0, 0, key_rows)
            ctx_key_rows = np.where(ctx_key_rows < 0, 0, ctx_key_rows)
            t_cos = _rowwise_cos(gather(payload.vectors, seqs.target_row[block]),
                                 gather(payload.vectors, key_rows))  # (b,)
            c_cos = _rowwise_cos(gather(payload.vectors, seqs.context_rows[block]),
                                 gather(payload.vectors, ctx_key_rows))  # (b, 5)
            if seqs.target_cos is not None:
                t_cos = np.minimum(t_cos, seqs.target_cos[block])
            if seqs.context_cos is not None:
                c_cos = np.minimum(c_cos, seqs.context_cos[block])
            t_cos[unresolved] = 0.0
            c_cos[unresolved] = 0.0
            t_min, c_min = min(t_min, float(t_cos.min())), min(c_min, float(c_cos.min()))
            t_sum, c_sum = t_sum + float(t_cos.sum()), c_sum + float(c_cos.sum())
            c_row_min = c_cos.min(axis=1)
            for part, cos in (("target", t_cos), ("context", c_row_min)):
                for i in np.argsort(cos)[:N_EXAMPLES]:
                    if cos[i] < threshold:
                        worst.append((float(cos[i]), split, block.start + int(i), part))
        stats[split] = {"windows": len(seqs), "target_cos_min": t_min,
                        "target_cos_mean": t_sum / len(seqs), "context_cos_min": c_min,
                        "context_cos_mean": c_sum / (len(seqs) * CONTEXT),
                        "unresolved_keys": n_missing}
        overall_min = min(overall_min, t_min, c_min)
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
                       {"splits": stats})


# --------------------------------------------------------------------------- truth keys


def check_truth_keys(payload: Payload, sets: dict[str, SequenceSet],
                     name: str = "check_truth_keys") -> GuardResult:
    """Truth keys are unique, resolve to the window's own target row, and every window is six
    consecutive chunks of one article.

    Catches the reference's 25k duplicate keys in 584k windows, keys whose article index is off
    by one (they name a row other than the window's target), and windows stitched from chunks
    of different articles or with a gap. Duplicate ``(article, chunk)`` keys in the payload
    itself count too: with them a key cannot name one chunk.
    """
    rule = ("every (article, chunk) truth key is unique in the payload and across the splits, "
            "names the window's own target row, and each window is 6 consecutive chunks of one "
            "article")
    article = payload.chunks["article_index"].to_numpy(np.int64)
    chunk = payload.chunks["chunk_index"].to_numpy(np.int64)
    n_rows = len(payload)
    counts: dict[str, int] = {}
    examples: list[str] = []

    def note(rule_name: str, n: int, lines: list[str]) -> None:
        counts[rule_name] = counts.get(rule_name, 0) + n
        if n:
            examples.extend(lines[:max(0, N_EXAMPLES - len(examples))][:2])

    payload_keys = pack_keys(article, chunk)
    _, first, key_counts = np.unique(payload_keys, return_index=True, return_counts=True)
    dup_payload = int((key_counts - 1).sum())
    note("duplicate keys in the payload", dup_payload,
         [f"payload key (article {article[r]}, chunk {chunk[r]}) is on {c} rows, e.g. "
          f"{payload.describe_row(int(r))}" for r, c in zip(first[key_counts > 1],
                                                           key_counts[key_counts > 1], strict=True)])
    present = {s: seqs for s, seqs in sets.items() if len(seqs)}
    if present:
        all_keys = np.concatenate([pack_keys(s.truth_keys[:, 0], s.truth_keys[:, 1])
                                   for s in present.values()])
        owner = np.concatenate([[split] * len(s) for split, s in present.items()])
        position = np.concatenate([np.arange(len(s)) for s in present.values()])
        _, inverse, set_counts = np.unique(all_keys, return_inverse=True, return_counts=True)
        repeated = np.flatnonzero(set_counts[inverse] > 1)
        seen: set[int] = set()
        lines = []
        for i in repeated:
            if int(all_keys[i]) in seen:
                continue
            seen.add(int(all_keys[i]))
            keys = present[owner[i]].truth_keys[position[i]]
            holders = [f"{owner[j]} window {position[j]}" for j in repeated
                       if all_keys[j] == all_keys[i]][:3]
            lines.append(f"truth key (article {keys[0]}, chunk {keys[1]}) is used by "
                         f"{set_counts[inverse[i]]} windows: {', '.join(holders)}")
            if len(lines) >= N_EXAMPLES:
                break
        note("duplicate truth keys in the sets", int((set_counts - 1).sum()), lines)
    split_stats: dict[str, Any] = {}
    for split, seqs in present.items():
        rows6 = seqs.window_rows()  # (N, 6)
        outside = ((rows6 < 0) | (rows6 >= n_rows)).any(axis=1)
        safe = np.where(outside[:, None], 0, rows6)
        a6, c6 = article[safe], chunk[safe]  # (N, 6)
        consecutive = ((a6 == a6[:, -1:]).all(axis=1)
                       & (c6 == c6[:, -1:] - np.arange(CONTEXT, -1, -1)[None, :]).all(axis=1))
        broken = outside | ~consecutive
        key_rows = payload.rows_for_keys(seqs.truth_keys[:, 0], seqs.truth_keys[:, 1])
        unresolved = key_rows < 0
        wrong = ~unresolved & (key_rows != seqs.target_row)
        note("windows outside the payload or not 6 consecutive chunks of one article",
             int(broken.sum()),
             [f"{split} window {i}: rows {rows6[i].tolist()} are " + (
                 "outside the payload" if outside[i] else
                 "chunks " + ", ".join(f"{a}:{c}" for a, c in zip(a6[i], c6[i], strict=True))
                 + " (article:chunk); target " + payload.describe_row(int(rows6[i, -1])))
              for i in np.flatnonzero(broken)[:2]])
        note("truth keys not in the payload", int(unresolved.sum()),
             [f"{split} window {i}: truth key (article {seqs.truth_keys[i, 0]}, chunk "
              f"{seqs.truth_keys[i, 1]}) is in no payload row" for i in
              np.flatnonzero(unresolved)[:2]])
        note("truth keys naming another chunk than the window's target", int(wrong.sum()),
             [f"{split} window {i}: truth key (article {seqs.truth_keys[i, 0]}, chunk "
              f"{seqs.truth_keys[i, 1]}) names {payload.describe_row(int(key_rows[i]))}, but "
              f"the target vector is {payload.describe_row(int(seqs.target_row[i]))}"
              for i in np.flatnonzero(wrong)[:2]])
        split_stats[split] = {"windows": len(seqs), "not_consecutive": int(broken.sum()),
                              "unresolved_keys": int(unresolved.sum()),
                              "wrong_keys": int(wrong.sum()),
                              "key_coverage": float(1 - unresolved.mean())}
    bad = sum(counts.values())
    passed = bad == 0
    found = "; ".join(f"{n} {what}" for what, n in counts.items() if n)
    message = _verdict(
        passed,
        f"keys unique and exact: {sum(len(s) for s in present.values())} windows "
        f"({', '.join(f'{s} {len(v)}' for s, v in present.items())}) each name their own "
        f"target and span 6 consecutive chunks; payload keys unique "
        f"(payload {payload.build_id[:12]})",
        f"TRUTH KEYS BROKEN: {found} (threshold 0, payload {payload.build_id[:12]}). A key "
        "that names the wrong chunk makes the eval's truth wrong and the training target "
        "ambiguous; rebuild the windows from this payload or fix the keys at their source")
    return GuardResult(name, passed, rule, float(bad), 0.0, message, examples,
                       {"counts": counts, "splits": split_stats})


# --------------------------------------------------------------------------- leakage


def check_split_leakage(payload: Payload, sets: dict[str, SequenceSet],
                        threshold: float = NEAR_DUPLICATE_COSINE,
                        name: str = "check_split_leakage") -> GuardResult:
    """Train, val and eval share no article, no chunk text and no near-duplicate chunk.

    Compares every chunk each split's windows read (contexts and targets): by article, by
    normalised text hash (``corpus.text_sha256``) and by vector (nearest neighbour at cosine
    >= ``threshold``, found with FAISS). Counts per pair of splits; the reference's eval shared
    90 % of its articles with training.
    """
    rule = (f"no two splits share an article, a chunk text (normalised hash) or a "
            f"near-duplicate chunk (cosine >= {threshold})")
    article = payload.chunks["article_index"].to_numpy(np.int64)
    text_hash = payload.chunks["text_sha256"].to_numpy().astype(str)
    present = [s for s in (*SPLITS, *sorted(set(sets) - set(SPLITS))) if s in sets and len(sets[s])]
    rows = {s: sets[s].rows() for s in present}
    pairs: dict[str, dict[str, int]] = {}
    examples: list[str] = []
    for a, b in itertools.combinations(present, 2):
        shared_articles = np.intersect1d(article[rows[a]], article[rows[b]])
        shared_texts = np.intersect1d(text_hash[rows[a]], text_hash[rows[b]])
        # The smaller split goes into the index (memory: 470k train rows are 1.4 GB at 768-d);
        # a pair exists either way round.
        small, large = (a, b) if len(rows[a]) <= len(rows[b]) else (b, a)
        large_rows, small_rows, cos = near_duplicates(payload.vectors, rows[small], rows[large],
                                                      threshold)
        pair = f"{a}/{b}"
        pairs[pair] = {"articles": len(shared_articles), "texts": len(shared_texts),
                       "near_duplicates": len(large_rows)}
        for art in shared_articles[:2]:
            ra = rows[a][article[rows[a]] == art][0]
            rb = rows[b][article[rows[b]] == art][0]
            examples.append(f"{pair} share article {payload.chunks['article_id'].iloc[ra]!r}: "
                            f"{a} {payload.describe_row(int(ra))} | {b} "
                            f"{payload.describe_row(int(rb))}")
        for h in shared_texts[:2]:
            ra = rows[a][text_hash[rows[a]] == h][0]
            rb = rows[b][text_hash[rows[b]] == h][0]
            examples.append(f"{pair} share a chunk text: {a} {payload.describe_row(int(ra))} | "
                            f"{b} {payload.describe_row(int(rb))}")
        for i in np.argsort(-cos)[:2]:
            examples.append(f"{pair} near-duplicate chunks (cos {cos[i]:.4f}): {small} "
                            f"{payload.describe_row(int(small_rows[i]))} | {large} "
                            f"{payload.describe_row(int(large_rows[i]))}")
    total = sum(sum(p.values()) for p in pairs.values())
    passed = total == 0
    per_pair = "; ".join(f"{pair}: {p['articles']} articles, {p['texts']} texts, "
                         f"{p['near_duplicates']} near-duplicates" for pair, p in pairs.items())
    message = _verdict(
        passed,
        f"splits disjoint: {per_pair or 'only one split present'} "
        f"(cosine threshold {threshold}, payload {payload.build_id[:12]})",
        f"LEAKAGE between splits: {per_pair} (threshold 0 of each; near-duplicate at cosine "
        f">= {threshold}, payload {payload.build_id[:12]}). A model scored on chunks it trained "
        "on looks better than it is; split by article and drop the shared chunks")
    return GuardResult(name, passed, rule, float(total), 0.0, message, examples[:N_EXAMPLES + 1],
                       {"pairs": pairs, "splits": {s: len(sets[s]) for s in present},
                        "near_duplicate_cosine": threshold})


# --------------------------------------------------------------------------- payload


def check_payload_integrity(payload: Payload, expected_dim: int | None,
                            config: GuardConfig = GuardConfig(),
                            name: str = "check_payload_integrity") -> GuardResult:
    """Every row is finite and unit-norm, the dim is the embedder's, and rows are unique.

    Rules: no NaN / inf; ``| ||v|| - 1 | <= max_norm_error``; dim == ``expected_dim`` (the
    configured embedder's; skipped when None); no duplicate ``(article, chunk)`` key, vector
    (byte-identical row) or normalised text; no text without a single word.
    """
    tol = config.max_norm_error
    rule = (f"vectors finite, unit norm within {tol}, {expected_dim or 'any'}-d like the embedder; "
            "keys, vectors and texts unique; no empty text")
    n = len(payload)
    counts: dict[str, int] = {}
    examples: list[str] = []

    def note(what: str, bad_rows: np.ndarray, how: Callable[[int], str]) -> None:
        counts[what] = len(bad_rows)
        for r in bad_rows[:2]:
            if len(examples) < N_EXAMPLES + 1:
                examples.append(f"{what}: {how(int(r))}")

    nonfinite, off_norm = [], []
    norm_of = np.empty(n, np.float64)
    row_hash = np.empty(n, np.uint64)
    for block in _blocks(n, 65536):
        v = np.asarray(payload.vectors[block])  # (b, D) as stored
        finite = np.isfinite(v).all(axis=1)
        norms = np.linalg.norm(np.where(np.isfinite(v), v, 0).astype(np.float64), axis=1)
        norm_of[block] = norms
        nonfinite.append(block.start + np.flatnonzero(~finite))
        off_norm.append(block.start + np.flatnonzero(finite & (np.abs(norms - 1) > tol)))
        row_hash[block] = [int.from_bytes(hashlib.blake2b(r.tobytes(), digest_size=8).digest(),
                                          "little") for r in v]
    note("rows with NaN or inf", np.concatenate(nonfinite), payload.describe_row)
    note(f"rows with norm off 1 by more than {tol}", np.concatenate(off_norm),
         lambda r: f"norm {norm_of[r]:.4f}, {payload.describe_row(r)}")
    if expected_dim is not None and payload.dim != expected_dim:
        counts[f"rows of dim {payload.dim} instead of the embedder's {expected_dim}"] = n
        examples.append(f"vectors.npy is {n}×{payload.dim}; the configured embedder makes "
                        f"{expected_dim}-d vectors, so its queries cannot be searched here")

    def repeats(values: np.ndarray) -> np.ndarray:
        """Rows whose value already occurred in an earlier row."""
        return np.flatnonzero(_duplicated(values))

    article = payload.chunks["article_index"].to_numpy(np.int64)
    chunk = payload.chunks["chunk_index"].to_numpy(np.int64)
    keys = pack_keys(article, chunk)
    note("duplicate (article, chunk) keys", repeats(keys),
         lambda r: f"key (article {article[r]}, chunk {chunk[r]}) again at "
                   f"{payload.describe_row(r)}")
    dup_vec = repeats(row_hash)
    note("duplicate vectors", dup_vec,
         lambda r: f"{payload.describe_row(r)} has the vector of row "
                   f"{int(np.flatnonzero(row_hash == row_hash[r])[0])}")
    normalised = np.array([normalise_text(str(t)) for t in payload.chunks["text"]], dtype=object)
    empty = normalised == ""
    note("empty texts", np.flatnonzero(empty), payload.describe_row)
    dup_text = np.flatnonzero(_duplicated(normalised) & ~empty)
    note("duplicate texts", dup_text,
         lambda r: f"{payload.describe_row(r)} repeats row "
                   f"{int(np.flatnonzero(normalised == normalised[r])[0])}")
    if "row" in payload.chunks and not np.array_equal(payload.chunks["row"].to_numpy(),
                                                      np.arange(n)):
        counts["row numbers out of order"] = int(
            (payload.chunks["row"].to_numpy() != np.arange(n)).sum())
    bad = sum(counts.values())
    passed = bad == 0
    finite_norms = norm_of[np.isfinite(norm_of)]
    max_err = float(np.abs(finite_norms - 1).max()) if len(finite_norms) else 0.0
    found = "; ".join(f"{c} {what}" for what, c in counts.items() if c)
    message = _verdict(
        passed,
        f"payload {payload.build_id[:12]} sound: {n} rows × {payload.dim}-d, finite, unit norm "
        f"(max error {max_err:.1e} <= {tol}), keys / vectors / texts unique, no empty text",
        f"PAYLOAD BROKEN: {found} (threshold 0, payload {payload.build_id[:12]}). Nothing "
        "downstream may read it: rebuild the payload (`lvm run`) or fix its source")
    return GuardResult(name, passed, rule, float(bad), 0.0, message, examples,
                       {"counts": counts, "rows": n, "dim": payload.dim,
                        "expected_dim": expected_dim, "max_norm_error": max_err})


def _duplicated(values: np.ndarray) -> np.ndarray:
    """(N,) bool: the value already occurred at an earlier position (pandas' keep='first')."""
    return pd.Series(values).duplicated(keep="first").to_numpy()


# --------------------------------------------------------------------------- canary


def canary_rows(n_rows: int, sample: int, seed: int) -> np.ndarray:
    """The fixed sample of payload rows the canary re-embeds (sorted, seeded)."""
    rng = np.random.default_rng(seed)
    return np.sort(rng.choice(n_rows, size=min(sample, n_rows), replace=False))


def _describe_encoder(identity: dict[str, Any]) -> str:
    w, c = identity.get("weights_sha256"), identity.get("config_sha256")
    hashes = f" (weights {w[:12]}, config {c[:12]})" if w and c else ""
    return f"{identity.get('id', '?')!r}{hashes}"


def check_embedder_canary(payload: Payload, embedder: TextEncoder,
                          config: GuardConfig = GuardConfig(),
                          name: str = "check_embedder_canary") -> GuardResult:
    """Re-embedding a fixed sample of payload texts with the configured embedder gives back the
    stored vectors (minimum cosine >= ``min_canary_cosine``).

    Catches "same name, different encoder": another pooling or model behind the same id, a
    payload imported from elsewhere, an encoder upgraded in place. The recorded and the
    configured fingerprints go in the message, but the vectors decide.
    """
    threshold = config.min_canary_cosine
    configured = embedder.identity()
    recorded = dict(payload.manifest.get("embedder", {}))
    rule = (f"re-embedding {config.canary_sample} payload texts with the configured embedder "
            f"gives cosine >= {threshold} to the stored vectors")
    who = (f"configured embedder {_describe_encoder(configured)}; payload "
           f"{payload.build_id[:12]} records {_describe_encoder(recorded)}")
    same_weights = (recorded.get("weights_sha256") is not None
                    and recorded.get("weights_sha256") == configured.get("weights_sha256"))
    same_config = recorded.get("config_sha256") == configured.get("config_sha256")
    details: dict[str, Any] = {"configured": configured, "recorded": recorded,
                               "same_weights": same_weights, "same_config": same_config}
    if embedder.dim != payload.dim:
        return GuardResult(name, False, rule, 0.0, threshold,
                           f"ENCODER MISMATCH: the configured embedder makes {embedder.dim}-d "
                           f"vectors, the payload holds {payload.dim}-d ones ({who})", [],
                           details)
    rows = canary_rows(len(payload), config.canary_sample, config.seed)
    texts = payload.chunks["text"].iloc[rows].astype(str).tolist()
    fresh = np.asarray(embedder.encode(texts), dtype=np.float32)  # (S, D)
    stored = np.asarray(payload.vectors[rows], dtype=np.float32)  # (S, D)
    cos = _rowwise_cos(fresh, stored)
    cos = np.where(np.isfinite(cos), cos, -1.0)
    worst = np.argsort(cos)[:N_EXAMPLES]
    passed = bool(cos.min() >= threshold)
    examples = [f"cos {cos[i]:.3f}: {payload.describe_row(int(rows[i]))}" for i in worst
                if cos[i] < threshold]
    hint = ("same weights, other configuration (pooling / normalisation)" if same_weights
            and not same_config else "other weights" if recorded.get("weights_sha256")
            and not same_weights else "fingerprints agree" if same_weights else
            "the payload records no fingerprint (imported)")
    message = _verdict(
        passed,
        f"the configured encoder reproduces the payload: min cosine {cos.min():.4f} "
        f"(mean {cos.mean():.4f}) over {len(rows)} texts >= {threshold}; {who}",
        f"ENCODER MISMATCH: re-embedding {len(rows)} payload texts gives min cosine "
        f"{cos.min():.3f} (mean {cos.mean():.3f}) to the stored vectors, below {threshold}; "
        f"{who}: {hint}. Queries embedded by this encoder will not find these vectors; rebuild "
        "the payload with it or configure the encoder the payload was built with")
    details.update(rows=rows.tolist(), cos_min=float(cos.min()), cos_mean=float(cos.mean()))
    return GuardResult(name, passed, rule, float(cos.min()), threshold, message, examples,
                       details)


# --------------------------------------------------------------------------- learnability


def learnability_k(n_rows: int, config: GuardConfig) -> int:
    """Contain@k's k: the configured one, capped at 1 % of the candidates so that
    ``ratio × chance`` stays reachable on a small payload (450 rows → k = 4)."""
    return max(1, min(config.learnability_k, (n_rows - CONTEXT) // 100))


def _normal_equations(vectors: np.ndarray, seqs: SequenceSet, rows: np.ndarray
                      ) -> tuple[np.ndarray, np.ndarray]:
    """X^T X (5D, 5D) and X^T R (5D, D) in float64 over windows ``rows`` of ``seqs``, with X
    (n, 5D) the flattened contexts and R (n, D) = target - last context, built block by block."""
    d = vectors.shape[1]
    xtx = np.zeros((CONTEXT * d, CONTEXT * d))
    xtr = np.zeros((CONTEXT * d, d))
    for block in _blocks(len(rows), 4096):
        idx = rows[block]
        ctx = gather(vectors, seqs.context_rows[idx])  # (b, 5, D)
        x = ctx.reshape(len(idx), CONTEXT * d)  # (b, 5D)
        r = gather(vectors, seqs.target_row[idx]) - ctx[:, -1]  # (b, D)
        xtx += (x.T @ x).astype(np.float64)
        xtr += (x.T @ r).astype(np.float64)
    return xtx, xtr


def _ridge(xtx: np.ndarray, xtr: np.ndarray, penalty: float, n: int) -> np.ndarray:
    """W = (X^T X + penalty·n·I)^-1 X^T R: (5D, D) float64, by Cholesky (the matrix is SPD)."""
    import torch

    a = torch.from_numpy(xtx + penalty * n * np.eye(len(xtx)))
    return torch.cholesky_solve(torch.from_numpy(xtr), torch.linalg.cholesky(a)).numpy()


def _contain_at_k(vectors: np.ndarray, seqs: SequenceSet, rows: np.ndarray,
                  weights: np.ndarray | None, k: int) -> float:
    """Share of windows ``rows`` whose target ranks in the top k for the prediction
    last context + X·W (``weights`` None: the last context alone, the copy-last baseline), the
    window's own context rows excluded from the candidates as in the retrieval report."""
    from lvm_pipeline.evaluation import truth_ranks

    d = vectors.shape[1]
    ctx = gather(vectors, seqs.context_rows[rows])  # (Q, 5, D)
    pred = ctx[:, -1].astype(np.float64)  # (Q, D)
    if weights is not None:
        pred += ctx.reshape(len(rows), CONTEXT * d).astype(np.float64) @ weights
    pred /= np.maximum(np.linalg.norm(pred, axis=1, keepdims=True), 1e-12)
    ranks = truth_ranks(pred.astype(np.float32), vectors,
                        seqs.target_row[rows].astype(np.int64),
                        seqs.context_rows[rows].astype(np.int64))
    return float(np.mean(ranks <= k))


def check_learnability(payload: Payload, train: SequenceSet, val: SequenceSet,
                       config: GuardConfig = GuardConfig(),
                       name: str = "check_learnability") -> GuardResult:
    """A closed-form ridge predictor fit on training windows retrieves held-out targets far
    above chance: Contain@k >= ``min_learnability_ratio`` × chance on the val split *and* on
    train articles held out of the fit.

    The reference's lesson was "test end to end before full training". The predictor is the
    last context vector plus a ridge map of the 5 flattened context vectors (5D → D) fit to the
    residual (target − last context); its penalty is chosen among :data:`RIDGE_PENALTIES` on the
    held-out train articles. A large penalty leaves the last context alone, which is why a few
    hundred windows still pass (a ridge on raw contexts needs many times 5D windows before it
    beats chance across articles; on the default it reached only 0.35 Contain@50 where copy-last
    gets 0.53). Scoring both the held-out train windows and val means a defect in either split
    fails it, whatever the defect: shuffled targets, contexts from another encoder, windows
    cut across articles. Chance is k / (rows - 5): the truth's rank among the candidates left
    after the window's own 5 context rows are excluded.
    """
    n_rows = len(payload)
    k = learnability_k(n_rows, config)
    chance = k / max(n_rows - CONTEXT, 1)
    need = config.min_learnability_ratio * chance
    rule = (f"a ridge predictor fit on train windows retrieves held-out train and val targets: "
            f"Contain@{k} >= {config.min_learnability_ratio:g} × chance ({chance:.4f}) = "
            f"{need:.4f} on both")
    if len(train) < 2 or len(val) == 0:
        return GuardResult(name, False, rule, 0.0, need,
                           f"NOT LEARNABLE: cannot measure with {len(train)} train and {len(val)} "
                           "val windows (need >= 2 and >= 1)")
    rng = np.random.default_rng(config.seed)
    fit = np.sort(rng.choice(len(train), min(len(train), config.learnability_max_windows),
                             replace=False))
    queries = np.sort(rng.choice(len(val), min(len(val), config.learnability_max_queries),
                                 replace=False))
    # Hold out ~20 % of the train articles (at least one): the penalty is chosen on them and
    # they are the train half of the figure.
    articles = np.unique(train.truth_keys[fit, 0])
    draw = np.random.default_rng(config.seed + 1).random(len(articles))
    held_articles = articles[draw <= max(0.2, draw.min())] if len(articles) > 1 else articles[:0]
    held_mask = np.isin(train.truth_keys[fit, 0], held_articles)
    held = fit[held_mask][:config.learnability_max_queries]
    xtx_fit, xtr_fit = _normal_equations(payload.vectors, train, fit[~held_mask])
    n_fit = int((~held_mask).sum())
    scores: dict[str, float] = {}
    if len(held):
        for penalty in RIDGE_PENALTIES:
            w = _ridge(xtx_fit, xtr_fit, penalty, n_fit)
            scores[f"{penalty:g}"] = _contain_at_k(payload.vectors, train, held, w, k)
        chosen = max(scores, key=lambda p: scores[p])
        penalty, held_contain = float(chosen), scores[chosen]
    else:
        penalty, held_contain = 1.0, None
    xtx_held, xtr_held = _normal_equations(payload.vectors, train, fit[held_mask])
    weights = _ridge(xtx_fit + xtx_held, xtr_fit + xtr_held, penalty, len(fit))
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
    message = _verdict(
        passed, f"learnable: {figures}",
        f"NOT LEARNABLE: {figures}. Contexts do not predict their targets in this data: the "
        "windows are misaligned in some way; no model should train on them")
    examples = [] if passed else [
        f"{split} window {i}: target {payload.describe_row(int(s.target_row[i]))}; last context "
        f"{payload.describe_row(int(s.context_rows[i, -1]))}"
        for split, s, rows in (("val", val, queries), ("train", train, held)) for i in rows[:2]]
    return GuardResult(name, passed, rule, figure, need, message, examples,
                       {"k": k, "chance": chance, "val_contain": val_contain,
                        "heldout_train_contain": held_contain, "ratio": figure / chance,
                        "penalty": penalty, "penalty_scores_on_heldout": scores,
                        "copy_last_val_contain": copy_last, "fit_windows": len(fit),
                        "heldout_windows": len(held), "val_queries": len(queries)})


# --------------------------------------------------------------------------- index, lineage


def check_index(index: Any, payload: Payload, config: GuardConfig = GuardConfig(),
                name: str = "check_index") -> GuardResult:
    """The index holds the payload's vectors *under the payload's row numbers*: every sampled
    row finds itself at rank 1 (or a byte-identical row). A tie on the score alone is not
    enough: an index with the same vectors in another order ties everywhere, and would
    return the wrong rows for every query."""
    threshold = config.min_index_self_recall
    rows = canary_rows(len(payload), 256, config.seed)
    queries = np.asarray(payload.vectors[rows], dtype=np.float32)  # (S, D)
    _, ids = index.search(np.ascontiguousarray(queries), 1)  # (S, 1)
    found = ids[:, 0]
    inside = (found >= 0) & (found < len(payload))
    same = np.zeros(len(rows), dtype=bool)
    same[inside] = (gather(payload.vectors, found[inside]) == queries[inside]).all(axis=1)
    hit = (found == rows) | same
    recall = float(hit.mean())
    passed = recall >= threshold
    examples = [f"row {r} retrieves row {f} first: {payload.describe_row(int(r))}"
                for r, f in zip(rows[~hit][:3], found[~hit][:3], strict=True)]
    message = _verdict(
        passed,
        f"index of {index.ntotal} vectors returns {recall:.3f} of {len(rows)} sampled payload "
        f"rows themselves at rank 1 (threshold {threshold}, payload {payload.build_id[:12]})",
        f"INDEX DISAGREES WITH PAYLOAD: self-recall@1 {recall:.3f} < {threshold} over "
        f"{len(rows)} sampled rows (payload {payload.build_id[:12]}); its row numbers are not "
        "the payload's: rebuild the index")
    return GuardResult(name, passed, "every sampled payload row retrieves itself (or an "
                       f"identical row) at rank 1: self-recall >= {threshold}", recall,
                       threshold, message, examples)


# Upstream names in manifests that are not artifact kinds.
UPSTREAM_KINDS = {"eval": "sequences/eval"}


def check_lineage(store: ArtifactStore, build: Build, name: str = "check_lineage") -> GuardResult:
    """Every build this one was made from is still the current build of its kind.

    A report over index I1 while the index is now I2 (or a checkpoint over sequences S1 while
    S2 is current) describes artifacts that are no longer the ones in use.
    """
    stale, checked = [], {}
    for up_name, up_id in sorted(build.manifest.get("upstream", {}).items()):
        kind = UPSTREAM_KINDS.get(up_name, up_name)
        current = store.current(kind).build_id if store.has_current(kind) else None
        checked[kind] = {"built_from": up_id, "current": current}
        if current != up_id:
            stale.append(f"{build.kind} {build.build_id[:12]} was built from {kind} "
                         f"{up_id[:12]}, but the current {kind} is "
                         f"{current[:12] if current else 'missing'}")
    passed = not stale
    message = _verdict(
        passed,
        f"{build.kind} {build.build_id[:12]} was built from the current "
        f"{', '.join(checked) or 'inputs'}",
        f"STALE LINEAGE: {len(stale)} of its inputs changed since {build.kind} "
        f"{build.build_id[:12]} was built (threshold 0); rebuild it (`lvm run`)")
    return GuardResult(name, passed, "every input of the build is the current build of its kind",
                       float(len(stale)), 0.0, message, stale, {"upstream": checked})


# --------------------------------------------------------------------------- suites


def require_passed(results: list[GuardResult]) -> list[GuardResult]:
    """Raise :class:`GuardError` naming every failed guard; return the results otherwise."""
    failed = [r for r in results if not r.passed]
    if failed:
        raise GuardError("\n".join(r.full_message() for r in failed))
    return results


_MEMO: OrderedDict[tuple, list[GuardResult]] = OrderedDict()
_MEMO_SIZE = 32


def _memo(key: tuple, compute: Callable[[], list[GuardResult]]) -> list[GuardResult]:
    """Results of a suite per content: builds are content-addressed and the suites re-hash
    their files before asking (the payload is re-hashed when it is loaded), so the five
    trainers of one run need not re-embed the canary or re-run the searches five times."""
    if key not in _MEMO:
        _MEMO[key] = compute()
        while len(_MEMO) > _MEMO_SIZE:
            _MEMO.popitem(last=False)
    _MEMO.move_to_end(key)
    return _MEMO[key]


def payload_guards(payload: Payload, embedder: TextEncoder,
                   config: GuardConfig = GuardConfig()) -> list[GuardResult]:
    """What every reader of a payload verifies: integrity and the embedder canary."""
    ident = embedder.identity()
    key = ("payload", payload.build_id, ident.get("id"), ident.get("weights_sha256"),
           ident.get("config_sha256"), embedder.dim, config)
    return _memo(key, lambda: [
        check_payload_integrity(payload, embedder.dim, config, "check_payload_integrity"),
        check_embedder_canary(payload, embedder, config, "check_payload_embedder_canary")])


def _verify(*builds: Build | None) -> None:
    """Re-hash every file of the builds (raises naming a tampered one): a memoised verdict
    must never stand in for files that changed since."""
    for build in builds:
        if build is not None:
            build.verify()


def _compatible(build: Build | None, payload: Payload) -> bool:
    return build is not None and build.manifest.get("payload_build_id") == payload.build_id


def _leakage(payload: Payload, train_build: Build | None, eval_build: Build | None,
             config: GuardConfig) -> GuardResult:
    """Leakage between the splits of two builds, once per content: the trainers' and the
    evaluator's suites and both sides of the Dagster check share it (the FAISS search is the
    costliest guard on a large corpus)."""
    key = ("leakage", payload.build_id, train_build.build_id if train_build else None,
           eval_build.build_id if eval_build else None, config.near_duplicate_cosine)

    def compute() -> list[GuardResult]:
        sets = {**(load_sets(train_build) if train_build else {}),
                **(load_sets(eval_build) if eval_build else {})}
        return [check_split_leakage(payload, sets, config.near_duplicate_cosine,
                                    "check_splits_disjoint")]

    return _memo(key, compute)[0]


def training_guards(payload: Payload, train_build: Build, eval_build: Build | None,
                    config: GuardConfig = GuardConfig()) -> list[GuardResult]:
    """What a trainer verifies before reading ``train_build``: lineage (raises), alignment,
    truth keys, leakage (against eval when ``eval_build`` indexes the same payload) and
    learnability."""
    require_payload(train_build, payload)
    eval_build = eval_build if _compatible(eval_build, payload) else None
    _verify(train_build, eval_build)
    key = ("training", payload.build_id, train_build.build_id,
           eval_build.build_id if eval_build else None, config)

    def compute() -> list[GuardResult]:
        sets = load_sets(train_build)
        return [check_alignment(payload, sets, config.min_alignment_cosine,
                                "check_training_sequences_aligned"),
                check_truth_keys(payload, sets, "check_training_truth_keys"),
                _leakage(payload, train_build, eval_build, config),
                check_learnability(payload, sets["train"], sets["val"], config,
                                   "check_training_learnable")]

    return _memo(key, compute)


def evaluation_guards(payload: Payload, eval_build: Build, train_builds: list[Build],
                      config: GuardConfig = GuardConfig()) -> list[GuardResult]:
    """What the evaluator verifies before reading ``eval_build``: lineage (raises), alignment,
    truth keys, and leakage against every training set the evaluated models were trained on
    (those that index the same payload; a model of another payload is refused on its own)."""
    require_payload(eval_build, payload)
    trains = [b for _, b in sorted({b.build_id: b for b in train_builds
                                    if _compatible(b, payload)}.items())]
    _verify(eval_build, *trains)
    key = ("evaluation", payload.build_id, eval_build.build_id,
           tuple(b.build_id for b in trains), config)

    def compute() -> list[GuardResult]:
        sets = load_sets(eval_build)
        return [check_alignment(payload, sets, config.min_alignment_cosine,
                                "check_eval_sequences_aligned"),
                check_truth_keys(payload, sets, "check_eval_truth_keys"),
                *[_leakage(payload, train, eval_build, config) for train in trains or [None]]]

    return _memo(key, compute)
