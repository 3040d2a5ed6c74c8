"""Articles split into ordered chunks: the text every later artifact is built from.

Sources: a Wikipedia dump in the common parquet / JSONL form (``id, url, title, text``), a folder
of ``.txt`` files, or the built-in offline sample (:mod:`lvm_pipeline.corpus.sample`). Chunking
is deterministic: paragraphs (blank-line separated) of at least ``min_words`` words, long ones
cut at sentence ends into pieces of at most ``max_words``, and a chunk whose normalised text was
already seen anywhere in the corpus dropped. Why drop repeats: two rows with the same text have
the same vector, so "the true next chunk" would be ambiguous and the same text could sit in the
train and the eval split at once. A chunk without a single letter or digit (ASCII art in a
docstring) is dropped too: its normalised text is empty, and the payload guard refuses empty
texts.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

import pandas as pd

from lvm_pipeline.corpus import sample as sample_corpus
from lvm_pipeline.corpus.article import Article, CorpusError
from lvm_pipeline.corpus.chunking import ChunkingConfig, chunk_text, normalise_text
from lvm_pipeline.corpus.readers import read_text_dir, read_wikipedia
from lvm_pipeline.runtime import Progress, silent
from lvm_pipeline.store import ArtifactStore, Build, kinds

SOURCES = ("sample", "wikipedia", "text_dir")
CHUNK_COLUMNS = ["article_id", "title", "url", "chunk_index", "text"]






# The offline sample's limits, and only its: >= 5,000 chunks is enough to train the tiny
# presets and keeps `lvm run` short on two CPU cores (README.md gives the run's time,
# benchmarks/RESULTS.md "CPU embedding" the embedding rate), and the per-article cap keeps one
# huge module docstring from dominating the sample. A user's corpus is read whole unless a
# limit is asked for: applied silently, these limits cut a third of a documentation folder
# and would stop a Wikipedia dump after a few hundred articles, unseen by whoever gave it.
SAMPLE_LIMITS = {"max_chunks": 6000, "max_chunks_per_article": 40}
LIMITS = ("max_articles", "max_chunks", "max_chunks_per_article")


@dataclass(frozen=True)
class CorpusConfig:
    """Which articles to read and how to chunk them; written into the corpus manifest.

    Limits: ``None`` (the default) is the source's default (:data:`SAMPLE_LIMITS` for the
    sample, no limit for a user's corpus), ``0`` no limit, ``N`` at most N. ``max_chunks`` is
    checked between articles, so the article that reaches N is kept whole. After construction
    each limit is an int, the one the build applies.
    """

    source: str = "sample"
    path: str | None = None
    max_articles: int | None = None
    max_chunks: int | None = None
    max_chunks_per_article: int | None = None
    chunking: ChunkingConfig = field(default_factory=ChunkingConfig)

    def __post_init__(self) -> None:
        if self.source not in SOURCES:
            raise CorpusError(f"unknown corpus source {self.source!r}; valid: {', '.join(SOURCES)}")
        if self.source != "sample" and not self.path:
            raise CorpusError(f"corpus source {self.source!r} needs a path")
        defaults = SAMPLE_LIMITS if self.source == "sample" else {}
        for name in LIMITS:
            value = getattr(self, name)
            if value is None:
                value = defaults.get(name, 0)
            if value < 0:
                raise CorpusError(f"{name} must be >= 0 (0: no limit), got {value}")
            object.__setattr__(self, name, int(value))










# --------------------------------------------------------------------------- readers












# --------------------------------------------------------------------------- building


@dataclass
class Corpus:
    """Chunks in article order: columns ``article_id, title, url, chunk_index, text``."""

    chunks: pd.DataFrame
    info: dict

    @property
    def n_articles(self) -> int:
        return int(self.chunks["article_id"].nunique())


def articles_for(config: CorpusConfig, cache_dir: Path | None = None
                 ) -> tuple[Iterator[Article], dict]:
    """The article stream of the configured source and facts that identify it (``cache_dir``:
    where the sample keeps what it parsed, :class:`lvm_pipeline.corpus.sample.DocstringCache`)."""
    if config.source == "sample":
        return sample_corpus.sample_articles(cache_dir), sample_corpus.describe()
    if config.source == "wikipedia":
        return read_wikipedia(config.path), {"path": str(Path(config.path).resolve())}
    return read_text_dir(config.path), {"path": str(Path(config.path).resolve())}


def build_corpus(config: CorpusConfig, progress: Progress = silent,
                 cache_dir: Path | None = None) -> Corpus:
    """Read, chunk and de-duplicate articles until the source ends or a configured limit is
    reached; ``info`` counts what was read and what was cut, and by which rule
    (:func:`cut_summary` says it in a line)."""
    articles, source_info = articles_for(config, cache_dir)
    try:
        return _read(config, articles, source_info, progress)
    finally:
        articles.close()  # a reader stopped at a limit releases its file (or saves its cache)


def _read(config: CorpusConfig, articles: Iterator[Article], source_info: dict,
          progress: Progress) -> Corpus:
    records: list[tuple[str, str, str, int, str]] = []
    seen_texts: set[str] = set()
    seen_ids: set[str] = set()
    counts = {"articles_read": 0, "chunks_read": 0, "articles_without_chunks": 0,
              "duplicate_chunks_dropped": 0, "chunks_without_words_dropped": 0,
              "articles_capped": 0, "chunks_cut_by_max_chunks_per_article": 0}
    stopped_by: str | None = None  # the limit that left part of the source unread
    for article in articles:
        if config.max_articles and len(seen_ids) >= config.max_articles:
            stopped_by = "max_articles"
            break
        if config.max_chunks and len(records) >= config.max_chunks:
            stopped_by = "max_chunks"
            break
        counts["articles_read"] += 1
        if article.article_id in seen_ids:
            raise CorpusError(f"{config.path or 'sample'}: article id {article.article_id!r} "
                              "occurs twice; ids must be unique")
        pieces = chunk_text(article.text, config.chunking)
        counts["chunks_read"] += len(pieces)
        chunk_index = 0
        for position, text in enumerate(pieces):
            key = normalise_text(text)
            if not key:  # no letter or digit (ASCII art, rules): nothing to predict or to find
                counts["chunks_without_words_dropped"] += 1
                continue
            if key in seen_texts:
                counts["duplicate_chunks_dropped"] += 1
                continue
            seen_texts.add(key)
            records.append((article.article_id, article.title, article.url, chunk_index, text))
            chunk_index += 1
            if chunk_index == config.max_chunks_per_article and position + 1 < len(pieces):
                counts["articles_capped"] += 1
                counts["chunks_cut_by_max_chunks_per_article"] += len(pieces) - position - 1
                break
        if chunk_index == 0:
            counts["articles_without_chunks"] += 1
        else:
            seen_ids.add(article.article_id)
        if not config.max_chunks or len(records) < config.max_chunks:
            progress(len(records), config.max_chunks)  # 0: a total not known until the end
    if not records:
        raise CorpusError(
            f"corpus {config.source!r} ({config.path or 'built-in sample'}) produced no chunks: "
            f"{counts['articles_read']} articles read, none with a paragraph of "
            f">= {config.chunking.min_words} words"
        )
    chunks = pd.DataFrame.from_records(records, columns=CHUNK_COLUMNS)
    chunks["chunk_index"] = chunks["chunk_index"].astype("int32")
    progress(len(records), len(records))
    info = {
        "source": source_info,
        "config": asdict(config),
        "n_articles": int(chunks["article_id"].nunique()),
        "n_chunks": len(chunks),
        **counts,
        "stopped_by": stopped_by,
    }
    return Corpus(chunks=chunks, info=info)


def cut_summary(info: dict) -> str:
    """One line on what the corpus build read, kept and cut, and by which rule."""
    config = info["config"]
    cuts = []
    if info["stopped_by"]:
        # The limit is checked between articles: the article that reaches it is kept whole.
        what = "chunks" if info["stopped_by"] == "max_chunks" else "articles"
        cuts.append(f"reading stopped after the article that reached {info['stopped_by']} "
                    f"{config[info['stopped_by']]:,} (kept {info['n_' + what]:,} {what}; the "
                    "rest of the source was not read)")
    if info["articles_capped"]:
        cuts.append(f"{info['articles_capped']:,} articles capped at max_chunks_per_article "
                    f"{config['max_chunks_per_article']:,} "
                    f"({info['chunks_cut_by_max_chunks_per_article']:,} chunks left out)")
    dropped = [f"{info[key]:,} {label}" for key, label in (
        ("duplicate_chunks_dropped", "repeated chunks"),
        ("chunks_without_words_dropped", "chunks without a word")) if info[key]]
    line = (f"read {info['articles_read']:,} articles ({info['chunks_read']:,} chunks), kept "
            f"{info['n_chunks']:,} chunks of {info['n_articles']:,} articles; ")
    line += ("cut: " + "; ".join(cuts)) if cuts else "no limit cut anything"
    return line + (f"; dropped {', '.join(dropped)}" if dropped else "")


CHUNKS = "chunks.parquet"
# Under the data dir: what the offline sample parsed from the installed sources.
SAMPLE_CACHE_DIR = "sample_cache"


def publish_corpus(store: ArtifactStore, config: CorpusConfig, progress: Progress = silent
                   ) -> tuple[Build, dict]:
    """Build the corpus and publish it as ``corpus/<build_id>/chunks.parquet``; return the
    build and this read's ``info``. Why both: identical chunks are one build, whose manifest
    keeps the first read's counts (as provenance), while what this read cut depends on this
    config."""
    corpus = build_corpus(config, progress, store.root / SAMPLE_CACHE_DIR)
    with store.stage(kinds.CORPUS) as staged:
        corpus.chunks.to_parquet(staged / CHUNKS, index=False)
        # The chunks are the content; what this read counted and cut is its provenance.
        return store.publish(kinds.CORPUS, staged, {"n_articles": corpus.info["n_articles"],
                                                    "n_chunks": corpus.info["n_chunks"]},
                             run=corpus.info), corpus.info
