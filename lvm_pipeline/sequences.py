"""Training and eval windows, stored as row indices into one payload build.

A window is 5 consecutive chunks of one article (the context) and the chunk after them (the
target). Windows hold *payload rows*, never copied vectors: contexts and targets are payload
vectors by construction (the reference's "aligned" eval replaced only the targets), and 495k
windows cost ~12 MB of int32 instead of ~6 GB of float32.

Splits are by **article**: every article is ranked by ``sha256(seed:article_id)`` and the first
``eval_fraction`` go to eval, the next ``val_fraction`` to val, the rest to train, so no article
is in two splits and the assignment does not depend on corpus order. Articles are not the only
way text leaks: boilerplate paragraphs (the docstring sample repeats "Indices can be obtained
using [`AutoTokenizer`]…" across models with a word changed) embed at cosine >= 0.995 in
different articles. So after the article split, a val window that uses a chunk nearly identical
to an eval chunk is dropped, and so is a train window that uses a chunk nearly identical to an
eval or val chunk (eval stays whole: it is the yardstick). :func:`near_duplicates` finds them
with FAISS; the leakage guard measures the same thing on whatever sets it is given.

Files of a build (``sequences/train`` holds splits ``train`` and ``val``; ``sequences/eval``
holds ``eval``), per split folder: ``context_rows.npy`` (N, 5) int32, ``target_row.npy`` (N,)
int32, ``truth_keys.npy`` (N, 2) int32 = (article_index, chunk_index) of the target; imported
sets add ``target_cos.npy`` (N,) and ``context_cos.npy`` (N, 5) float32, the measured cosine of
each foreign vector to the payload row it was aligned to.
"""

from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import faiss
import numpy as np

from lvm_pipeline.artifacts import ArtifactError, ArtifactStore, Build
from lvm_pipeline.index import MIN_POINTS_PER_CELL, sample_rows
from lvm_pipeline.payload import Payload

CONTEXT = 5
TRAIN_KIND = "sequences/train"
EVAL_KIND = "sequences/eval"
SPLITS_OF_KIND = {TRAIN_KIND: ("train", "val"), EVAL_KIND: ("eval",)}
ARRAYS = ("context_rows", "target_row", "truth_keys")
OPTIONAL_ARRAYS = ("target_cos", "context_cos")
SPLITS = ("train", "val", "eval")
# Two chunks at cosine >= 0.995 are the same text with a word or two changed (measured on the
# default sample: "Converts a token (str) to/in an id using the vocab." is 0.993; unrelated
# chunks of one article sit near 0.5). A pair above it in two splits is leakage.
NEAR_DUPLICATE_COSINE = 0.995
# Rows added to / searched in the FAISS index per call: bounds the temporary float32 copies.
SEARCH_BLOCK = 65536
# Near-duplicate search: exact (every pair) up to this many row pairs, i.e. any payload up to
# ~80k rows at the default split, the default run included. Above it, cells, which cost a
# k-means (~7 s on 2 cores) plus little: measured at the reference's 584k rows, val against
# eval (2.6e9 pairs) took 36 s exact and 11 s in cells, train against both ~20 min exact.
EXACT_PAIRS = 1_000_000_000
# Cells of the IVF search and cells probed per row. A pair at cosine >= 0.995 is <= 0.1 apart,
# so both rows almost always fall in the same cell: on corpus-like 768-d vectors (the test)
# every one of 300 planted pairs at 0.9955-0.9999 was found probing 1 cell; 2 is the margin.
# The cost is linear in the probes (each probe is one GEMM of the queries in a cell against its
# rows, see _cell_nearest).
NEAR_DUPLICATE_CELLS = 1024
NEAR_DUPLICATE_PROBES = 2
NEAR_DUPLICATE_TRAIN = 65536


@dataclass(frozen=True)
class SplitConfig:
    """How articles are assigned to train / val / eval; written into every sequence manifest."""

    seed: int = 0
    val_fraction: float = 0.1
    eval_fraction: float = 0.1
    # Windows using a chunk this close to a chunk of a later split are dropped (module docstring).
    near_duplicate_cosine: float = NEAR_DUPLICATE_COSINE

    def __post_init__(self) -> None:
        if not (0 < self.val_fraction < 1 and 0 < self.eval_fraction < 1
                and self.val_fraction + self.eval_fraction < 1):
            raise ValueError(f"split fractions must be in (0, 1) and sum below 1: {self}")
        if not 0 < self.near_duplicate_cosine <= 1:
            raise ValueError(f"near_duplicate_cosine must be in (0, 1]: {self}")


