"""The payload: one L2-normalised vector per corpus chunk, and the table that names each row.

Everything downstream points *into* the payload by row: training contexts and targets,
the FAISS index, the truth of every eval query. Files of a payload build:

- ``vectors.npy`` — (N, D) float32 (or float16 when asked for: half the size, rounding error
  ~3e-4 per component), memory-mappable; readers get float32 through
  :func:`lvm_pipeline.payload.gather`;
- ``chunks.parquet`` — ``row, article_index, article_id, title, chunk_index, text, text_sha256``;
- ``manifest.json`` — the embedder's id and measured fingerprint, dim, norm ``l2``, metric
  ``ip``, counts, the source corpus build, the mean cosine of adjacent chunks, and the sha256
  of every file (written by :class:`~lvm_pipeline.store.artifacts.ArtifactStore`).

``payload_build_id`` is that build's content hash. A run can also take a payload published
elsewhere (:func:`import_payload`: e.g. ``lvm synth-payload``'s reference-scale synthetic one)
instead of embedding its corpus. Truth keys are ``(article_index,
chunk_index)``, the reference layout; ``article_index`` numbers articles in corpus order.

The reference project's payload, a pickled ``{id: (text, meta, vector)}`` dict saved with
``np.save``, converts into a payload build with :func:`import_reference_payload`, but only when
the caller says ``allow_pickle=True``: unpickling runs whatever code the file carries. Our own
files never need pickle (``.npy`` of numbers, parquet, JSON, safetensors).
"""

from __future__ import annotations

import mmap
import os
import shutil
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from lvm_pipeline.corpus import text_sha256
from lvm_pipeline.embedding import BatchEncoder, CacheStats, EmbeddingCache
from lvm_pipeline.runtime import Progress, silent
from lvm_pipeline.store import (
    MANIFEST,
    PROVENANCE,
    ArtifactError,
    ArtifactStore,
    Build,
    kinds,
    read_json,
)

VECTORS = "vectors.npy"
CHUNKS = "chunks.parquet"
PAYLOAD_DTYPES = ("float32", "float16")
# Manifest keys the store writes itself; an imported build gets its own.
STORE_KEYS = ("kind", "files", "upstream", *PROVENANCE)


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


INT32_MAX = np.iinfo(np.int32).max


def int32_keys(values: Any, where: str, error: type[Exception] = ValueError) -> np.ndarray:
    """``values`` (integers of any width, any shape) as int32, the dtype of truth keys and
    row numbers; ``error`` naming ``where``, the first offending row and the rule when one is
    not an integer or does not fit. Why refuse: ``astype(np.int32)`` wraps 2**31 + 5 to
    -2147483643 without a word, and a wrapped key names another chunk, or none."""
    array = np.asarray(values)
    if array.size == 0:
        return array.astype(np.int32)
    if not np.issubdtype(array.dtype, np.integer):
        raise error(f"{where}: holds {array.dtype} values; keys and rows must be integers")
    rows = array.reshape(len(array), -1) if array.ndim else array.reshape(1, 1)  # (N, k)
    bad = np.flatnonzero(((rows < -INT32_MAX - 1) | (rows > INT32_MAX)).any(axis=1))
    if len(bad):
        row = int(bad[0])
        value = rows[row].tolist() if array.ndim > 1 else rows[row, 0].item()
        raise error(f"{where} row {row}: {value} does not fit int32 (at most {INT32_MAX}); "
                    f"refused rather than wrapped (rows that do not fit: {len(bad)} of {len(rows)})")
    return array.astype(np.int32)


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
        release_pages(vectors)
    return total / count


def build_payload(
    store: ArtifactStore,
    corpus: Build,
    embedder: BatchEncoder,
    progress: Progress = silent,
    dtype: str = "float32",
    recipe: Mapping[str, Any] | None = None,
) -> tuple[Build, CacheStats]:
    """Embed every chunk of a corpus build and publish the payload, stored as ``dtype``.

    Vectors come from the store's embedding cache where it has them for this encoder, and the
    rest are embedded and added to it (:mod:`lvm_pipeline.embedding.cache`): the same bytes
    as from an empty cache. Returns the build and what the cache served.
    """
    if dtype not in PAYLOAD_DTYPES:
        raise ValueError(f"unknown payload dtype {dtype!r}; valid: {', '.join(PAYLOAD_DTYPES)}")
    corpus_chunks = pd.read_parquet(corpus.file("chunks.parquet"))
    table = chunk_table(corpus_chunks)
    cache = EmbeddingCache.of_store(store)
    vectors, stats = cache.embed(embedder, table["text"].tolist(), progress=progress)
    vectors = vectors.astype(dtype)
    with store.stage(kinds.PAYLOAD) as staged:
        np.save(staged / VECTORS, vectors)
        table.to_parquet(staged / CHUNKS, index=False)
        identity = dict(embedder.identity())
        # Where the model was loaded from says how this build was made, not what it holds:
        # the same weights in another folder make the same payload.
        where = {"embedder_model_dir": identity.pop("model_dir")} if "model_dir" in identity else {}
        manifest = {
            "embedder": identity,
            "dim": int(vectors.shape[1]),
            "dtype": dtype,
            "norm": "l2",
            "metric": "ip",
            "n_rows": int(vectors.shape[0]),
            "n_articles": int(table["article_index"].max()) + 1,
            "adjacent_cosine_mean": adjacent_cosine(vectors, table["article_index"].to_numpy()),
            "corpus_build_id": corpus.build_id,
        }
        build = store.publish(kinds.PAYLOAD, staged, manifest, upstream={"corpus": corpus.build_id},
                              recipe=recipe, run=where)
    cache.record_build(build.build_id, stats)
    return build, stats








