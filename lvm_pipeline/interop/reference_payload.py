"""The reference project's pickled payload, a ``{id: (text, meta, vector)}`` dict saved with
``np.save``, converted into a payload build: only when the caller says ``allow_pickle=True``,
because unpickling runs whatever code the file carries.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from lvm_pipeline.corpus import text_sha256
from lvm_pipeline.embedding import l2_normalise
from lvm_pipeline.payload import CHUNKS, INT32_MAX, VECTORS, adjacent_cosine
from lvm_pipeline.store import ArtifactError, ArtifactStore, Build, kinds, sha256_file


class PickleRefusedError(ArtifactError):
    """A file needs pickle to load and the caller did not opt in."""


def npy_header(path: Path) -> tuple[np.dtype, tuple[int, ...]]:
    """The dtype and shape an ``.npy`` file's header announces, read without loading (or
    unpickling) anything; an error saying what is wrong when the file is not a complete
    ``.npy``. Why not ``np.load(allow_pickle=False)``: it raises ValueError for an object array
    and for a truncated plain one alike, and only the first needs pickle."""
    try:
        with open(path, "rb") as handle:
            version = np.lib.format.read_magic(handle)
            read = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                    else np.lib.format.read_array_header_2_0)
            shape, _, dtype = read(handle)
            offset = handle.tell()
    except (ValueError, EOFError) as err:
        raise ArtifactError(f"{path}: not a .npy file ({err})") from None
    if not dtype.hasobject:
        expected = offset + int(np.prod(shape)) * dtype.itemsize
        size = path.stat().st_size
        if size < expected:
            raise ArtifactError(f"{path}: truncated: {size:,} bytes, where its header "
                                f"announces a {dtype} array {shape} of {expected:,}")
    return dtype, shape


def require_pickled(path: Path) -> None:
    """Refuse, saying what the file holds instead, anything but a pickled object array: only
    such a file is worth the ``allow_pickle`` opt-in."""
    dtype, shape = npy_header(path)
    if not dtype.hasobject:
        raise ArtifactError(f"{path}: holds a plain {dtype} array {shape}, not the reference "
                            "payload (a pickled {id: (text, meta, vector)} dict)")


def read_reference_payload(path: str | Path, allow_pickle: bool = False
                           ) -> tuple[pd.DataFrame, np.ndarray]:
    """The reference ``{id: (text, meta, vector)}`` .npy → (row table, (N, D) float32 vectors).

    ``meta`` must hold ``article_index`` and ``chunk_index`` (the reference's truth-key
    fields, integers that fit int32); ``article_id`` and ``title`` are used when present. Ids
    (the dict's keys, ``article_id``) must be non-empty strings. Rows are ordered by
    ``(article_index, chunk_index)`` so windows can be found; the reference's article indices
    are kept, so its ``truth_keys`` resolve against the imported payload. Nothing is dropped
    or repaired: the integrity guard reports duplicates, NaN, empty texts.
    """
    path = Path(path)
    if not path.exists():
        raise ArtifactError(f"{path}: reference payload file does not exist")
    require_pickled(path)
    if not allow_pickle:
        raise PickleRefusedError(
            f"{path}: is a pickled object array; loading it executes code stored in the file. "
            "Convert it explicitly only if you trust its source: `lvm import-payload "
            f"{path} --allow-pickle`")
    obj = np.load(path, allow_pickle=True)  # the explicit, opted-in pickle load
    payload = obj.item() if obj.shape == () else None
    if not isinstance(payload, dict) or not payload:
        raise ArtifactError(f"{path}: expected a non-empty dict {{id: (text, meta, vector)}}, "
                            f"got {type(payload).__name__}")
    records, vectors = [], []
    for source_id, value in payload.items():
        where = f"{path} entry {source_id!r}"
        _require_id(where, "its id (the dict's key)", source_id)
        if not isinstance(value, tuple | list) or len(value) != 3:
            raise ArtifactError(f"{where}: expected (text, meta, vector), got {type(value).__name__}")
        text, meta, vector = value
        if not isinstance(meta, dict) or not {"article_index", "chunk_index"} <= set(meta):
            keys = sorted(meta) if isinstance(meta, dict) else type(meta).__name__
            raise ArtifactError(f"{where}: meta must hold article_index and chunk_index, has {keys}")
        article, chunk = (_key(where, name, meta[name]) for name in ("article_index", "chunk_index"))
        if "article_id" in meta:
            _require_id(where, "meta article_id", meta["article_id"])
        records.append((article, str(meta.get("article_id", article)), str(meta.get("title", "")),
                        chunk, "" if text is None else str(text), source_id))
        vectors.append(np.asarray(vector, dtype=np.float32).reshape(-1))
    dims = {v.shape[0] for v in vectors}
    if len(dims) != 1:
        raise ArtifactError(f"{path}: vectors of several sizes {sorted(dims)}; one encoder makes one")
    if dims == {0}:
        raise ArtifactError(f"{path}: every vector is empty (0 numbers); nothing to search")
    table = pd.DataFrame.from_records(records, columns=["article_index", "article_id", "title",
                                                        "chunk_index", "text", "source_id"])
    order = np.lexsort((table["chunk_index"].to_numpy(), table["article_index"].to_numpy()))
    table = table.iloc[order].reset_index(drop=True)
    table.insert(0, "row", np.arange(len(table), dtype=np.int64))
    table["article_index"] = table["article_index"].astype(np.int32)  # each checked by _key
    table["chunk_index"] = table["chunk_index"].astype(np.int32)
    table["text_sha256"] = [text_sha256(t) for t in table["text"]]
    return table, np.stack(vectors)[order]


def _require_id(where: str, what: str, value: object) -> None:
    """A null, empty or non-string id is refused: ``str()`` made None the id "None"."""
    if not isinstance(value, str) or not value.strip():
        rule = "is empty" if isinstance(value, str) else f"is a {type(value).__name__}"
        raise ArtifactError(f"{where}: {what} {rule}; ids must be non-empty strings")


def _key(where: str, name: str, value: object) -> int:
    """A truth-key field as an int that fits int32; an error naming the entry otherwise (an
    ``int()`` of 3.7 was 3, of 2**31 + 5 a key that wrapped when stored)."""
    if isinstance(value, bool) or not isinstance(value, int | np.integer):
        raise ArtifactError(f"{where}: meta {name} is {value!r} ({type(value).__name__}); "
                            "truth-key fields must be integers")
    if not -INT32_MAX - 1 <= int(value) <= INT32_MAX:
        raise ArtifactError(f"{where}: meta {name} {value} does not fit int32 (at most "
                            f"{INT32_MAX}); refused rather than wrapped")
    return int(value)


def import_reference_payload(store: ArtifactStore, path: str | Path, allow_pickle: bool = False,
                             normalise: bool = False,
                             recipe: Mapping[str, Any] | None = None) -> Build:
    """Convert the reference project's pickled payload into a payload build (explicit opt-in).

    ``allow_pickle`` must be True: the file is unpickled, which executes code it carries.
    ``normalise`` L2-normalises the vectors (recorded); otherwise they are kept as they are and
    the integrity guard judges their norms. The encoder is unknown (the file does not say):
    the embedder canary measures whether the configured one reproduces the vectors.
    """
    table, vectors = read_reference_payload(path, allow_pickle)
    if normalise:
        vectors = l2_normalise(vectors)
    path = Path(path).resolve()
    with store.stage(kinds.PAYLOAD) as staged:
        np.save(staged / VECTORS, vectors)
        table.to_parquet(staged / CHUNKS, index=False)
        manifest = {
            "embedder": {"id": "unknown (imported reference payload)", "dim": int(vectors.shape[1])},
            "dim": int(vectors.shape[1]),
            "dtype": "float32",
            "norm": "l2 (normalised on import)" if normalise else "as imported (unchecked)",
            "metric": "ip",
            "n_rows": int(vectors.shape[0]),
            "n_articles": int(table["article_index"].nunique()),
            "adjacent_cosine_mean": adjacent_cosine(vectors, table["article_index"].to_numpy()),
            "source": {"kind": "reference payload (pickle)", "path": str(path),
                       "sha256": sha256_file(path), "normalised_on_import": normalise},
        }
        return store.publish(kinds.PAYLOAD, staged, manifest, recipe=recipe)

