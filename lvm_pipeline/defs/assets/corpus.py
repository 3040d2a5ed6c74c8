"""The ``corpus`` asset: articles split into ordered chunks."""

import dagster as dg
import pandas as pd

from lvm_pipeline.corpus import LIMITS, ChunkingConfig, CorpusConfig, cut_summary, publish_corpus
from lvm_pipeline.defs.code_versions import code_version
from lvm_pipeline.defs.metadata import build_output, markdown_preview
from lvm_pipeline.defs.resources import ProgressResource, StorageResource

_DEFAULT = CorpusConfig()


class CorpusParams(dg.Config):
    """Where the articles come from. A limit left unset is the source's default (the offline
    sample: 6,000 chunks, 40 per article; a user's corpus: none); 0 means "no limit"."""

    source: str = _DEFAULT.source
    path: str = ""
    max_articles: int | None = None
    max_chunks: int | None = None
    max_chunks_per_article: int | None = None
    min_words: int = ChunkingConfig.min_words
    max_words: int = ChunkingConfig.max_words

    def to_domain(self) -> CorpusConfig:
        return CorpusConfig(
            source=self.source, path=self.path or None, max_articles=self.max_articles,
            max_chunks=self.max_chunks, max_chunks_per_article=self.max_chunks_per_article,
            chunking=ChunkingConfig(self.min_words, self.max_words))


@dg.asset(group_name="data", kinds={"parquet"}, code_version=code_version("corpus"))
def corpus(context: dg.AssetExecutionContext, config: CorpusParams,
           storage: StorageResource, progress: ProgressResource) -> dg.Output:
    """Articles from the configured source (default: the offline documentation sample),
    chunked deterministically and de-duplicated; says what the limits cut."""
    build, info = publish_corpus(storage.store(), config.to_domain(),
                                 progress.for_step(context, "chunking", "chunks"))
    chunks = pd.read_parquet(build.file("chunks.parquet"))
    context.log.info(cut_summary(info))
    return build_output(
        build, n_articles=info["n_articles"], n_chunks=info["n_chunks"],
        articles_read=info["articles_read"], chunks_read=info["chunks_read"],
        stopped_by=info["stopped_by"] or "end of source",
        articles_capped=info["articles_capped"],
        chunks_cut_by_max_chunks_per_article=info["chunks_cut_by_max_chunks_per_article"],
        duplicate_chunks_dropped=info["duplicate_chunks_dropped"],
        limits=dg.MetadataValue.json({k: info["config"][k] for k in LIMITS}),
        source=dg.MetadataValue.json(info["source"]),
        preview=markdown_preview(chunks[["article_id", "chunk_index", "text"]]))
