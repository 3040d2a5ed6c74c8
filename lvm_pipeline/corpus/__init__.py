"""Stage 1, the corpus: articles from a source (:mod:`.readers`, the offline :mod:`.sample`),
chunked deterministically (:mod:`.chunking`) and published as one build (:mod:`.build`).
"""

from lvm_pipeline.corpus.build import (
    CHUNKS,
    LIMITS,
    CorpusConfig,
    build_corpus,
    cut_summary,
    publish_corpus,
)
from lvm_pipeline.corpus.chunking import ChunkingConfig, normalise_text, text_sha256

__all__ = [
    "CHUNKS",
    "LIMITS",
    "ChunkingConfig",
    "CorpusConfig",
    "build_corpus",
    "cut_summary",
    "normalise_text",
    "publish_corpus",
    "text_sha256",
]
