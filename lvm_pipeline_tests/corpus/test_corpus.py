"""Corpus sources, chunking rules and the errors bad input gets."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from lvm_pipeline.corpus.article import CorpusError
from lvm_pipeline.corpus.build import CorpusConfig, build_corpus, cut_summary, publish_corpus
from lvm_pipeline.corpus.chunking import ChunkingConfig, chunk_text

PARA = "This paragraph has enough words to be kept as one chunk of prose text."


def test_chunking_drops_short_paragraphs_and_splits_long_ones_at_sentences():
    long = " ".join(f"Sentence number {i} has exactly seven words." for i in range(30))
    chunks = chunk_text(f"Heading\n\n{PARA}\n\n{long}", ChunkingConfig(min_words=8,
                                                                        max_words=40))
    assert chunks[0] == PARA
    assert all(8 <= len(c.split()) <= 40 for c in chunks)
    assert all(c.endswith(".") for c in chunks[1:])  # cut at sentence ends
    assert " ".join(chunks[1:]) == long


def _wiki_rows(n: int) -> list[dict]:
    return [{"id": str(i), "url": f"https://x/{i}", "title": f"T{i}",
             "text": "\n\n".join(f"{PARA} Article {i} paragraph {j}." for j in range(7))}
            for i in range(n)]


@pytest.mark.parametrize("fmt", ["parquet", "jsonl"])
def test_wikipedia_dump_formats(tmp_path, fmt):
    path = tmp_path / f"wiki.{fmt}"
    rows = _wiki_rows(3)
    if fmt == "parquet":
        pd.DataFrame(rows).to_parquet(path)
    else:
        path.write_text("\n".join(json.dumps(r) for r in rows))
    corpus = build_corpus(CorpusConfig(source="wikipedia", path=str(path)))
    assert corpus.n_articles == 3 and len(corpus.chunks) == 21
    first = corpus.chunks.iloc[0]
    assert (first.article_id, first.title, first.url, first.chunk_index) == ("0", "T0",
                                                                              "https://x/0", 0)
    assert list(corpus.chunks.chunk_index[:7]) == list(range(7))


def test_text_folder(tmp_path):
    (tmp_path / "docs" / "sub").mkdir(parents=True)
    (tmp_path / "docs" / "a_note.txt").write_text(f"{PARA}\n\n{PARA} Two.")
    (tmp_path / "docs" / "sub" / "b.txt").write_text(f"{PARA} Three.")
    corpus = build_corpus(CorpusConfig(source="text_dir", path=str(tmp_path / "docs")))
    assert list(corpus.chunks.article_id.unique()) == ["a_note", "sub/b"]
    assert corpus.chunks.title.iloc[0] == "a note"


def _long_articles(folder, lengths: list[int]) -> str:
    """A text folder with one article per length, of that many distinct paragraphs."""
    folder.mkdir()
    for a, n in enumerate(lengths):
        (folder / f"a{a}.txt").write_text(
            "\n\n".join(f"{PARA} Article {a} paragraph {p}." for p in range(n)))
    return str(folder)


def test_a_user_corpus_is_read_whole_and_says_nothing_was_cut(tmp_path, monkeypatch):
    """The offline sample's 40-chunks-per-article and 6,000-chunk limits are not a user's."""
    import lvm_pipeline.corpus.build as corpus_module

    # Were the sample's chunk limit applied (30 here, to keep the folder small), a1 would
    # never be read.
    monkeypatch.setitem(corpus_module.SAMPLE_LIMITS, "max_chunks", 30)
    path = _long_articles(tmp_path / "docs", [45, 30])
    corpus = build_corpus(CorpusConfig(source="text_dir", path=path))
    assert corpus.chunks.groupby("article_id").size().to_dict() == {"a0": 45, "a1": 30}
    info = corpus.info
    assert (info["articles_read"], info["chunks_read"], info["n_chunks"]) == (2, 75, 75)
    assert info["stopped_by"] is None and info["articles_capped"] == 0
    assert info["config"]["max_chunks"] == info["config"]["max_chunks_per_article"] == 0
    assert cut_summary(info) == ("read 2 articles (75 chunks), kept 75 chunks of 2 articles; "
                                 "no limit cut anything")


def test_limits_cut_a_user_corpus_only_when_asked_and_say_what_they_cut(tmp_path):
    path = _long_articles(tmp_path / "docs", [45, 30, 20, 10])
    corpus = build_corpus(CorpusConfig(source="text_dir", path=path, max_chunks=50,
                                       max_chunks_per_article=25))
    # a0 capped at 25, a1 capped at 25 (50 chunks reached), a2 and a3 never read.
    assert corpus.chunks.groupby("article_id").size().to_dict() == {"a0": 25, "a1": 25}
    info = corpus.info
    assert (info["articles_read"], info["chunks_read"], info["n_chunks"]) == (2, 75, 50)
    assert (info["articles_capped"], info["chunks_cut_by_max_chunks_per_article"]) == (2, 25)
    assert info["stopped_by"] == "max_chunks"
    assert cut_summary(info) == (
        "read 2 articles (75 chunks), kept 50 chunks of 2 articles; cut: reading stopped after "
        "the article that reached max_chunks 50 (kept 50 chunks; the rest of the source was not "
        "read); 2 articles capped at "
        "max_chunks_per_article 25 (25 chunks left out)")
    # A limit the corpus never reaches cuts nothing.
    whole = build_corpus(CorpusConfig(source="text_dir", path=path, max_chunks=105))
    assert whole.info["stopped_by"] is None and whole.info["n_chunks"] == 105


def test_the_offline_sample_keeps_its_limits_and_zero_lifts_them():
    assert (CorpusConfig().max_chunks, CorpusConfig().max_chunks_per_article) == (6000, 40)
    lifted = CorpusConfig(max_chunks=0, max_chunks_per_article=0)
    assert (lifted.max_chunks, lifted.max_chunks_per_article) == (0, 0)
    with pytest.raises(CorpusError, match="max_chunks must be >= 0"):
        CorpusConfig(max_chunks=-1)


def test_article_without_text_names_file_and_row(tmp_path):
    rows = _wiki_rows(3)
    rows[1]["text"] = "   "
    path = tmp_path / "wiki.parquet"
    pd.DataFrame(rows).to_parquet(path)
    with pytest.raises(CorpusError, match=r"wiki\.parquet row 1 \(id='1'.*article has no text"):
        build_corpus(CorpusConfig(source="wikipedia", path=str(path)))


def test_bad_inputs_get_named_errors(tmp_path):
    with pytest.raises(CorpusError, match="does not exist"):
        build_corpus(CorpusConfig(source="wikipedia", path=str(tmp_path / "nope.parquet")))
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps(_wiki_rows(1)[0]) + "\n{not json\n")
    with pytest.raises(CorpusError, match=r"bad\.jsonl line 2: not valid JSON"):
        build_corpus(CorpusConfig(source="wikipedia", path=str(bad)))
    nocol = tmp_path / "nocol.parquet"
    pd.DataFrame([{"id": "1", "title": "t"}]).to_parquet(nocol)
    with pytest.raises(CorpusError, match=r"missing column\(s\) \['text'\]"):
        build_corpus(CorpusConfig(source="wikipedia", path=str(nocol)))
    (tmp_path / "empty").mkdir()
    with pytest.raises(CorpusError, match=r"no \.txt files"):
        build_corpus(CorpusConfig(source="text_dir", path=str(tmp_path / "empty")))
    with pytest.raises(CorpusError, match="unknown corpus source 'web'; valid: sample"):
        CorpusConfig(source="web")


def test_corpus_with_only_short_paragraphs_produces_no_chunks_error(tmp_path):
    (tmp_path / "t").mkdir()
    (tmp_path / "t" / "a.txt").write_text("Too short.\n\nAlso short.")
    with pytest.raises(CorpusError, match="produced no chunks"):
        build_corpus(CorpusConfig(source="text_dir", path=str(tmp_path / "t")))


def test_repeated_chunk_text_is_kept_once(tmp_path):
    (tmp_path / "t").mkdir()
    (tmp_path / "t" / "a.txt").write_text(f"{PARA}\n\n{PARA.upper()}\n\n{PARA} New.")
    corpus = build_corpus(CorpusConfig(source="text_dir", path=str(tmp_path / "t")))
    assert len(corpus.chunks) == 2 and corpus.info["duplicate_chunks_dropped"] == 1


def test_chunks_without_a_word_are_dropped(tmp_path):
    # ASCII art in a docstring: eight "words", no letter or digit; its normalised text is
    # empty, which the payload integrity guard refuses.
    (tmp_path / "t").mkdir()
    (tmp_path / "t" / "a.txt").write_text(f"{PARA}\n\n█ █ █ █ ░ ░ ░ █ █ █\n\n{PARA} New.")
    corpus = build_corpus(CorpusConfig(source="text_dir", path=str(tmp_path / "t")))
    assert len(corpus.chunks) == 2 and corpus.info["chunks_without_words_dropped"] == 1
    assert corpus.chunks.chunk_index.tolist() == [0, 1]


def test_sample_default_is_large_enough_and_deterministic():
    first = build_corpus(CorpusConfig())
    assert first.info["n_articles"] >= 200 and first.info["n_chunks"] >= 5000
    assert first.info["source"]["package_versions"]["numpy"]
    small_a = build_corpus(CorpusConfig(max_chunks=300))
    small_b = build_corpus(CorpusConfig(max_chunks=300))
    pd.testing.assert_frame_equal(small_a.chunks, small_b.chunks)
    # The sample mixes documentation of several packages, not one.
    packages = {a.split("/")[0] for a in first.chunks.article_id.unique()}
    assert {"stdlib", "numpy", "pandas", "torch", "pydoc"} <= packages


def test_the_sample_read_through_its_cache_is_the_sample(tmp_path):
    """What the sample parsed is kept in the data dir and the next read takes it from there:
    the same chunks as a read without a cache, and a damaged cache file is parsed anew."""
    config = CorpusConfig(max_chunks=300)
    plain = build_corpus(config).chunks
    first = build_corpus(config, cache_dir=tmp_path).chunks
    [cache] = tmp_path.glob("docstrings-*.json")
    cached = build_corpus(config, cache_dir=tmp_path).chunks
    pd.testing.assert_frame_equal(first, plain)
    pd.testing.assert_frame_equal(cached, plain)
    cache.write_text("{not json")
    pd.testing.assert_frame_equal(build_corpus(config, cache_dir=tmp_path).chunks, plain)
    assert json.loads(cache.read_text())  # rewritten whole


def test_publish_corpus_is_content_addressed(store):
    a, _ = publish_corpus(store, CorpusConfig(max_chunks=100))
    b, _ = publish_corpus(store, CorpusConfig(max_chunks=100))
    assert a.build_id == b.build_id
    assert pd.read_parquet(a.file("chunks.parquet")).shape[0] >= 100


def test_a_byte_that_is_not_utf8_is_named_with_its_file_and_line(tmp_path):
    rows = [json.dumps(r).encode() for r in _wiki_rows(3)]
    rows[2] = rows[2].replace(b"Article 2", b"Article \xe9")
    path = tmp_path / "wiki.jsonl"
    path.write_bytes(b"\n".join(rows))
    with pytest.raises(CorpusError, match=rf"^{path} line 3: not UTF-8 text \(byte 0xe9 at "
                                          r"column \d+\)"):
        build_corpus(CorpusConfig(source="wikipedia", path=str(path)))
    (tmp_path / "t").mkdir()
    (tmp_path / "t" / "a.txt").write_bytes(f"{PARA}\n\nSecond {PARA}\n".encode() + b"caf\xe9")
    with pytest.raises(CorpusError, match=r"a\.txt line 4: not UTF-8 text \(byte 0xe9"):
        build_corpus(CorpusConfig(source="text_dir", path=str(tmp_path / "t")))


@pytest.mark.parametrize(("fmt", "bad_id", "rule"), [
    ("parquet", None, "article has no id (null)"),
    ("parquet", "", "article id is empty"),
    ("parquet", "  ", "article id is empty"),
    ("jsonl", None, "article has no id (null)"),
    ("jsonl", 7, "article id is a int, not a string"),
    ("jsonl", "", "article id is empty"),
])
def test_a_null_empty_or_non_string_id_is_refused_naming_the_row(tmp_path, fmt, bad_id, rule):
    rows = _wiki_rows(3)
    rows[1]["id"] = bad_id
    path = tmp_path / f"wiki.{fmt}"
    if fmt == "parquet":
        pd.DataFrame(rows).to_parquet(path)
    else:
        path.write_text("\n".join(json.dumps(r) for r in rows))
    where = "row 1" if fmt == "parquet" else "line 2"
    with pytest.raises(CorpusError) as refused:
        build_corpus(CorpusConfig(source="wikipedia", path=str(path)))
    assert str(refused.value).startswith(f"{path} {where} (id=")
    assert rule in str(refused.value)


def test_a_numeric_id_column_with_a_null_is_refused_not_read_as_nan(tmp_path):
    """pandas stores [1, None, 3] as floats: the null became the article "nan" and the others
    "1.0" and "3.0"."""
    frame = pd.DataFrame(_wiki_rows(3))
    frame["id"] = [1, None, 3]
    path = tmp_path / "wiki.parquet"
    frame.to_parquet(path)
    with pytest.raises(CorpusError, match=r"wiki\.parquet row 0 \(id=1\.0.*article id is a "
                                          r"float, not a string"):
        build_corpus(CorpusConfig(source="wikipedia", path=str(path)))
