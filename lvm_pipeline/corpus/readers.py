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


def _check_article(where: str, article_id: object, title: object, text: object) -> None:
    """Refuse a row whose id is not a non-empty string or whose text is empty. Why strings
    only: a null id in a parquet column arrives as NaN and became the article "nan", and a
    numeric column turns 12 into "12.0" as soon as one value is null."""
    where = f"{where} (id={article_id!r}, title={str(title)[:60]!r})"
    if article_id is None or (pd.api.types.is_scalar(article_id) and pd.isna(article_id)):
        raise CorpusError(f"{where}: article has no id (null); every article needs a "
                          "non-empty string id")
    if not isinstance(article_id, str):
        raise CorpusError(f"{where}: article id is a {type(article_id).__name__}, not a "
                          "string; ids must be non-empty strings (store the id column as text)")
    if not article_id.strip():
        raise CorpusError(f"{where}: article id is empty; every article needs a non-empty "
                          "string id")
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
        rows: Iterable[tuple[str, dict]] = (
            (f"{file} row {number}", row) for number, row in enumerate(frame.to_dict("records")))
    elif file.suffix in (".jsonl", ".json"):
        rows = _jsonl_rows(file)
    else:
        raise CorpusError(f"{file}: unsupported corpus file type {file.suffix!r} "
                          "(use .parquet or .jsonl)")
    for where, row in rows:
        missing = [c for c in ("id", "title", "text") if c not in row]
        if missing:
            raise CorpusError(f"{where}: missing column(s) {missing} "
                              f"(has {sorted(row)}); expected id, url, title, text")
        _check_article(where, row["id"], row["title"], row["text"])
        yield Article(row["id"], str(row["title"]), row["text"], str(row.get("url") or ""))


def _jsonl_rows(file: Path) -> Iterator[tuple[str, dict]]:
    """``(where, row)`` per non-empty line; ``where`` names the file and the line. Lines are
    decoded one by one, so a byte that is not UTF-8 is reported with its line, not as an
    offset into the decoder's buffer."""
    with open(file, "rb") as handle:
        for line_number, raw in enumerate(handle, start=1):
            where = f"{file} line {line_number}"
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as err:
                raise CorpusError(f"{where}: not UTF-8 text (byte 0x{raw[err.start]:02x} at "
                                  f"column {err.start + 1}); a corpus must be UTF-8") from None
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as err:
                raise CorpusError(f"{where}: not valid JSON ({err.msg})") from None
            if not isinstance(row, dict):
                raise CorpusError(f"{where}: expected a JSON object")
            yield where, row


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
        raw = file.read_bytes()
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as err:
            line = raw[:err.start].count(b"\n") + 1
            raise CorpusError(f"{file} line {line}: not UTF-8 text (byte 0x{raw[err.start]:02x} "
                              f"at byte {err.start}); a corpus must be UTF-8") from None
        _check_article(f"{root} row {row}", article_id, file.stem, text)
        yield Article(article_id, file.stem.replace("_", " "), text)

