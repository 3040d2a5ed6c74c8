"""Foreign, vector-valued training sets: import by nearest-neighbour alignment, and export.

The reference project kept training windows as copied vectors in an ``.npz``:
``context_sequences`` (N, 5, D), ``target_vectors`` (N, D), optionally ``truth_keys`` (N, 2)
= (article_index, chunk_index) and ``provenance`` (a JSON string). Importing one aligns every
target **and every context vector** to its nearest payload row with FAISS and keeps the
measured cosines next to the rows, so the alignment guard decides on a measurement: vectors
from another encoder sit far from their nearest row, vectors cut from the payload at 1.0 (the
figures: docs/guards.md, "The ten failures", row 1). Export writes our windows back into
that layout for tools that still read it.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from lvm_pipeline.embedding import unit_rows
from lvm_pipeline.payload import Payload, gather, int32_keys
from lvm_pipeline.runtime import Progress, silent
from lvm_pipeline.search import IndexConfig, build_index
from lvm_pipeline.sequences import CONTEXT, SequenceSet, SplitConfig, article_splits
from lvm_pipeline.store import sha256_file

SEARCH_BLOCK = 8192


class ForeignSetError(ValueError):
    """A foreign training set cannot be read; the message names the file and the rule."""


def _load_npz(path: Path, dim: int) -> dict[str, Any]:
    if not path.exists():
        raise ForeignSetError(f"{path}: training set file does not exist")
    try:
        # allow_pickle=False: an .npz from elsewhere must not be able to run code on load.
        with np.load(path, allow_pickle=False) as npz:
            data = {k: npz[k] for k in npz.files}
    except ValueError as err:
        raise ForeignSetError(f"{path}: holds pickled objects, which are refused ({err})") from None
    except Exception as err:
        raise ForeignSetError(f"{path}: not a readable .npz ({err})") from None
    for key in ("context_sequences", "target_vectors"):
        if key not in data:
            raise ForeignSetError(f"{path}: missing array {key!r} (has {sorted(data)}); expected "
                               "context_sequences [N,5,D], target_vectors [N,D]")
    ctx, tgt = data["context_sequences"], data["target_vectors"]
    n = len(tgt)
    if ctx.ndim != 3 or ctx.shape[1] != CONTEXT or tgt.ndim != 2 or ctx.shape[0] != n:
        raise ForeignSetError(f"{path}: context_sequences {ctx.shape} / target_vectors {tgt.shape}: "
                           f"expected [N,{CONTEXT},D] and [N,D] with the same N")
    if n == 0:
        raise ForeignSetError(f"{path}: holds no windows (context_sequences {ctx.shape}, "
                              f"target_vectors {tgt.shape}); nothing to import")
    if tgt.shape[1] != dim or ctx.shape[2] != dim:
        raise ForeignSetError(f"{path}: vectors are {tgt.shape[1]}-d but the payload is {dim}-d; "
                           "they come from another encoder")
    if "truth_keys" in data:
        if data["truth_keys"].shape != (n, 2):
            raise ForeignSetError(f"{path}: truth_keys {data['truth_keys'].shape}, expected "
                                  f"({n}, 2)")
        # Files carry int64 keys (export_training_npz writes them so); ours are int32.
        data["truth_keys"] = int32_keys(data["truth_keys"], f"{path} truth_keys",
                                        ForeignSetError)
    for key in ("context_sequences", "target_vectors"):
        finite = np.isfinite(data[key]).reshape(n, -1).all(axis=1)
        if not finite.all():
            raise ForeignSetError(f"{path}: {key} row {int(np.flatnonzero(~finite)[0])} holds NaN "
                               "or inf")
    return data


def nearest_rows(payload: Payload, queries: np.ndarray, progress: Progress = silent
                 ) -> tuple[np.ndarray, np.ndarray]:
    """Nearest payload row of each query and its cosine. queries: (Q, D) → (Q,) int64,
    (Q,) float32. Exact: a flat index over the (unit) payload, queries normalised."""
    index = build_index(payload.vectors, IndexConfig(type="flat"))
    rows = np.empty(len(queries), np.int64)
    cos = np.empty(len(queries), np.float32)
    for lo in range(0, len(queries), SEARCH_BLOCK):
        q = unit_rows(queries[lo:lo + SEARCH_BLOCK])  # (b, D)
        scores, ids = index.search(q, 1)
        rows[lo:lo + len(q)], cos[lo:lo + len(q)] = ids[:, 0], scores[:, 0]
        progress(min(lo + SEARCH_BLOCK, len(queries)), len(queries))
    return rows, cos


def import_training_npz(path: str | Path, payload: Payload, split: SplitConfig,
                        progress: Progress = silent) -> tuple[dict[str, SequenceSet], dict]:
    """Align a reference-layout ``.npz`` to the payload → train / val sets and import facts.

    Windows go to val when the article of their aligned target is a val article of ``split``,
    else to train (also when it is an eval article: the leakage guard then says so).
    """
    path = Path(path)
    data = _load_npz(path, payload.dim)
    n = len(data["target_vectors"])
    target_row, target_cos = nearest_rows(payload, data["target_vectors"], progress)
    ctx_row, ctx_cos = nearest_rows(payload, data["context_sequences"].reshape(-1, payload.dim))
    context_rows = ctx_row.reshape(n, CONTEXT).astype(np.int32)
    context_cos = ctx_cos.reshape(n, CONTEXT)
    article_index = payload.chunks["article_index"].to_numpy()
    chunk_index = payload.chunks["chunk_index"].to_numpy()
    if "truth_keys" in data:
        truth_keys = data["truth_keys"]  # int32, checked when loaded
        key_source = "npz truth_keys"
    else:
        truth_keys = np.stack([article_index[target_row], chunk_index[target_row]], axis=1)
        key_source = "keys of the nearest payload rows (the .npz has no truth_keys)"
    split_of = article_splits(payload, split)
    is_val = np.array([split_of.get(int(a)) == "val" for a in article_index[target_row]],
                      dtype=bool)
    sets = {}
    for name, mask in (("train", ~is_val), ("val", is_val)):
        sets[name] = SequenceSet(name, context_rows[mask], target_row[mask].astype(np.int32),
                                 truth_keys[mask].astype(np.int32), target_cos[mask],
                                 context_cos[mask])
    provenance = str(data["provenance"]) if "provenance" in data else None
    info = {
        "source": {"kind": "imported npz", "path": str(path.resolve()),
                   "sha256": sha256_file(path), "windows": n, "truth_keys": key_source,
                   "provenance": provenance},
        "alignment": {"target_cos_min": float(target_cos.min()) if n else None,
                      "target_cos_mean": float(target_cos.mean()) if n else None,
                      "context_cos_min": float(context_cos.min()) if n else None,
                      "context_cos_mean": float(context_cos.mean()) if n else None},
    }
    return sets, info


def export_training_npz(path: str | Path, payload: Payload, sets: dict[str, SequenceSet],
                        provenance: dict[str, Any]) -> Path:
    """Write windows as the reference ``.npz`` (copied vectors; atomically: temp + rename)."""
    path = Path(path)
    splits = list(sets)
    context_rows = np.concatenate([sets[s].context_rows for s in splits])
    target_row = np.concatenate([sets[s].target_row for s in splits])
    truth_keys = np.concatenate([sets[s].truth_keys for s in splits])
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".npz", dir=path.parent)
    os.close(fd)
    try:
        np.savez(tmp, context_sequences=gather(payload.vectors, context_rows),
                 target_vectors=gather(payload.vectors, target_row),
                 truth_keys=truth_keys.astype(np.int64),
                 provenance=np.array(json.dumps(
                     {**provenance, "splits": splits,
                      "split_windows": {s: len(sets[s]) for s in splits}}, sort_keys=True)))
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path
