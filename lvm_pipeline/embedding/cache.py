"""Embedding cache: each text's vector stored once per encoder and shared by every payload build.

A weekly retrain re-embeds a corpus that barely changed; the forward pass is most of the
payload step's time. Here a vector is keyed by (encoder fingerprint, sha256 of the text) and a
payload build embeds only the texts the cache lacks.

Layout, under the data root (``<data dir>/embedding_cache/``)::

    <fingerprint[:16]>/encoder.json          what the fingerprint hashes (the encoder's
                                             output identity: weights, configs, precision,
                                             device type, library versions, batching)
    <fingerprint[:16]>/<shard>/keys.npy      (B, 32) uint8: sha256 of each text's UTF-8 bytes
    <fingerprint[:16]>/<shard>/vectors.npy   (B, D) float32: the unit rows the encoder produced
    <fingerprint[:16]>/<shard>/manifest.json the two files' sha256s (ArtifactStore.publish)
    LAST_BUILD.json                          hits and misses of the last payload build

Why these rules:

- **Key**: the sha256 of the exact text the encoder reads, not the corpus's ``text_sha256``
  (lower-cased alphanumerics, a de-duplication key): the encoder sees case and punctuation, so
  two texts with one normalised form can have two vectors. Chunk texts are whitespace-normalised
  by the chunker already.
- **Fingerprint**: the sha256 of everything that decides the bytes an encoder outputs
  (``Embedder.output_identity``). Another encoder, precision, device type or library version
  is another folder, so it never reads this one's vectors, and each shard records the
  fingerprint it was written under, so a shard copied into the wrong folder is refused too.
- **Shards per batch**: every encoder batch is published as one shard (staged, hashed, renamed
  into place), so a crash while filling loses at most the batch in flight.
- **Verified on read**: a shard whose files no longer match its manifest is never served; it is
  deleted and its texts count as misses, embedded again and written to a new shard.
- **Byte-identical payloads**: the cache serves exactly the float32 rows the encoder produced.
  That equals what an empty cache would give only if a text's vector does not depend on the
  other texts of its batch. The embedder runs every forward pass in a fixed shape (see
  ``Embedder.encode_batches``): exactly ``batch_size`` texts, each padded to a length set by
  its own token count. With the bundled encoder on CPU, texts embedded alone, in subsets, in
  another order, and texts cut at the 256-token window in passes of their own or beside
  texts of 240-255 tokens gave the same bytes; tests hold these, and a 1 %-edited rebuild
  byte-identical to a cold build. The earlier batches (one token length, nothing padded, any
  number of texts) were not: a CPU picks its GEMM kernel by the number of rows, and vectors
  moved in their last float digits (benchmarks/RESULTS.md, "CPU embedding: fixed-shape
  passes against one-length batches"). The scheme, pass size and length multiple are in the fingerprint, so a
  folder written under another one is never read.

The canary (:mod:`lvm_pipeline.guards.canary`) never reads the cache: it calls the encoder
itself, so a cache that serves wrong vectors is caught like an encoder that makes them.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import shutil
import time
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from lvm_pipeline.runtime import Progress, silent
from lvm_pipeline.store import (
    BUILD_DIR_CHARS,
    MANIFEST,
    ArtifactError,
    ArtifactStore,
    Build,
    read_json,
    sha256_file,
    sha256_json,
    utc_now,
    write_json_atomic,
)

CACHE_DIR = "embedding_cache"
KEYS, VECTORS = "keys.npy", "vectors.npy"
ENCODER = "encoder.json"
LAST_BUILD = "LAST_BUILD.json"
LOCK = ".lock"
KEY_BYTES = 32  # a sha256 digest
# Fields of a payload's recorded embedder that must equal a cache folder's encoder for the
# payload to count as a user of that folder (lvm cache --prune); library versions are not
# recorded by payloads, so two folders that differ only there are both kept. A payload from
# before the pass shape was recorded uses no folder of today's (it was embedded otherwise).
_PAYLOAD_MATCH = ("weights_sha256", "config_sha256", "dim", "precision", "batching",
                  "batch_size", "length_multiple")


class BatchEncoder(Protocol):
    """What the cache needs of an encoder (:class:`lvm_pipeline.embedding.Embedder` fits)."""

    dim: int

    def identity(self) -> dict[str, Any]:
        """What a payload manifest records about the encoder (id, fingerprint, device)."""

    def output_identity(self) -> dict[str, Any]:
        """Everything that decides the bytes of its vectors (hashed into the fingerprint)."""

    def encode_batches(self, texts: list[str]) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """(indices into ``texts``, (B, D) float32 unit rows), one batch at a time, where a
        text's row does not depend on the other texts of the batch."""


