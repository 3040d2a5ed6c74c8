"""Turn Debian documentation packages into a ``text_dir`` corpus (one ``.txt`` per HTML page).

The quality measurements of docs/evaluation.md need real text that is not the offline sample
and that we may not commit. Debian ships its documentation as HTML in ``*-doc`` packages:

    apt-get download python3.11-doc git-doc
    python benchmarks/doc_corpus.py python3.11-doc_*.deb git-doc_*.deb --out /tmp/doc-corpus
    lvm run --corpus /tmp/doc-corpus --corpus-source text_dir

Each page's prose blocks (paragraphs, list items, definitions, headings, table cells) become
paragraphs separated by blank lines, which is how the text_dir reader chunks; code blocks,
navigation, sidebars and footers are dropped, because predicting the next navigation bar says
nothing about a model. Pages with fewer than ``--min-paragraphs`` prose paragraphs (indexes,
redirects) are skipped.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import tempfile
from html.parser import HTMLParser
from pathlib import Path

# Blocks whose text forms one paragraph.
BLOCKS = {"p", "li", "dd", "dt", "h1", "h2", "h3", "h4", "h5", "h6", "td", "th", "blockquote",
          "caption", "figcaption"}
# Elements whose whole subtree is not prose.
SKIP_TAGS = {"pre", "script", "style", "nav", "header", "footer", "head"}
# Sphinx (Python docs) and AsciiDoc (git docs) chrome, by class or id.
SKIP_MARKERS = {"sphinxsidebar", "related", "footer", "highlight", "headerlink", "toc", "toctree-wrapper",
                "mobile-nav", "breadcrumbs", "admonition-title", "footnote", "footer-text"}
VOID = {"br", "img", "hr", "meta", "link", "input", "wbr", "col", "area", "base", "source"}


class ProseParser(HTMLParser):
    """Collects the text of prose blocks, outside skipped subtrees."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.stack: list[tuple[str, bool]] = []  # (tag, opened a skipped subtree)
        self.skip_depth = 0
        self.block_depth = 0
        self.paragraphs: list[str] = []
        self.current: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in VOID:
            return
        markers = set()
        for name, value in attrs:
            if name in ("class", "id") and value:
                markers.update(value.split())
        skip = tag in SKIP_TAGS or bool(markers & SKIP_MARKERS)
        self.stack.append((tag, skip))
        if skip:
            self.skip_depth += 1
        if tag in BLOCKS:
            self._flush()
            self.block_depth += 1

    def handle_endtag(self, tag: str) -> None:
        if tag in VOID:
            return
        while self.stack:  # tolerate unclosed tags (<li>, <p>) the HTML leaves implicit
            open_tag, skip = self.stack.pop()
            if skip:
                self.skip_depth -= 1
            if open_tag in BLOCKS:
                self._flush()
                self.block_depth -= 1
            if open_tag == tag:
                break

    def handle_data(self, data: str) -> None:
        if self.skip_depth == 0 and self.block_depth > 0:
            self.current.append(data)

    def _flush(self) -> None:
        text = re.sub(r"\s+", " ", "".join(self.current)).strip()
        self.current = []
        if text:
            self.paragraphs.append(text.replace("¶", "").strip())


def page_paragraphs(html: str) -> list[str]:
    parser = ProseParser()
    parser.feed(html)
    parser.close()
    return [p for p in parser.paragraphs if p]


def html_roots(sources: list[Path], scratch: Path) -> list[tuple[str, Path]]:
    """(package name, folder) pairs: a .deb is extracted into scratch, a folder used as is."""
    roots = []
    for source in sources:
        if source.suffix == ".deb":
            target = scratch / source.stem
            subprocess.run(["dpkg-deb", "-x", str(source), str(target)], check=True)
            roots.append((source.stem.split("_")[0], target))
        else:
            roots.append((source.name, source))
    return roots


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("sources", nargs="+", type=Path, help=".deb files or HTML folders")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--min-paragraphs", type=int, default=3)
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    pages = paragraphs = 0
    with tempfile.TemporaryDirectory() as scratch:
        for package, root in html_roots(args.sources, Path(scratch)):
            for file in sorted(root.rglob("*.html")):
                prose = page_paragraphs(file.read_text(encoding="utf-8", errors="replace"))
                if len(prose) < args.min_paragraphs:
                    continue
                name = file.relative_to(root).with_suffix("").as_posix()
                name = name.replace("usr/share/doc/", "").replace("/", "__")
                target = args.out / package / f"{name}.txt"
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_text("\n\n".join(prose) + "\n", encoding="utf-8")
                pages += 1
                paragraphs += len(prose)
    print(f"{pages} pages, {paragraphs} paragraphs -> {args.out}")


if __name__ == "__main__":
    main()
