"""Stage 2b, the payload: one L2-normalised vector per corpus chunk and the table naming each
row (:mod:`.payload`); every later stage points into it by row, through :func:`gather`.
"""

from lvm_pipeline.payload.gather import gather
from lvm_pipeline.payload.payload import (
    CHUNKS,
    PAYLOAD_DTYPES,
    VECTORS,
    Payload,
    adjacent_cosine,
    build_payload,
    chunk_table,
    current_payload,
    find_payload_build,
    import_payload,
    load_payload,
    pack_keys,
    payload_of,
    release_pages,
)

__all__ = [
    "CHUNKS",
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
    "load_payload",
    "pack_keys",
    "payload_of",
    "release_pages",
]
