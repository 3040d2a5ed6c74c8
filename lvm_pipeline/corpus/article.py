"""One source article: what every corpus reader yields and chunking consumes.

Its own module so that the readers (:mod:`lvm_pipeline.corpus`) and the offline sample
(:mod:`lvm_pipeline.corpus.sample`), which the corpus reads from, share it without importing
each other.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Article:
    article_id: str
    title: str
    text: str
    url: str = ""


class CorpusError(ValueError):
    """Bad corpus input; the message names the file, the row and the rule broken."""

