"""The FAISS inner-product index over the payload's vectors (cosine, since rows are unit norm).

Files of an ``index`` build: ``index.faiss`` and a manifest naming the payload build it indexes,
the index type, its size and the self-retrieval recall measured on a sample of payload rows
(a row searched for itself must come back first; anything less means the index and the payload
disagree).
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass

import faiss
import numpy as np

from lvm_pipeline.artifacts import ArtifactError, ArtifactStore, Build
from lvm_pipeline.payload import Payload
from lvm_pipeline.progress import Progress, silent

KIND = "index"
INDEX_FILE = "index.faiss"
INDEX_TYPES = ("flat",)
# Rows added per call: bounds the temporary float32 copy of a memory-mapped payload.
ADD_BLOCK = 65536


@dataclass(frozen=True)
class IndexConfig:
    type: str = "flat"
    self_recall_sample: int = 256
    seed: int = 0

    def __post_init__(self) -> None:
        if self.type not in INDEX_TYPES:
            raise ValueError(f"unknown index type {self.type!r}; valid: {', '.join(INDEX_TYPES)}")


def build_index(vectors: np.ndarray, config: IndexConfig, progress: Progress = silent
                ) -> faiss.Index:
    """An exact ``IndexFlatIP`` over (R, D) float32 unit vectors, filled block by block."""
    n, dim = vectors.shape
    index = faiss.IndexFlatIP(dim)
    for lo in range(0, n, ADD_BLOCK):
        index.add(np.ascontiguousarray(vectors[lo:lo + ADD_BLOCK], dtype=np.float32))
        progress(min(lo + ADD_BLOCK, n), n)
    return index


def self_recall(index: faiss.Index, vectors: np.ndarray, sample: int, seed: int) -> float:
    """Share of sampled rows whose top-1 hit is themselves (or an identical vector: a tie)."""
    n = vectors.shape[0]
    rows = np.sort(np.random.default_rng(seed).choice(n, size=min(sample, n), replace=False))
    queries = np.ascontiguousarray(vectors[rows], dtype=np.float32)
    scores, ids = index.search(queries, 1)
    own = np.einsum("ij,ij->i", queries, queries)
    hit = (ids[:, 0] == rows) | (scores[:, 0] >= own - 1e-5)
    return float(hit.mean())


def publish_index(store: ArtifactStore, payload: Payload, config: IndexConfig,
                  progress: Progress = silent) -> Build:
    t0 = time.perf_counter()
    index = build_index(payload.vectors, config, progress)
    build_s = time.perf_counter() - t0
    recall = self_recall(index, payload.vectors, config.self_recall_sample, config.seed)
    with store.stage(KIND) as staged:
        faiss.write_index(index, str(staged / INDEX_FILE))
        manifest = {"payload_build_id": payload.build_id, "index_type": type(index).__name__,
                    "config": asdict(config), "ntotal": int(index.ntotal), "dim": payload.dim,
                    "metric": "ip", "self_recall_at_1": recall, "build_seconds": build_s,
                    "faiss_version": faiss.__version__}
        return store.publish(KIND, staged, manifest, upstream={"payload": payload.build_id})


def load_index(build: Build, payload: Payload, verify: bool = True) -> faiss.Index:
    """Read an index build; refuse one built over another payload than ``payload``."""
    if build.manifest.get("payload_build_id") != payload.build_id:
        raise ArtifactError(
            f"{build.path}: index {build.build_id[:12]} was built over payload "
            f"{str(build.manifest.get('payload_build_id'))[:12]}, but the current payload is "
            f"{payload.build_id[:12]}; rebuild the index"
        )
    index = faiss.read_index(str(build.file(INDEX_FILE, verify)))
    if index.ntotal != len(payload) or index.d != payload.dim:
        raise ArtifactError(f"{build.path / INDEX_FILE}: holds {index.ntotal}×{index.d}, payload "
                            f"is {len(payload)}×{payload.dim}")
    return index
