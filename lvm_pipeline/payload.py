"""The payload: one L2-normalised vector per corpus chunk, and the table that names each row.

Everything downstream points *into* the payload by row: training contexts and targets,
the FAISS index, the truth of every eval query. Files of a payload build:

- ``vectors.npy`` — (N, D) float32, memory-mappable;
- ``chunks.parquet`` — ``row, article_index, article_id, title, chunk_index, text, text_sha256``;
- ``manifest.json`` — the embedder's id and measured fingerprint, dim, norm ``l2``, metric
  ``ip``, counts, the source corpus build, the mean cosine of adjacent chunks, and the sha256
  of every file (written by :class:`~lvm_pipeline.artifacts.ArtifactStore`).

``payload_build_id`` is that build's content hash. Truth keys are ``(article_index,
chunk_index)``, the reference layout; ``article_index`` numbers articles in corpus order.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import numpy as np
import pandas as pd

from lvm_pipeline.artifacts import ArtifactError, ArtifactStore, Build
from lvm_pipeline.corpus import text_sha256
from lvm_pipeline.embedding import Embedder
from lvm_pipeline.progress import Progress, silent

KIND = "payload"
VECTORS = "vectors.npy"
CHUNKS = "chunks.parquet"


@dataclass
class Payload:
    """A loaded payload build. ``vectors`` is a read-only memory map unless loaded in RAM."""

    vectors: np.ndarray
    chunks: pd.DataFrame
    manifest: dict[str, Any] = field(default_factory=dict)

    @property
    def build_id(self) -> str:
        return self.manifest["build_id"]

    @property
    def dim(self) -> int:
        return int(self.vectors.shape[1])

    def __len__(self) -> int:
        return int(self.vectors.shape[0])

    @cached_property
    def _sorted_keys(self) -> tuple[np.ndarray, np.ndarray]:
        keys = pack_keys(self.chunks["article_index"].to_numpy(),
                         self.chunks["chunk_index"].to_numpy())
        order = np.argsort(keys, kind="stable")
        return keys[order], order

    def rows_for_keys(self, article_index: np.ndarray, chunk_index: np.ndarray) -> np.ndarray:
        """Payload row of each ``(article_index, chunk_index)`` key, -1 where none exists.

        With duplicate keys in the payload the first row wins; the integrity check reports them.
        """
        sorted_keys, order = self._sorted_keys
        wanted = pack_keys(np.asarray(article_index), np.asarray(chunk_index))
        pos = np.searchsorted(sorted_keys, wanted)
        pos_clipped = np.minimum(pos, len(sorted_keys) - 1)
        found = (pos < len(sorted_keys)) & (sorted_keys[pos_clipped] == wanted)
        return np.where(found, order[pos_clipped], -1).astype(np.int64)

    def describe_row(self, row: int) -> str:
        """``article 'x' chunk 3: "text…"`` for error messages and reports."""
        if not 0 <= row < len(self):
            return f"row {row} (outside the payload's {len(self)} rows)"
        rec = self.chunks.iloc[int(row)]
        snippet = " ".join(str(rec["text"]).split())[:70]
        return (f"row {row} = article {rec['article_id']!r} (index {rec['article_index']}) "
                f"chunk {rec['chunk_index']}: \"{snippet}…\"")


def pack_keys(article_index: np.ndarray, chunk_index: np.ndarray) -> np.ndarray:
    """One int64 per key; chunk indices below 2**31 keep the packing collision-free."""
    return (np.asarray(article_index, dtype=np.int64) << 31) | np.asarray(chunk_index, np.int64)


def chunk_table(corpus_chunks: pd.DataFrame) -> pd.DataFrame:
    """The payload's row table from corpus chunks (which arrive in article order)."""
    table = corpus_chunks[["article_id", "title", "chunk_index", "text"]].copy()
    table.insert(0, "row", np.arange(len(table), dtype=np.int64))
    codes, _ = pd.factorize(table["article_id"], sort=False)  # order of first appearance
    table.insert(1, "article_index", codes.astype(np.int32))
    table["chunk_index"] = table["chunk_index"].astype(np.int32)
    table["text_sha256"] = [text_sha256(t) for t in table["text"]]
    return table.reset_index(drop=True)


def adjacent_cosine(vectors: np.ndarray, article_index: np.ndarray) -> float:
    """Mean cosine between consecutive chunks of the same article (Wikipedia + GTR-T5: 0.48).

    A figure far from the source's usual value means the text or the encoder changed.
    """
    same = article_index[1:] == article_index[:-1]
    if not same.any():
        return float("nan")
    total, count, step = 0.0, 0, 65536
    for lo in range(0, len(same), step):
        hi = min(lo + step, len(same))
        mask = same[lo:hi]
        a = np.asarray(vectors[lo:hi], dtype=np.float32)
        b = np.asarray(vectors[lo + 1:hi + 1], dtype=np.float32)
        total += float(np.einsum("ij,ij->i", a, b)[mask].sum())
        count += int(mask.sum())
    return total / count


def build_payload(
    store: ArtifactStore,
    corpus: Build,
    embedder: Embedder,
    progress: Progress = silent,
) -> Build:
    """Embed every chunk of a corpus build and publish the payload."""
    corpus_chunks = pd.read_parquet(corpus.file("chunks.parquet"))
    table = chunk_table(corpus_chunks)
    vectors = embedder.encode(table["text"].tolist(), progress=progress)
    with store.stage(KIND) as staged:
        np.save(staged / VECTORS, vectors)
        table.to_parquet(staged / CHUNKS, index=False)
        manifest = {
            "embedder": embedder.identity(),
            "dim": int(vectors.shape[1]),
            "dtype": "float32",
            "norm": "l2",
            "metric": "ip",
            "n_rows": int(vectors.shape[0]),
            "n_articles": int(table["article_index"].max()) + 1,
            "adjacent_cosine_mean": adjacent_cosine(vectors, table["article_index"].to_numpy()),
            "corpus_build_id": corpus.build_id,
        }
        return store.publish(KIND, staged, manifest, upstream={"corpus": corpus.build_id})


def load_payload(build: Build, verify: bool = True, in_memory: bool = False) -> Payload:
    """Open a payload build; every file is re-hashed against the manifest first (``verify``).

    ``vectors`` is memory-mapped (the page cache shares it between processes) unless
    ``in_memory``.
    """
    if build.manifest.get("kind") != KIND:
        raise ArtifactError(f"{build.path}: not a payload build (kind {build.manifest.get('kind')})")
    vectors = np.load(build.file(VECTORS, verify), mmap_mode=None if in_memory else "r")
    chunks = pd.read_parquet(build.file(CHUNKS, verify))
    expected = (build.manifest["n_rows"], build.manifest["dim"])
    if vectors.shape != expected or len(chunks) != expected[0]:
        raise ArtifactError(f"{build.path}: vectors {vectors.shape} / table {len(chunks)} rows do "
                            f"not match the manifest {expected}")
    return Payload(vectors=vectors, chunks=chunks, manifest=dict(build.manifest))


def current_payload(store: ArtifactStore, verify: bool = True) -> Payload:
    return load_payload(store.current(KIND), verify=verify)
