"""Stage 3, the windows: five context rows and a target row per window, split by article
(:mod:`.windows`), with near-duplicate chunks kept out of later splits
(:mod:`.near_duplicates`).
"""

from lvm_pipeline.sequences.near_duplicates import NEAR_DUPLICATE_COSINE, near_duplicates
from lvm_pipeline.sequences.windows import (
    CONTEXT,
    SPLITS,
    SequenceSet,
    SplitConfig,
    article_splits,
    build_windows,
    load_sets,
    native_info,
    publish_sequences,
    require_payload,
    windows,
)

__all__ = [
    "CONTEXT",
    "NEAR_DUPLICATE_COSINE",
    "SPLITS",
    "SequenceSet",
    "SplitConfig",
    "article_splits",
    "build_windows",
    "load_sets",
    "native_info",
    "near_duplicates",
    "publish_sequences",
    "require_payload",
    "windows",
]