@dataclass
class SequenceSet:
    """One split's windows. Shapes: context_rows (N, 5) int32, target_row (N,) int32,
    truth_keys (N, 2) int32; optional target_cos (N,), context_cos (N, 5) float32."""

    split: str
    context_rows: np.ndarray
    target_row: np.ndarray
    truth_keys: np.ndarray
    target_cos: np.ndarray | None = None
    context_cos: np.ndarray | None = None

    def __post_init__(self) -> None:
        n = len(self.target_row)
        assert self.context_rows.shape == (n, CONTEXT), self.context_rows.shape
        assert self.truth_keys.shape == (n, 2), self.truth_keys.shape

    def __len__(self) -> int:
        return len(self.target_row)

    def articles(self) -> np.ndarray:
        """Sorted unique article indices of the targets."""
        return np.unique(self.truth_keys[:, 0])

    def window_rows(self) -> np.ndarray:
        """Every payload row of each window, contexts then target: (N, 6) int64."""
        return np.concatenate([self.context_rows, self.target_row[:, None]], axis=1).astype(np.int64)

    def rows(self) -> np.ndarray:
        """Sorted unique payload rows the windows read (contexts and targets)."""
        return np.unique(self.window_rows())

    def subset(self, mask: np.ndarray) -> SequenceSet:
        """The windows where ``mask`` (N,) bool is true, optional arrays included."""
        return SequenceSet(self.split, self.context_rows[mask], self.target_row[mask],
                           self.truth_keys[mask],
                           None if self.target_cos is None else self.target_cos[mask],
                           None if self.context_cos is None else self.context_cos[mask])

    def save(self, folder: Path) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        for name in (*ARRAYS, *OPTIONAL_ARRAYS):
            array = getattr(self, name)
            if array is not None:
                np.save(folder / f"{name}.npy", array)

    @classmethod
    def load(cls, build: Build, split: str, verify: bool = True) -> SequenceSet:
        arrays: dict[str, Any] = {}
        for name in (*ARRAYS, *OPTIONAL_ARRAYS):
            key = f"{split}/{name}.npy"
            if key in build.manifest["files"]:
                # allow_pickle=False: our arrays are plain numbers; a file that needs pickle is not ours.
                arrays[name] = np.load(build.file(key, verify), allow_pickle=False)
            elif name in ARRAYS:
                raise ArtifactError(f"{build.path}: split {split!r} has no {name}.npy")
        return cls(split=split, **arrays)


