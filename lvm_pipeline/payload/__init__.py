"""Stage 2b: one unit vector per chunk; every later stage points into it by row.

The payload build and its readers (:mod:`.payload`), and :func:`gather`, the one code path from
row numbers to vectors (:mod:`.gather`).
"""

from lvm_pipeline.payload.gather import gather
from lvm_pipeline.payload.payload import (
    CHUNKS,
    INT32_MAX,
    PAYLOAD_DTYPES,
    VECTORS,
    Payload,
    adjacent_cosine,
    build_payload,
    chunk_table,
    current_payload,
    find_payload_build,
    import_payload,
    int32_keys,
    load_payload,
    pack_keys,
    payload_of,
    release_pages,
)

__all__ = [
    "CHUNKS",
    "INT32_MAX",
    "PAYLOAD_DTYPES",
    "VECTORS",
    "Payload",
    "adjacent_cosine",
    "build_payload",
    "chunk_table",
    "current_payload",
    "find_payload_build",
    "gather",
    "import_payload",
    "int32_keys",
    "load_payload",
    "pack_keys",
    "payload_of",
    "release_pages",
]
