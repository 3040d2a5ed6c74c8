"""The FAISS inner-product index over the payload's vectors (cosine, since rows are unit norm).

Files of an ``index`` build: ``index.faiss`` and a manifest naming the payload build it indexes,
the index type and its parameters, its size and the self-retrieval recall measured on a sample
of payload rows (a row searched for itself must come back first; anything less means the index
and the payload disagree).

Index types (``IndexConfig.type``):

- ``flat`` (default): ``IndexFlatIP``, exact, and on a CPU also the fastest for a report's
  batch of queries (one BLAS GEMM). Holds a float32 copy of the payload (memory-mapped on load).
- ``ivf_flat``: ``IndexIVFFlat``: k-means cells (``nlist``), a query scans the ``nprobe``
  nearest cells. FAISS scans cells without BLAS, so at reference scale on a CPU even a few
  percent of the cells took longer than flat's one GEMM over every row, and no setting
  measured kept recall@50 0.95 against flat (benchmarks/RESULTS.md, "Reference scale on 2 CPU
  cores" and, on neighbours shaped like real ones, "Neighbour statistics"). IVF pays only for
  few queries at a time (serving), not for evaluation.
- ``sq8`` / ``fp16``: ``IndexScalarQuantizer`` with 8 bits / float16 per component: 1/4 / 1/2
  of the flat index's memory, nearly flat's recall@50, several times flat's search time on a
  CPU (same section).

The evaluation never trusts an approximate index for ranks: R@k and MRR come from an exact pass
over the payload; an approximate index decides only Contain@50 (for a flat one, :func:`is_exact`,
the same exact pass gives the top 50 too). :func:`search_ref`
(numpy, blocked) is the readable exact search every type is measured against (:func:`recall_at_k`).
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

import faiss
import numpy as np

from lvm_pipeline.embedding import sample_rows
from lvm_pipeline.payload import Payload, release_pages
from lvm_pipeline.runtime import Progress, silent
from lvm_pipeline.store import ArtifactError, ArtifactStore, Build, kinds

INDEX_FILE = "index.faiss"
INDEX_TYPES = ("flat", "ivf_flat", "sq8", "fp16")
# Rows added per call: bounds the temporary float32 copy of a memory-mapped payload.
ADD_BLOCK = 65536
# FAISS's k-means wants at least this many training points per cell (it warns below).
MIN_POINTS_PER_CELL = 39
SCALAR_TYPES = {"sq8": "QT_8bit", "fp16": "QT_fp16"}


@dataclass(frozen=True)
class IndexConfig:
    type: str = "flat"
    # IVF cells and cells probed per query (ivf_flat only); see the module docstring for how
    # the defaults were chosen.
    nlist: int = 1024
    nprobe: int = 128
    # Rows sampled (seeded) to train the IVF cells or the scalar quantizer's ranges.
    train_sample: int = 65536
    self_recall_sample: int = 256
    seed: int = 0

    def __post_init__(self) -> None:
        if self.type not in INDEX_TYPES:
            raise ValueError(f"unknown index type {self.type!r}; valid: {', '.join(INDEX_TYPES)}")
        if not 1 <= self.nprobe <= self.nlist:
            raise ValueError(f"need 1 <= nprobe <= nlist, got nprobe {self.nprobe}, nlist "
                             f"{self.nlist}")

    def params(self) -> dict[str, Any]:
        """The parameters that matter for this type (written into the manifest)."""
        if self.type == "ivf_flat":
            return {"nlist": self.nlist, "nprobe": self.nprobe, "train_sample": self.train_sample}
        if self.type in SCALAR_TYPES:
            return {"quantizer": SCALAR_TYPES[self.type], "train_sample": self.train_sample}
        return {}


def empty_index(dim: int, config: IndexConfig) -> faiss.Index:
    """An untrained, empty index of the configured type (inner-product metric)."""
    if config.type == "flat":
        return faiss.IndexFlatIP(dim)
    if config.type in SCALAR_TYPES:
        qtype = getattr(faiss.ScalarQuantizer, SCALAR_TYPES[config.type])
        return faiss.IndexScalarQuantizer(dim, qtype, faiss.METRIC_INNER_PRODUCT)
    quantizer = faiss.IndexFlatIP(dim)
    index = faiss.IndexIVFFlat(quantizer, dim, config.nlist, faiss.METRIC_INNER_PRODUCT)
    index.nprobe = config.nprobe
    return index


def build_index(vectors: np.ndarray, config: IndexConfig, progress: Progress = silent
                ) -> faiss.Index:
    """The configured index over (R, D) unit vectors (float32 or float16, a memory map is
    fine), trained on a seeded sample if the type needs it, filled block by block."""
    n, dim = vectors.shape
    index = empty_index(dim, config)
    if config.type == "ivf_flat" and n < MIN_POINTS_PER_CELL * config.nlist:
        raise ValueError(f"ivf_flat with nlist {config.nlist} needs >= "
                         f"{MIN_POINTS_PER_CELL * config.nlist} rows to train its cells; the "
                         f"payload has {n}: use type 'flat' or nlist <= "
                         f"{max(1, n // MIN_POINTS_PER_CELL)}")
    if not index.is_trained:
        rows = sample_rows(n, config.train_sample, config.seed)
        index.train(np.ascontiguousarray(vectors[rows], dtype=np.float32))
    for lo in range(0, n, ADD_BLOCK):
        index.add(np.ascontiguousarray(vectors[lo:lo + ADD_BLOCK], dtype=np.float32))
        release_pages(vectors)  # streamed once: don't keep 1.8 GB of mapped pages resident
        progress(min(lo + ADD_BLOCK, n), n)
    return index


def is_exact(index: faiss.Index) -> bool:
    """True for a flat index: its top-k is the exact top-k over the vectors it holds."""
    return isinstance(faiss.downcast_index(index), faiss.IndexFlat)


def set_search_params(index: faiss.Index, config: IndexConfig) -> None:
    """Search-time parameters that a saved index does not carry reliably (IVF nprobe)."""
    if config.type == "ivf_flat":
        faiss.extract_index_ivf(index).nprobe = config.nprobe


def search_ref(vectors: np.ndarray, queries: np.ndarray, k: int, block: int = ADD_BLOCK
               ) -> tuple[np.ndarray, np.ndarray]:
    """Exact top-k by inner product, the readable reference of every index type.

    vectors: (R, D); queries: (Q, D). Returns scores (Q, k) float32 and rows (Q, k) int64,
    best first (ties: lower row first). Blocked over the payload, so a memory map is fine.
    """
    if queries.ndim != 2 or queries.shape[1] != vectors.shape[1]:
        raise ValueError(f"queries are {queries.shape}; searching ({vectors.shape[0]}, "
                         f"{vectors.shape[1]}) vectors needs (Q, {vectors.shape[1]})")
    q = np.ascontiguousarray(queries, dtype=np.float32)
    best_s = np.full((len(q), 0), -np.inf, dtype=np.float32)
    best_i = np.zeros((len(q), 0), dtype=np.int64)
    for lo in range(0, vectors.shape[0], block):
        scores = q @ np.asarray(vectors[lo:lo + block], dtype=np.float32).T  # (Q, P)
        ids = np.broadcast_to(np.arange(lo, lo + scores.shape[1]), scores.shape)
        cand_s = np.concatenate([best_s, scores], axis=1)  # (Q, k + P)
        cand_i = np.concatenate([best_i, ids], axis=1)
        order = np.lexsort((cand_i, -cand_s), axis=1)[:, :k]  # by score desc, then row asc
        best_s = np.take_along_axis(cand_s, order, axis=1)
        best_i = np.take_along_axis(cand_i, order, axis=1)
    return best_s, best_i


def recall_at_k(found: np.ndarray, exact: np.ndarray) -> float:
    """Mean share of the exact top-k rows that ``found`` (Q, k) also returned (order ignored)."""
    if found.shape != exact.shape:
        raise ValueError(f"found rows {found.shape} and exact rows {exact.shape} must have one "
                         "shape (Q, k)")
    hits = (found[:, :, None] == exact[:, None, :]).any(axis=1)  # (Q, k): exact row found
    return float(hits.mean())


def self_hits(index: faiss.Index, vectors: np.ndarray, rows: np.ndarray
              ) -> tuple[np.ndarray, np.ndarray]:
    """Does each of ``rows`` retrieve itself at rank 1? → hit (S,) bool, found (S,) int64.

    vectors: (R, D), the rows the index should hold in this order. A hit is the row itself or
    a byte-identical row. A tie on the score is not enough: an index holding the same vectors
    in another order ties everywhere and returns the wrong row numbers for every query.
    """
    rows = np.asarray(rows, dtype=np.int64)
    queries = np.ascontiguousarray(vectors[rows], dtype=np.float32)  # (S, D)
    found = index.search(queries, 1)[1][:, 0]  # (S,)
    inside = (found >= 0) & (found < vectors.shape[0])
    same = np.zeros(len(rows), dtype=bool)
    same[inside] = (np.asarray(vectors[found[inside]], dtype=np.float32)
                    == queries[inside]).all(axis=1)
    return (found == rows) | same, found


def self_recall(index: faiss.Index, vectors: np.ndarray, sample: int, seed: int) -> float:
    """Share of ``sample`` seeded rows that retrieve themselves at rank 1 (:func:`self_hits`)."""
    return float(self_hits(index, vectors, sample_rows(vectors.shape[0], sample, seed))[0].mean())


def publish_index(store: ArtifactStore, payload: Payload, config: IndexConfig,
                  progress: Progress = silent, recipe: Mapping[str, Any] | None = None) -> Build:
    t0 = time.perf_counter()
    index = build_index(payload.vectors, config, progress)
    build_s = time.perf_counter() - t0
    recall = self_recall(index, payload.vectors, config.self_recall_sample, config.seed)
    with store.stage(kinds.INDEX) as staged:
        faiss.write_index(index, str(staged / INDEX_FILE))
        manifest = {"payload_build_id": payload.build_id, "index_type": type(index).__name__,
                    "type": config.type, "params": config.params(), "config": asdict(config),
                    "exact": config.type == "flat", "ntotal": int(index.ntotal),
                    "dim": payload.dim, "metric": "ip", "self_recall_at_1": recall,
                    "faiss_version": faiss.__version__}
        return store.publish(kinds.INDEX, staged, manifest, upstream={"payload": payload.build_id},
                             recipe=recipe, run={"build_seconds": build_s})


def load_index(build: Build, payload: Payload, verify: bool = True) -> faiss.Index:
    """Read an index build; refuse one built over another payload than ``payload``."""
    if build.manifest.get("payload_build_id") != payload.build_id:
        raise ArtifactError(
            f"{build.path}: index {build.build_id[:12]} was built over payload "
            f"{str(build.manifest.get('payload_build_id'))[:12]}, but the current payload is "
            f"{payload.build_id[:12]}; rebuild the index"
        )
    # Memory-mapped where the type allows (IndexFlat): its 1.8 GB at reference scale are then
    # page cache shared with other readers, not this process's own copy. Builds are immutable.
    index = faiss.read_index(str(build.file(INDEX_FILE, verify)), faiss.IO_FLAG_MMAP_IFC)
    if index.ntotal != len(payload) or index.d != payload.dim:
        raise ArtifactError(f"{build.path / INDEX_FILE}: holds {index.ntotal}×{index.d}, payload "
                            f"is {len(payload)}×{payload.dim}")
    config = build.manifest.get("config")
    if config:
        set_search_params(index, IndexConfig(**config))
    return index
