"""benchmarks/doc_corpus.py: Debian's HTML documentation as a text_dir corpus of prose only."""

from __future__ import annotations

import importlib.util
from pathlib import Path

from lvm_pipeline.corpus.build import CorpusConfig, build_corpus

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "doc_corpus.py"
spec = importlib.util.spec_from_file_location("doc_corpus", SCRIPT)
doc_corpus = importlib.util.module_from_spec(spec)
spec.loader.exec_module(doc_corpus)

PAGE = """<html><head><title>json</title><style>p {}</style></head><body>
<div class="related"><ul><li><a href="index.html">index</a></li></ul></div>
<div class="body" role="main">
<h1>json — JSON encoder<a class="headerlink" href="#x">¶</a></h1>
<p>The <code class="docutils literal"><span class="pre">json</span></code> module exposes an API
familiar to users of <code>pickle</code>.
<p>An unclosed paragraph, as HTML allows, runs to the next block.</p>
<div class="highlight"><pre>import json
json.dumps([1, 2])</pre></div>
<ul><li>first item<li>second item</ul>
<dl><dt>dumps(obj)</dt><dd>Serialize obj to a string.</dd></dl>
</div>
<div class="sphinxsidebar"><p>Table of contents</p></div>
<div class="footer">© Copyright</div>
</body></html>"""


def test_prose_blocks_are_kept_and_code_navigation_and_chrome_dropped():
    assert doc_corpus.page_paragraphs(PAGE) == [
        "json — JSON encoder",
        "The json module exposes an API familiar to users of pickle.",
        "An unclosed paragraph, as HTML allows, runs to the next block.",
        "first item", "second item", "dumps(obj)", "Serialize obj to a string."]


def test_a_folder_of_pages_becomes_a_text_dir_corpus(tmp_path, monkeypatch, capsys):
    html = tmp_path / "html" / "library"
    html.mkdir(parents=True)
    body = "".join(f"<p>Paragraph {i} has enough words to be kept as one chunk of prose.</p>"
                   for i in range(4))
    (html / "json.html").write_text(f"<html><body>{body}</body></html>", encoding="utf-8")
    (html / "genindex.html").write_text("<html><body><p>Index</p></body></html>")
    out = tmp_path / "corpus"
    monkeypatch.setattr("sys.argv", ["doc_corpus.py", str(tmp_path / "html"), "--out", str(out)])
    doc_corpus.main()
    assert "1 pages, 4 paragraphs" in capsys.readouterr().out
    corpus = build_corpus(CorpusConfig(source="text_dir", path=str(out)))
    assert corpus.chunks["article_id"].unique().tolist() == ["html/library__json"]
    assert len(corpus.chunks) == 4