def text_keys(texts: Iterable[str]) -> np.ndarray:
    """(N, 32) uint8: the sha256 of each text's UTF-8 bytes (the text the encoder reads)."""
    digests = b"".join(hashlib.sha256(t.encode("utf-8")).digest() for t in texts)
    return np.frombuffer(digests, dtype=np.uint8).reshape(-1, KEY_BYTES).copy()


def fingerprint(encoder: BatchEncoder) -> tuple[str, dict[str, Any]]:
    """(sha256 of the encoder's output identity, that identity)."""
    identity = dict(encoder.output_identity())
    return sha256_json(identity), identity


@dataclass(frozen=True)
class CacheStats:
    """What one payload build took from the cache and what it embedded."""

    fingerprint: str
    texts: int
    hits: int
    misses: int  # distinct texts embedded (and written to the cache)
    shards_written: int
    corrupt_shards: tuple[str, ...]  # shards refused by their hash (deleted, re-embedded)
    seconds: float

    @property
    def hit_rate(self) -> float:
        return self.hits / self.texts if self.texts else 0.0

    def metadata(self) -> dict[str, Any]:
        """The figures a payload materialization shows (``cache_*``)."""
        return {"cache_hits": self.hits, "cache_misses": self.misses,
                "cache_hit_rate": self.hit_rate, "cache_fingerprint": self.fingerprint,
                "cache_corrupt_shards": len(self.corrupt_shards)}

    def line(self) -> str:
        """One line for the step's log."""
        corrupt = (f"; {len(self.corrupt_shards)} corrupt shard(s) refused by hash and "
                   "re-embedded" if self.corrupt_shards else "")
        return (f"embedding cache {self.fingerprint[:12]}: {self.hits}/{self.texts} texts from "
                f"the cache ({100 * self.hit_rate:.1f} %), {self.misses} embedded into "
                f"{self.shards_written} new shard(s) in {self.seconds:.1f} s{corrupt}")


@dataclass(frozen=True)
class FolderSummary:
    """One fingerprint's folder, for ``lvm cache``."""

    fingerprint: str
    encoder: dict[str, Any]
    entries: int
    shards: int
    bytes: int


class CacheError(ArtifactError):
    """The cache cannot be used as asked (another process holds it, a bad folder)."""


