"""Search over the payload: the FAISS index and the exact rank-of-truth pass.

The index asset's build (:mod:`.index`), the exact pass every report and validation uses
(:mod:`.exact`) and its GEMM twin on a torch device (:mod:`.torch_search`).
"""

from lvm_pipeline.search.exact import QUERY_BLOCK, exact_pass, top_k, truth_ranks
from lvm_pipeline.search.index import (
    INDEX_TYPES,
    MIN_POINTS_PER_CELL,
    IndexConfig,
    build_index,
    is_exact,
    load_index,
    publish_index,
    recall_at_k,
    self_hits,
)
from lvm_pipeline.search.torch_search import DevicePayload

__all__ = [
    "INDEX_TYPES",
    "MIN_POINTS_PER_CELL",
    "QUERY_BLOCK",
    "DevicePayload",
    "IndexConfig",
    "build_index",
    "exact_pass",
    "is_exact",
    "load_index",
    "publish_index",
    "recall_at_k",
    "self_hits",
    "top_k",
    "truth_ranks",
]
