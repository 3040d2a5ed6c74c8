"""Payload integrity guard: finite unit-norm rows of the embedder's dim, unique keys, vectors
and texts, no empty text."""

from __future__ import annotations

import hashlib
from collections.abc import Callable

import numpy as np
import pandas as pd

from lvm_pipeline.corpus import normalise_text
from lvm_pipeline.embedding import row_norms
from lvm_pipeline.guards.config import GuardConfig
from lvm_pipeline.guards.result import N_EXAMPLES, GuardResult, blocks, verdict
from lvm_pipeline.payload import Payload, pack_keys


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

    nonfinite, off_norm, norm_of, row_hash = _scan_vectors(payload.vectors, tol)
    note("rows with NaN or inf", nonfinite, payload.describe_row)
    note(f"rows with norm off 1 by more than {tol}", off_norm,
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
    message = verdict(
        passed,
        f"payload {payload.build_id[:12]} sound: {n} rows × {payload.dim}-d, finite, unit norm "
        f"(max error {max_err:.1e} <= {tol}), keys / vectors / texts unique, no empty text",
        f"PAYLOAD BROKEN: {found} (threshold 0, payload {payload.build_id[:12]}). Nothing "
        "downstream may read it: rebuild the payload (`lvm run`) or fix its source")
    return GuardResult(name, passed, rule, float(bad), 0.0, message, examples,
                       {"counts": counts, "rows": n, "dim": payload.dim,
                        "expected_dim": expected_dim, "max_norm_error": max_err},
                       measure="broken_rows")


def _scan_vectors(vectors: np.ndarray, tol: float
                  ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """One pass over the (R, D) vectors in blocks, so that a memory-mapped payload is read once
    and never held whole: the rows with NaN or inf, the finite rows whose norm is off 1 by more
    than ``tol``, each row's norm (R,) float64 (of its finite entries) and a hash of its bytes
    (R,) uint64, which finds duplicate vectors without comparing rows pairwise."""
    n = len(vectors)
    nonfinite, off_norm = [], []
    norm_of = np.empty(n, np.float64)
    row_hash = np.empty(n, np.uint64)
    for block in blocks(n, 65536):
        v = np.asarray(vectors[block])  # (b, D) as stored
        finite = np.isfinite(v).all(axis=1)
        norms = row_norms(np.where(np.isfinite(v), v, 0))
        norm_of[block] = norms
        nonfinite.append(block.start + np.flatnonzero(~finite))
        off_norm.append(block.start + np.flatnonzero(finite & (np.abs(norms - 1) > tol)))
        row_hash[block] = [int.from_bytes(hashlib.blake2b(r.tobytes(), digest_size=8).digest(),
                                          "little") for r in v]
    return np.concatenate(nonfinite), np.concatenate(off_norm), norm_of, row_hash


def _duplicated(values: np.ndarray) -> np.ndarray:
    """(N,) bool: the value already occurred at an earlier position (pandas' keep='first')."""
    return pd.Series(values).duplicated(keep="first").to_numpy()