class EmbeddingCache:
    """The cache folder of one data root (``<root>/embedding_cache``)."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root).expanduser().resolve()
        self._shards = ArtifactStore(self.root)

    @classmethod
    def of_store(cls, store: ArtifactStore) -> EmbeddingCache:
        """The cache that lives under a data root (local even when builds are mirrored: a
        cache is a local speed-up, not an artifact other machines read)."""
        return cls(store.root / CACHE_DIR)

    # ------------------------------------------------------------------------ filling

    def embed(self, encoder: BatchEncoder, texts: list[str], progress: Progress = silent
              ) -> tuple[np.ndarray, CacheStats]:
        """(N, D) float32 unit rows for ``texts``, in input order: cached rows where the
        cache has them, the rest embedded by ``encoder`` (one shard written per batch)."""
        start = time.perf_counter()
        fp, identity = fingerprint(encoder)
        keys = text_keys(texts)
        # Unique texts only: a text that occurs twice is looked up and embedded once.
        unique, first, inverse = np.unique(keys.view(f"V{KEY_BYTES}").ravel(),
                                           return_index=True, return_inverse=True)
        vectors = np.empty((len(unique), encoder.dim), dtype=np.float32)
        with self._lock(fcntl.LOCK_SH):
            folder = self._folder(fp, identity)
            found, corrupt = self._read(folder, fp, unique, vectors)
            missing = np.flatnonzero(~found)
            todo = [texts[first[i]] for i in missing]
            # Progress counts the texts to embed: the cache's hits cost nothing, and counted
            # they would make the rate a measure of the cache.
            shards, done = 0, 0
            progress(done, len(missing))
            for idx, batch in encoder.encode_batches(todo):
                batch = np.asarray(batch, dtype=np.float32)
                if batch.shape != (len(idx), encoder.dim):
                    raise CacheError(f"encoder returned {batch.shape} for a batch of "
                                     f"{len(idx)} texts; expected ({len(idx)}, {encoder.dim})")
                rows = missing[idx]
                vectors[rows] = batch
                self._write_shard(folder, fp, unique[rows], batch)
                shards, done = shards + 1, done + len(rows)
                progress(done, len(missing))
        hits = int(found[inverse.ravel()].sum())
        stats = CacheStats(fp, len(texts), hits, len(missing), shards, tuple(corrupt),
                           time.perf_counter() - start)
        return vectors[inverse.ravel()], stats

    def _folder(self, fp: str, identity: dict[str, Any]) -> Path:
        """The fingerprint's folder, with the identity it hashes (written once)."""
        folder = self.root / fp[:BUILD_DIR_CHARS]
        folder.mkdir(parents=True, exist_ok=True)
        record = folder / ENCODER
        if record.exists():
            recorded = read_json(record)
            if recorded.get("fingerprint") != fp:
                raise CacheError(f"{record}: names fingerprint {recorded.get('fingerprint')}, "
                                 f"not {fp}; remove the folder")
        else:
            write_json_atomic(record, {"fingerprint": fp, "identity": identity})
        return folder

    def _read(self, folder: Path, fp: str, wanted: np.ndarray, out: np.ndarray
              ) -> tuple[np.ndarray, list[str]]:
        """Fill ``out`` rows of the ``wanted`` keys the folder holds; (found mask, names of
        the corrupt shards deleted on the way)."""
        found = np.zeros(len(wanted), dtype=bool)
        corrupt: list[str] = []
        if not len(wanted):
            return found, corrupt
        for shard in self._shard_builds(folder):
            try:
                if shard.manifest.get("fingerprint") != fp:
                    raise CacheError(f"{shard.path / MANIFEST}: written under fingerprint "
                                     f"{str(shard.manifest.get('fingerprint'))[:12]}, not "
                                     f"{fp[:12]}")
                keys = _load(shard, KEYS).view(f"V{KEY_BYTES}").ravel()
                pos = np.searchsorted(wanted, keys)
                pos_clipped = np.minimum(pos, len(wanted) - 1)
                hit = (pos < len(wanted)) & (wanted[pos_clipped] == keys)
                hit &= ~found[pos_clipped]  # a key in two shards (two builds filled it) once
                if not hit.any():
                    continue
                vectors = _load(shard, VECTORS)
                if vectors.shape != (len(keys), out.shape[1]) or vectors.dtype != np.float32:
                    raise CacheError(f"{shard.path / VECTORS}: {vectors.dtype} {vectors.shape}, "
                                     f"expected float32 ({len(keys)}, {out.shape[1]})")
            except ArtifactError:  # hash mismatch, missing file, unreadable, foreign shard
                corrupt.append(shard.path.name)
                shutil.rmtree(shard.path, ignore_errors=True)
                continue
            out[pos[hit]] = vectors[hit]
            found[pos[hit]] = True
        return found, corrupt

    def _write_shard(self, folder: Path, fp: str, keys: np.ndarray, vectors: np.ndarray
                     ) -> int:
        """Publish one batch atomically (staged in the folder, hashed, renamed into place),
        named by its content; returns its bytes. Not :meth:`ArtifactStore.publish`, which
        measures the code version per call: a tenth of a second per batch here."""
        with self._shards.stage(folder.name) as staged:
            np.save(staged / KEYS, keys.view(np.uint8).reshape(-1, KEY_BYTES))
            np.save(staged / VECTORS, vectors)
            files = {name: {"sha256": sha256_file(staged / name),
                            "bytes": (staged / name).stat().st_size} for name in (KEYS, VECTORS)}
            shard_id = sha256_json({"fingerprint": fp, "files": files})
            write_json_atomic(staged / MANIFEST, {
                "kind": "embedding_cache_shard", "build_id": shard_id, "fingerprint": fp,
                "n": len(keys), "dim": int(vectors.shape[1]), "files": files,
                "created_at": utc_now()})
            final = folder / shard_id[:BUILD_DIR_CHARS]
            if not final.exists():  # the same batch written before: keep that one
                os.rename(staged, final)
        return sum(f["bytes"] for f in files.values())

    # ------------------------------------------------------------------------ reading

    def folders(self) -> list[FolderSummary]:
        """Every fingerprint folder: encoder, distinct entries, shards and bytes on disk."""
        out = []
        for folder in sorted(p for p in self.root.glob("*") if (p / ENCODER).is_file()):
            record = read_json(folder / ENCODER)
            keys, shards, size = set(), 0, 0
            for shard in self._shard_builds(folder):
                shards += 1
                size += sum(f["bytes"] for f in shard.manifest["files"].values())
                with contextlib.suppress(ArtifactError, ValueError):
                    keys.update(np.load(shard.path / KEYS, allow_pickle=False)
                                .view(f"V{KEY_BYTES}").ravel().tolist())
            out.append(FolderSummary(record["fingerprint"], record.get("identity", {}),
                                     len(keys), shards, size))
        return out

    def record_build(self, payload_build_id: str, stats: CacheStats) -> None:
        """Remember the last payload build's figures for ``lvm cache``."""
        self.root.mkdir(parents=True, exist_ok=True)
        write_json_atomic(self.root / LAST_BUILD, {"payload_build_id": payload_build_id,
                                                   "at": utc_now(), **asdict(stats),
                                                   "hit_rate": stats.hit_rate})

    def last_build(self) -> dict[str, Any] | None:
        path = self.root / LAST_BUILD
        return read_json(path) if path.exists() else None

    # ------------------------------------------------------------------------ pruning

    def prune(self, store: ArtifactStore) -> tuple[int, int]:
        """Remove every entry that no payload build in ``store`` uses: its text is in no
        payload whose recorded embedder matches the entry's encoder. Shards with some used
        entries are rewritten with those only. Refuses while a build is filling the cache.
        Returns (entries removed, bytes freed)."""
        import pandas as pd

        payloads = [Build("payload", f, read_json(f / MANIFEST)) for f in store.build_folders()
                    if f.parent.name == "payload"]
        removed = freed = 0
        with self._lock(fcntl.LOCK_EX | fcntl.LOCK_NB):
            for summary in self.folders():
                folder = self.root / summary.fingerprint[:BUILD_DIR_CHARS]
                users = [p for p in payloads
                         if _uses(p.manifest.get("embedder", {}), summary.encoder)]
                used = set()
                for p in users:
                    texts = pd.read_parquet(p.file("chunks.parquet"), columns=["text"])["text"]
                    used.update(text_keys(texts.astype(str)).view(f"V{KEY_BYTES}").ravel()
                                .tolist())
                for staging in folder.glob(".staging-*"):  # left by a killed build
                    shutil.rmtree(staging, ignore_errors=True)
                for shard in self._shard_builds(folder):
                    r, f = self._prune_shard(folder, summary.fingerprint, shard, used)
                    removed, freed = removed + r, freed + f
                if not any(self._shard_builds(folder)):
                    shutil.rmtree(folder, ignore_errors=True)
        return removed, freed

    def _prune_shard(self, folder: Path, fp: str, shard: Build, used: set[bytes]
                     ) -> tuple[int, int]:
        size = sum(f["bytes"] for f in shard.manifest["files"].values())
        try:
            keys = _load(shard, KEYS)
            vectors = _load(shard, VECTORS)
        except ArtifactError:  # corrupt: nothing in it can be served
            shutil.rmtree(shard.path, ignore_errors=True)
            return int(shard.manifest.get("n", 0)), size
        keep = np.array([k in used for k in keys.view(f"V{KEY_BYTES}").ravel().tolist()],
                        dtype=bool)
        if keep.all():
            return 0, 0
        kept = self._write_shard(folder, fp, keys[keep], vectors[keep]) if keep.any() else 0
        shutil.rmtree(shard.path, ignore_errors=True)
        return int((~keep).sum()), size - kept

    # ------------------------------------------------------------------------ helpers

    def _shard_builds(self, folder: Path) -> list[Build]:
        out = []
        for path in sorted(folder.glob("*")):
            if path.name.startswith(".") or not path.is_dir():
                continue
            try:
                out.append(Build(folder.name, path, read_json(path / MANIFEST)))
            except ArtifactError:  # a shard without a readable manifest: publish never left one
                out.append(Build(folder.name, path, {"files": {}}))
        return out

    @contextlib.contextmanager
    def _lock(self, mode: int) -> Iterator[None]:
        """Builds fill the cache under a shared lock; prune holds it exclusively, so it never
        removes an entry a running build has just written and not yet published."""
        self.root.mkdir(parents=True, exist_ok=True)
        with open(self.root / LOCK, "w") as handle:
            try:
                fcntl.flock(handle, mode)
            except BlockingIOError:
                raise CacheError(f"{self.root}: a payload build is filling the embedding cache; "
                                 "prune when it has finished") from None
            yield


def _load(shard: Build, name: str) -> np.ndarray:
    """One shard file, re-hashed against its manifest first; never unpickled."""
    try:
        return np.load(shard.file(name, verify=True), allow_pickle=False)
    except (ValueError, OSError, KeyError) as err:
        raise CacheError(f"{shard.path / name}: unreadable ({err})") from None


def _uses(recorded: dict[str, Any], identity: dict[str, Any]) -> bool:
    """Whether a payload's recorded embedder is the encoder of a cache folder."""
    device = str(recorded.get("device", "")).split(":")[0]
    return (all(recorded.get(k) == identity.get(k) for k in _PAYLOAD_MATCH)
            and device == identity.get("device_type"))

