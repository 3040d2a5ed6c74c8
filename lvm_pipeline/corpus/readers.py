"""Corpus readers: a Wikipedia dump (parquet / JSONL, ``id, url, title, text``) and a folder of
``.txt`` files, each yielding :class:`~lvm_pipeline.corpus.article.Article` and refusing bad
input with the file, the row and the rule broken.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from pathlib import Path

import pandas as pd

from lvm_pipeline.corpus.article import Article, CorpusError


def _check_article(source: str, row: int, article_id: object, title: object, text: object) -> None:
    where = f"{source} row {row} (id={article_id!r}, title={str(title)[:60]!r})"
    if article_id is None or str(article_id).strip() == "":
        raise CorpusError(f"{where}: article has no id")
    if not isinstance(text, str) or not text.strip():
        raise CorpusError(f"{where}: article has no text")


def read_wikipedia(path: str | Path) -> Iterator[Article]:
    """Articles from a ``.parquet`` or ``.jsonl`` file (or a folder of them) with columns
    ``id, title, text`` and optionally ``url``."""
    path = Path(path)
    if path.is_dir():
        files = sorted([*path.glob("*.parquet"), *path.glob("*.jsonl"), *path.glob("*.json")])
        if not files:
            raise CorpusError(f"{path}: no .parquet or .jsonl files in this folder")
    elif path.exists():
        files = [path]
    else:
        raise CorpusError(f"{path}: corpus file does not exist")
    for file in files:
        yield from _read_wikipedia_file(file)


def _read_wikipedia_file(file: Path) -> Iterator[Article]:
    if file.suffix == ".parquet":
        try:
            frame = pd.read_parquet(file)
        except Exception as err:
            raise CorpusError(f"{file}: not a readable parquet file ({err})") from None
        rows: Iterable[dict] = frame.to_dict("records")
    elif file.suffix in (".jsonl", ".json"):
        rows = _jsonl_rows(file)
    else:
        raise CorpusError(f"{file}: unsupported corpus file type {file.suffix!r} "
                          "(use .parquet or .jsonl)")
    for row_number, row in enumerate(rows):
        missing = [c for c in ("id", "title", "text") if c not in row]
        if missing:
            raise CorpusError(f"{file} row {row_number}: missing column(s) {missing} "
                              f"(has {sorted(row)}); expected id, url, title, text")
        _check_article(str(file), row_number, row["id"], row["title"], row["text"])
        yield Article(str(row["id"]), str(row["title"]), row["text"], str(row.get("url") or ""))


def _jsonl_rows(file: Path) -> Iterator[dict]:
    with open(file, encoding="utf-8") as handle:
        for line_number, line in enumerate(handle):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as err:
                raise CorpusError(f"{file} line {line_number + 1}: not valid JSON ({err.msg})"
                                  ) from None
            if not isinstance(row, dict):
                raise CorpusError(f"{file} line {line_number + 1}: expected a JSON object")
            yield row


def read_text_dir(path: str | Path) -> Iterator[Article]:
    """One article per ``.txt`` file (recursively, sorted); id = path without suffix."""
    root = Path(path)
    if not root.is_dir():
        raise CorpusError(f"{root}: text corpus folder does not exist")
    files = sorted(root.rglob("*.txt"))
    if not files:
        raise CorpusError(f"{root}: no .txt files in this folder")
    for row, file in enumerate(files):
        article_id = file.relative_to(root).with_suffix("").as_posix()
        try:
            text = file.read_text(encoding="utf-8")
        except UnicodeDecodeError as err:
            raise CorpusError(f"{file}: not UTF-8 text ({err.reason} at byte {err.start})"
                              ) from None
        _check_article(str(root), row, article_id, file.stem, text)
        yield Article(article_id, file.stem.replace("_", " "), text)