def windows(article_index: np.ndarray, chunk_index: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Every window of payload rows whose 6 chunks are consecutive chunks of one article.

    article_index, chunk_index: (R,) int, the payload table in row order.
    Returns context_rows (N, 5) int32 and target_row (N,) int32, in row order.
    """
    a = np.asarray(article_index, dtype=np.int64)
    c = np.asarray(chunk_index, dtype=np.int64)
    rows = len(a)
    if rows <= CONTEXT:
        return np.empty((0, CONTEXT), np.int32), np.empty(0, np.int32)
    # Row t may be a target when rows t-5..t are one article with chunk indices c[t]-5..c[t].
    step_ok = (a[1:] == a[:-1]) & (c[1:] == c[:-1] + 1)  # (R-1,): row i+1 follows row i
    run = np.convolve(step_ok.astype(np.int64), np.ones(CONTEXT, np.int64), mode="valid")
    target_row = np.flatnonzero(run == CONTEXT) + CONTEXT  # (N,)
    context_rows = target_row[:, None] - np.arange(CONTEXT, 0, -1)[None, :]  # (N, 5)
    return context_rows.astype(np.int32), target_row.astype(np.int32)


def windows_ref(article_index: np.ndarray, chunk_index: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Slow, obvious version of :func:`windows` for the parity test."""
    contexts, targets = [], []
    for t in range(CONTEXT, len(article_index)):
        span = range(t - CONTEXT, t + 1)
        if all(article_index[r] == article_index[t] for r in span) and all(
            chunk_index[r] == chunk_index[t] - (t - r) for r in span
        ):
            contexts.append(list(range(t - CONTEXT, t)))
            targets.append(t)
    return (np.array(contexts, np.int32).reshape(-1, CONTEXT), np.array(targets, np.int32))


def assign_splits(article_ids: list[str], config: SplitConfig) -> dict[str, str]:
    """article id → ``train`` / ``val`` / ``eval`` by a seeded hash rank (see module docstring)."""
    ranked = sorted(article_ids,
                    key=lambda a: hashlib.sha256(f"{config.seed}:{a}".encode()).hexdigest())
    n = len(ranked)
    n_eval = max(1, round(n * config.eval_fraction))
    n_val = max(1, round(n * config.val_fraction))
    if n < 3:
        raise ValueError(f"need at least 3 articles with {CONTEXT + 1}+ chunks to split, got {n}")
    return {a: "eval" if i < n_eval else "val" if i < n_eval + n_val else "train"
            for i, a in enumerate(ranked)}


def article_splits(payload: Payload, config: SplitConfig) -> dict[int, str]:
    """article_index → split, for every article long enough to hold a window."""
    article_index = payload.chunks["article_index"].to_numpy()
    _, target_row = windows(article_index, payload.chunks["chunk_index"].to_numpy())
    eligible = np.unique(article_index[target_row])
    id_of = payload.chunks.drop_duplicates("article_index").set_index("article_index")["article_id"]
    split_of = assign_splits([str(id_of[a]) for a in eligible], config)
    return {int(a): split_of[str(id_of[a])] for a in eligible}


def build_windows(payload: Payload, config: SplitConfig, facts: dict[str, Any] | None = None,
                  drop_near_duplicates: bool = True) -> dict[str, SequenceSet]:
    """All windows of the payload, split by article into train / val / eval, with windows
    that would leak a near-duplicate chunk into an earlier split dropped (module docstring).

    ``facts``, when given, receives what was dropped, for the manifest. The dropping never
    changes eval, so a caller that keeps only eval may skip its search
    (``drop_near_duplicates=False``).
    """
    article_index = payload.chunks["article_index"].to_numpy()
    chunk_index = payload.chunks["chunk_index"].to_numpy()
    context_rows, target_row = windows(article_index, chunk_index)
    split_of = article_splits(payload, config)
    window_split = np.array([split_of[int(a)] for a in article_index[target_row]])
    sets = {}
    for split in SPLITS:
        mask = window_split == split
        keys = np.stack([article_index[target_row[mask]], chunk_index[target_row[mask]]], axis=1)
        sets[split] = SequenceSet(split, context_rows[mask], target_row[mask],
                                  keys.astype(np.int32))
    if not drop_near_duplicates:
        return sets
    sets, dropped = drop_near_duplicate_windows(payload.vectors, sets,
                                                config.near_duplicate_cosine)
    if facts is not None:
        facts["near_duplicate_windows_dropped"] = dropped
    return sets


def drop_near_duplicate_windows(vectors: np.ndarray, sets: dict[str, SequenceSet],
                                threshold: float) -> tuple[dict[str, SequenceSet], dict[str, int]]:
    """Drop val windows using a chunk near-identical to an eval chunk, then train windows
    using a chunk near-identical to an eval or (kept) val chunk. Eval is never changed."""
    kept = dict(sets)
    dropped = {}
    for split, later in (("val", ("eval",)), ("train", ("eval", "val"))):
        seqs = kept[split]
        protected = np.unique(np.concatenate([kept[s].rows() for s in later]))
        bad_rows, _, _ = near_duplicates(vectors, protected, seqs.rows(), threshold)
        leaking = np.isin(seqs.window_rows(), bad_rows).any(axis=1)  # (N,)
        kept[split] = seqs.subset(~leaking)
        dropped[split] = int(leaking.sum())
    return kept, dropped


def near_duplicates(vectors: np.ndarray, rows_a: np.ndarray, rows_b: np.ndarray,
                    threshold: float, exact: bool | None = None
                    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Rows of ``rows_b`` whose nearest row among ``rows_a`` has cosine >= ``threshold``.

    vectors: (R, D) payload; rows_a (A,), rows_b (B,) payload rows. Returns the hits as
    b_rows (H,), their nearest a_rows (H,) and the cosines (H,) float32. Rows are
    re-normalised, so a non-unit payload cannot hide a pair. ``exact`` (default: when A·B <=
    ``EXACT_PAIRS``) compares every pair (``IndexFlatIP``, A·B·D multiply-adds); otherwise
    rows_a go into ``NEAR_DUPLICATE_CELLS`` k-means cells and each row of rows_b is compared
    with the rows of its ``NEAR_DUPLICATE_PROBES`` nearest cells (see the constants for why
    that finds near-duplicates; :func:`_cell_nearest`). Blocked, so rows_b is never copied
    whole.
    """
    rows_a = np.asarray(rows_a, dtype=np.int64)
    rows_b = np.asarray(rows_b, dtype=np.int64)
    empty = (np.empty(0, np.int64), np.empty(0, np.int64), np.empty(0, np.float32))
    if len(rows_a) == 0 or len(rows_b) == 0:
        return empty
    if exact is None:
        exact = len(rows_a) * len(rows_b) <= EXACT_PAIRS
    cells = min(NEAR_DUPLICATE_CELLS, len(rows_a) // MIN_POINTS_PER_CELL)
    if exact or cells < 2:
        best_cos, best_a = _flat_nearest(vectors, rows_a, rows_b)
    else:
        best_cos, best_a = _cell_nearest(vectors, rows_a, rows_b, cells)
    hit = best_cos >= threshold
    return rows_b[hit], rows_a[best_a[hit]], best_cos[hit].astype(np.float32)


def _flat_nearest(vectors: np.ndarray, rows_a: np.ndarray, rows_b: np.ndarray
                  ) -> tuple[np.ndarray, np.ndarray]:
    """Every pair: (B,) best cosine and (B,) index into rows_a of each row of rows_b."""
    index = faiss.IndexFlatIP(vectors.shape[1])
    for lo in range(0, len(rows_a), SEARCH_BLOCK):
        index.add(_unit(gather(vectors, rows_a[lo:lo + SEARCH_BLOCK])))
    best_cos, best_a = np.empty(len(rows_b), np.float32), np.empty(len(rows_b), np.int64)
    for lo in range(0, len(rows_b), SEARCH_BLOCK):
        scores, ids = index.search(_unit(gather(vectors, rows_b[lo:lo + SEARCH_BLOCK])), 1)
        best_cos[lo:lo + len(scores)], best_a[lo:lo + len(scores)] = scores[:, 0], ids[:, 0]
    return best_cos, best_a


def _cell_nearest(vectors: np.ndarray, rows_a: np.ndarray, rows_b: np.ndarray, cells: int
                  ) -> tuple[np.ndarray, np.ndarray]:
    """As :func:`_flat_nearest`, but each row of rows_b is compared only with the rows_a of its
    ``NEAR_DUPLICATE_PROBES`` nearest k-means cells.

    What an ``IndexIVFFlat`` search does, except that the comparisons are grouped by cell into
    one GEMM each (the queries probing a cell × the cell's rows): FAISS scans cells one query at
    a time without BLAS, ~0.7 GFLOP/s on 2 cores, which made this minutes at 584k rows.
    """
    dim = vectors.shape[1]
    ivf = faiss.IndexIVFFlat(faiss.IndexFlatIP(dim), dim, cells, faiss.METRIC_INNER_PRODUCT)
    ivf.train(_unit(gather(vectors, rows_a[sample_rows(len(rows_a), NEAR_DUPLICATE_TRAIN,
                                                       seed=0)])))
    quantizer = ivf.quantizer  # the trained k-means centroids; the IVF lists stay empty
    a_cell = np.concatenate([
        quantizer.search(_unit(gather(vectors, rows_a[lo:lo + SEARCH_BLOCK])), 1)[1][:, 0]
        for lo in range(0, len(rows_a), SEARCH_BLOCK)])
    a_order = np.argsort(a_cell, kind="stable")  # rows_a grouped by cell
    a_bounds = np.searchsorted(a_cell[a_order], np.arange(cells + 1))
    a_unit = _unit(gather(vectors, rows_a[a_order]))  # (A, D), cell by cell
    best_cos = np.full(len(rows_b), -np.inf, np.float32)
    best_a = np.zeros(len(rows_b), np.int64)
    for lo in range(0, len(rows_b), SEARCH_BLOCK):
        queries = _unit(gather(vectors, rows_b[lo:lo + SEARCH_BLOCK]))  # (b, D)
        probed = quantizer.search(queries, NEAR_DUPLICATE_PROBES)[1]  # (b, probes)
        cell_of = probed.reshape(-1)
        query_of = np.repeat(np.arange(len(queries)), probed.shape[1])
        order = np.argsort(cell_of, kind="stable")
        cell_of, query_of = cell_of[order], query_of[order]
        q_bounds = np.searchsorted(cell_of, np.arange(cells + 1))
        for cell in np.unique(cell_of[cell_of >= 0]):
            a0, a1 = a_bounds[cell], a_bounds[cell + 1]
            if a0 == a1:
                continue
            q = query_of[q_bounds[cell]:q_bounds[cell + 1]]  # each query probes a cell once
            scores = queries[q] @ a_unit[a0:a1].T  # (q, rows of the cell)
            arg = scores.argmax(axis=1)
            top = scores[np.arange(len(q)), arg]
            better = top > best_cos[lo + q]
            best_cos[lo + q[better]] = top[better]
            best_a[lo + q[better]] = a_order[a0 + arg[better]]
    return best_cos, best_a


def near_duplicates_ref(vectors: np.ndarray, rows_a: np.ndarray, rows_b: np.ndarray,
                        threshold: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Slow, obvious version of :func:`near_duplicates` (a full cosine matrix) for the parity test."""
    a = np.asarray(vectors[np.asarray(rows_a, dtype=np.int64)], dtype=np.float64)
    b = np.asarray(vectors[np.asarray(rows_b, dtype=np.int64)], dtype=np.float64)
    a /= np.linalg.norm(a, axis=1, keepdims=True)
    b /= np.linalg.norm(b, axis=1, keepdims=True)
    cos = b @ a.T  # (B, A)
    best = cos.argmax(axis=1)
    best_cos = cos[np.arange(len(b)), best]
    hit = best_cos >= threshold
    return (np.asarray(rows_b)[hit].astype(np.int64), np.asarray(rows_a)[best[hit]].astype(np.int64),
            best_cos[hit].astype(np.float32))


def _unit(block: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(block, axis=1, keepdims=True)
    return np.ascontiguousarray(block / np.maximum(norms, 1e-12), dtype=np.float32)


def publish_sequences(
    store: ArtifactStore,
    kind: str,
    payload: Payload,
    sets: dict[str, SequenceSet],
    info: dict[str, Any],
) -> Build:
    """Write the splits of one sequences asset and publish them against ``payload``."""
    with store.stage(kind) as staged:
        for split in SPLITS_OF_KIND[kind]:
            sets[split].save(staged / split)
        manifest = {
            **info,
            "payload_build_id": payload.build_id,
            "context": CONTEXT,
            "splits": {split: {"windows": len(sets[split]),
                               "articles": len(sets[split].articles())}
                       for split in SPLITS_OF_KIND[kind]},
        }
        return store.publish(kind, staged, manifest, upstream={"payload": payload.build_id})


def native_info(config: SplitConfig) -> dict[str, Any]:
    return {"source": {"kind": "payload windows"}, "split_config": asdict(config)}


def load_sets(build: Build, verify: bool = True) -> dict[str, SequenceSet]:
    kind = build.manifest["kind"]
    return {split: SequenceSet.load(build, split, verify) for split in SPLITS_OF_KIND[kind]}


def require_payload(build: Build, payload: Payload) -> None:
    """Refuse sequences that index another payload build (stale lineage across runs)."""
    if build.manifest.get("payload_build_id") != payload.build_id:
        raise ArtifactError(
            f"{build.path}: {build.kind} build {build.build_id[:12]} indexes payload "
            f"{str(build.manifest.get('payload_build_id'))[:12]}, but the current payload is "
            f"{payload.build_id[:12]}; rebuild the sequences against the current payload"
        )


def gather(vectors: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """Payload vectors of ``rows`` (any shape S) → S + (D,) float32.

    The one code path that turns row indices into vectors: the trainer, the evaluator and the
    alignment check all call it, so the check measures exactly what training reads.
    Sorting the rows first keeps reads from a memory-mapped payload sequential.
    """
    flat = np.asarray(rows, dtype=np.int64).reshape(-1)
    order = np.argsort(flat, kind="stable")
    out = np.empty((flat.size, vectors.shape[1]), dtype=np.float32)
    out[order] = vectors[flat[order]]
    return out.reshape(*np.shape(rows), vectors.shape[1])
