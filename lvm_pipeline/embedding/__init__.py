"""Stage 2a: the encoder, its measured fingerprint and the cache of its vectors.

A sentence-transformers model identified by hashes of its weights (:mod:`.encoder`), a cache of
its vectors keyed by its output fingerprint and each text's hash (:mod:`.cache`), and the
row-wise vector arithmetic every later stage shares (:mod:`.vectors`).
"""

from lvm_pipeline.embedding.cache import BatchEncoder, CacheStats, EmbeddingCache
from lvm_pipeline.embedding.encoder import DEFAULT_EMBEDDER, Embedder, EmbedderConfig, l2_normalise
from lvm_pipeline.embedding.vectors import EPS, row_norms, rowwise_cos, sample_rows, unit_rows

__all__ = [
    "DEFAULT_EMBEDDER",
    "EPS",
    "BatchEncoder",
    "CacheStats",
    "Embedder",
    "EmbedderConfig",
    "EmbeddingCache",
    "l2_normalise",
    "row_norms",
    "rowwise_cos",
    "sample_rows",
    "unit_rows",
]