def load_payload(build: Build, verify: bool = True, in_memory: bool = False) -> Payload:
    """Open a payload build; every file is re-hashed against the manifest first (``verify``).

    ``vectors`` is memory-mapped (the page cache shares it between processes) unless
    ``in_memory``.
    """
    if build.manifest.get("kind") != kinds.PAYLOAD:
        raise ArtifactError(f"{build.path}: not a payload build (kind {build.manifest.get('kind')})")
    vectors = np.load(build.file(VECTORS, verify), mmap_mode=None if in_memory else "r",
                      allow_pickle=False)
    chunks = pd.read_parquet(build.file(CHUNKS, verify))
    expected = (build.manifest["n_rows"], build.manifest["dim"])
    if vectors.shape != expected or len(chunks) != expected[0]:
        raise ArtifactError(f"{build.path}: vectors {vectors.shape} / table {len(chunks)} rows do "
                            f"not match the manifest {expected}")
    dtype = build.manifest.get("dtype", "float32")
    if str(vectors.dtype) != dtype or dtype not in PAYLOAD_DTYPES:
        raise ArtifactError(f"{build.path / VECTORS}: holds {vectors.dtype}, the manifest says "
                            f"{dtype} (payloads store one of {', '.join(PAYLOAD_DTYPES)})")
    return Payload(vectors=vectors, chunks=chunks, manifest=dict(build.manifest))


def release_pages(vectors: np.ndarray) -> None:
    """Drop a memory-mapped payload's pages from this process's resident set.

    The pages stay in the OS page cache (shared, re-read for free), but a process that streams
    once through 1.8 GB of vectors no longer counts them in its RSS. No-op for in-RAM arrays.
    """
    mapping = getattr(vectors, "_mmap", None)  # np.memmap's (and its slices') mmap object
    if isinstance(mapping, mmap.mmap) and hasattr(mapping, "madvise"):
        mapping.madvise(mmap.MADV_DONTNEED)


def find_payload_build(path: str | os.PathLike[str]) -> Build:
    """A payload build folder (with its manifest.json), or the current payload of a data dir."""
    path = Path(path).expanduser().resolve()
    if (path / MANIFEST).is_file():
        manifest = read_json(path / MANIFEST)
        if not isinstance(manifest, dict):
            raise ArtifactError(f"{path / MANIFEST}: holds a JSON {type(manifest).__name__}, "
                                "not a manifest")
        if manifest.get("kind") != kinds.PAYLOAD:
            raise ArtifactError(f"{path / MANIFEST}: a {manifest.get('kind')!r} build, not a "
                                "payload")
        return Build(kind=kinds.PAYLOAD, path=path, manifest=manifest)
    if (path / kinds.PAYLOAD).is_dir():
        return ArtifactStore(path).current(kinds.PAYLOAD)
    raise ArtifactError(f"{path}: neither a payload build folder (with {MANIFEST}) nor a data dir "
                        f"with a {kinds.PAYLOAD}/ folder (e.g. the OUT of `lvm synth-payload`)")


def import_payload(store: ArtifactStore, source: str | os.PathLike[str],
                   recipe: Mapping[str, Any] | None = None) -> tuple[Build, str]:
    """Publish the payload build at ``source`` (see :func:`find_payload_build`) into ``store``.

    Every file is re-hashed against its manifest first. Files are hard-linked into the store
    when it is on the same filesystem (a 1.8 GB payload costs nothing) and copied otherwise;
    the build id is unchanged either way (same files, same upstream). Returns the build and
    how its files arrived: ``"already in the store"``, ``"hardlink"`` or ``"copy"``.
    """
    src = find_payload_build(source)
    src.verify()
    # A build of this very store is republished unchanged (publish keeps the existing folder);
    # the links made on the way are dropped with the staging folder.
    method = "already in the store" if src.path.parent == store.root / kinds.PAYLOAD else "hardlink"
    with store.stage(kinds.PAYLOAD) as staged:
        for name in src.manifest["files"]:
            target = staged / name
            target.parent.mkdir(parents=True, exist_ok=True)
            try:
                os.link(src.path / name, target)
            except OSError:  # another filesystem (EXDEV) or no hard links: copy, and say so
                shutil.copyfile(src.path / name, target)
                method = "copy" if method == "hardlink" else method
        manifest = {k: v for k, v in src.manifest.items() if k not in STORE_KEYS}
        # Where it came from is provenance: the same content is the same build id.
        build = store.publish(kinds.PAYLOAD, staged, manifest, upstream=src.manifest.get("upstream"),
                              recipe=recipe, run={"imported_from": {
                                  "path": str(src.path), "build_id": src.build_id,
                                  "files": method}})
    return build, method


def current_payload(store: ArtifactStore, verify: bool = True) -> Payload:
    """The payload ``CURRENT`` names: for readers outside a run (CLI, notebooks) only."""
    return load_payload(store.current(kinds.PAYLOAD), verify=verify)


def payload_of(store: ArtifactStore, build: Build, verify: bool = True) -> Payload:
    """The payload ``build`` (sequences, an index, a checkpoint) was made over, found by the id
    its manifest records: lineage that no other run can move, unlike ``CURRENT``."""
    payload_id = build.manifest.get("payload_build_id")
    if not payload_id:
        raise ArtifactError(f"{build.path / MANIFEST}: {build.kind} build {build.build_id[:12]} "
                            "names no payload_build_id")
    return load_payload(store.get(kinds.PAYLOAD, payload_id), verify=verify)
