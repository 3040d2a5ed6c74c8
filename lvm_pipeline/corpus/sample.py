"""The offline sample corpus: real English prose that every install of the project already has.

Why documentation text: no run may download a dataset, and committing third-party text is not
ours to do. Python's reference topics (``pydoc_data.topics``) and the docstrings of the
standard library and of our own dependencies (numpy, pandas, torch, pyarrow, dagster, …) are
real, topical prose whose consecutive paragraphs follow each other the way an article's do.

An article is one reference topic, or one source module: its module, class and function
docstrings in source order. Modules are read with :mod:`ast`, never imported (no side effects,
and a parse is cheap: benchmarks/RESULTS.md, "Figures behind code defaults"). Their order is a
stable shuffle (sha256 of ``package/path``), so a ``max_chunks`` cut mixes every package instead
of taking the alphabetically first. The result is deterministic for given package versions,
which :func:`describe` records.

Parsing the files is most of a sample read (seconds, in every run: the corpus step has no
recipe). :class:`DocstringCache` keeps each file's docstrings under the sha256 of its bytes (and
of this module, whose code extracts them) in the data dir, so an unchanged install is read
from the cache, and a changed file (another hash) is parsed again.
"""

from __future__ import annotations

import ast
import hashlib
import importlib.metadata
import importlib.util
import json
import platform
import sysconfig
from collections.abc import Iterator
from pathlib import Path

from lvm_pipeline.corpus.article import Article
from lvm_pipeline.store import write_json_atomic

# Dependencies whose docstrings are prose (not generated stubs); every one is installed with
# the project. Order does not matter: files are interleaved by hash.
DOC_PACKAGES = ("numpy", "pandas", "torch", "pyarrow", "dagster", "faiss",
                "sentence_transformers", "transformers", "matplotlib")
# Folders whose files are tests, vendored copies or code generators, not documentation.
SKIP_PARTS = frozenset({"tests", "test", "testing", "_vendor", "vendor", "vendored",
                        "site-packages", "idlelib", "lib2to3", "__pycache__", "_generated"})


def _package_roots() -> dict[str, Path]:
    roots = {"stdlib": Path(sysconfig.get_paths()["stdlib"])}
    for name in DOC_PACKAGES:
        spec = importlib.util.find_spec(name)
        if spec is not None and spec.origin is not None:
            roots[name] = Path(spec.origin).parent
    return roots


def describe() -> dict:
    """What the sample is made of, so the corpus manifest can say it is reproducible."""
    versions = {"python": platform.python_version()}
    for name in _package_roots():
        if name != "stdlib":
            dist = {"sentence_transformers": "sentence-transformers",
                    "faiss": "faiss-cpu"}.get(name, name)
            try:
                versions[name] = importlib.metadata.version(dist)
            except importlib.metadata.PackageNotFoundError:
                versions[name] = "unknown"
    return {"kind": "offline documentation sample", "package_versions": versions}


def _stable_key(label: str) -> str:
    return hashlib.sha256(label.encode()).hexdigest()


class DocstringCache:
    """Each source file's docstrings by the sha256 of its bytes, in one JSON file per version
    of this module (``folder/docstrings-<sha256 of sample.py>.json``); no folder: no cache."""

    def __init__(self, folder: Path | None) -> None:
        code = hashlib.sha256(Path(__file__).read_bytes()).hexdigest()[:16]
        self.path = folder / f"docstrings-{code}.json" if folder is not None else None
        self.texts: dict[str, str] = {}
        self.added = False
        if self.path is not None and self.path.exists():
            try:
                self.texts = json.loads(self.path.read_text(encoding="utf-8"))
            except ValueError:  # a damaged cache is rebuilt, never trusted
                self.texts = {}

    def docstrings(self, path: Path) -> str:
        data = path.read_bytes()
        key = hashlib.sha256(data).hexdigest()
        if key not in self.texts:
            self.texts[key] = _module_docstrings(data)
            self.added = True
        return self.texts[key]

    def save(self) -> None:
        """Write what this read parsed (atomically: a concurrent read sees one whole file)."""
        if self.path is not None and self.added:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            write_json_atomic(self.path, self.texts)


def _module_docstrings(source: bytes) -> str:
    """Module, class and function docstrings of one file's source, in source order."""
    try:
        tree = ast.parse(source.decode("utf-8"))
    except (SyntaxError, UnicodeDecodeError, ValueError):
        return ""
    nodes = [n for n in ast.walk(tree)
             if isinstance(n, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef)]
    nodes.sort(key=lambda n: getattr(n, "lineno", 0))
    docs = []
    for node in nodes:
        doc = ast.get_docstring(node)
        if doc and ">>>" not in doc[:4]:
            # Drop doctest lines: code, not prose.
            docs.append("\n".join(line for line in doc.splitlines()
                                  if not line.lstrip().startswith((">>>", "..."))))
    return "\n\n".join(docs)


def _topic_articles() -> list[tuple[str, Article]]:
    from pydoc_data.topics import topics

    return [(_stable_key(f"pydoc/{name}"),
             Article(f"pydoc/{name}", f"Python reference: {name}", text))
            for name, text in sorted(topics.items())]


def sample_articles(cache_dir: Path | None = None) -> Iterator[Article]:
    """Every sample article, in the stable shuffled order (lazily: parsing stops at the cut);
    ``cache_dir``: where :class:`DocstringCache` keeps the files' docstrings (written when the
    reader closes the stream)."""
    cache = DocstringCache(cache_dir)
    try:
        yield from _articles(cache)
    finally:
        cache.save()


def _articles(cache: DocstringCache) -> Iterator[Article]:
    candidates: list[tuple[str, object]] = list(_topic_articles())
    for package, root in _package_roots().items():
        for path in root.rglob("*.py"):
            relative = path.relative_to(root)
            if SKIP_PARTS.intersection(relative.parts) or path.name.startswith("test_"):
                continue
            label = f"{package}/{relative.with_suffix('').as_posix()}"
            candidates.append((_stable_key(label), (label, path)))
    candidates.sort(key=lambda item: item[0])
    for _, item in candidates:
        if isinstance(item, Article):
            yield item
            continue
        label, path = item
        text = cache.docstrings(path)
        if text.strip():
            title = label.replace("/", ".").removesuffix(".__init__")
            yield Article(label, title, text)
