"""Stage 3: windows of payload rows (5 context, 1 target), split by article.

The windows and the article split (:mod:`.windows`), with chunks nearly identical to a later
split's kept out (:mod:`.near_duplicates`).
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
    require_meaningful_split,
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
    "require_meaningful_split",
    "require_payload",
    "windows",
]
