"""Stage 1: articles from a source, chunked deterministically.

Readers of a Wikipedia dump or a folder of text files (:mod:`.readers`) and the offline sample
(:mod:`.sample`) yield articles (:mod:`.article`); :mod:`.chunking` cuts them and :mod:`.build`
publishes the corpus build.
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
