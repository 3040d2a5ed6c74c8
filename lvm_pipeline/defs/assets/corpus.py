"""The ``corpus`` asset: articles split into ordered chunks."""

import dagster as dg
import pandas as pd

from lvm_pipeline.corpus import ChunkingConfig, CorpusConfig, publish_corpus
from lvm_pipeline.defs.metadata import CODE_VERSION, build_output, markdown_preview, progress_for
from lvm_pipeline.defs.resources import StorageResource

_DEFAULT = CorpusConfig()


class CorpusParams(dg.Config):
    """Where the articles come from; 0 means "no limit" for the limits."""

    source: str = _DEFAULT.source
    path: str = ""
    max_articles: int = 0
    max_chunks: int = _DEFAULT.max_chunks or 0
    max_chunks_per_article: int = _DEFAULT.max_chunks_per_article or 0
    min_words: int = ChunkingConfig.min_words
    max_words: int = ChunkingConfig.max_words

    def to_domain(self) -> CorpusConfig:
        return CorpusConfig(
            source=self.source, path=self.path or None, max_articles=self.max_articles or None,
            max_chunks=self.max_chunks or None,
            max_chunks_per_article=self.max_chunks_per_article or None,
            chunking=ChunkingConfig(self.min_words, self.max_words))


@dg.asset(group_name="data", kinds={"parquet"}, code_version=CODE_VERSION)
def corpus(context: dg.AssetExecutionContext, config: CorpusParams,
           storage: StorageResource) -> dg.Output:
    """Articles from the configured source (default: the offline documentation sample),
    chunked deterministically and de-duplicated."""
    build = publish_corpus(storage.store(), config.to_domain(), progress_for(context, "chunking"))
    chunks = pd.read_parquet(build.file("chunks.parquet"))
    info = build.manifest
    return build_output(
        build, n_articles=info["n_articles"], n_chunks=info["n_chunks"],
        duplicate_chunks_dropped=info["duplicate_chunks_dropped"],
        source=dg.MetadataValue.json(info["source"]),
        preview=markdown_preview(chunks[["article_id", "chunk_index", "text"]]))
