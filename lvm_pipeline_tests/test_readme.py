"""The README's layout section is the tree of packages, each described by the first line of
its door's docstring: a package added, renamed or redescribed fails here until the README
follows (the failure prints the block to paste)."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import lvm_pipeline

REPO = Path(__file__).resolve().parents[1]
PACKAGE = Path(lvm_pipeline.__file__).parent
# The stage packages in pipeline order, then the shared ones and the Dagster layer.
ORDER = ("store", "runtime", "corpus", "embedding", "payload", "sequences", "search", "models",
         "training", "evaluation", "report", "guards", "interop", "synthetic", "defs", "cli")
OUTSIDE = (
    ("lvm_pipeline_tests/", "pytest, mirroring the packages: unit tests + end-to-end runs"),
    ("benchmarks/", "speed and memory measurements (benchmarks/README.md, RESULTS.md)"),
    ("deploy/", "instance and run config for Postgres and Kubernetes (docs/deploy.md)"),
    ("docs/", "guards.md, evaluation.md, deploy.md"),
    ("data/", "default data dir: artifacts and the Dagster instance (git-ignored)"),
    ("dagster.yaml", "the instance configuration `lvm` gives a data dir's instance"),
    ("workspace.yaml", "the code location `lvm ui` serves"),
)


def _summary(path: Path) -> str:
    """The first line of a module's docstring, its RST literals as Markdown's."""
    return ast.get_docstring(ast.parse(path.read_text())).splitlines()[0].strip().replace("``", "`")


def expected_layout() -> str:
    lines = ["lvm_pipeline/"]
    lines += [f"  {name + '/':<16}{_summary(PACKAGE / name / '__init__.py')}" for name in ORDER]
    lines.append(f"  {'definitions.py':<16}{_summary(PACKAGE / 'definitions.py')}")
    lines += [f"{name:<20}{text}" for name, text in OUTSIDE]
    return "\n".join(lines)


def test_every_package_is_in_the_layout_order():
    packages = {p.parent.name for p in PACKAGE.glob("*/__init__.py")}
    assert packages == set(ORDER)
    assert {p.name for p in PACKAGE.glob("*.py")} == {"__init__.py", "definitions.py"}


def test_the_readme_layout_is_the_tree_of_packages():
    readme = (REPO / "README.md").read_text()
    block = re.search(r"## Layout\n\n```\n(.*?)\n```", readme, re.S)
    assert block is not None, "README.md has no ## Layout code block"
    assert block.group(1) == expected_layout(), (
        "README.md's layout is stale; replace its block with:\n" + expected_layout())


# ---------------------------------------------------------------- links between the documents

DOCUMENTS = ("README.md", "docs/*.md", "benchmarks/*.md", "data/README.md")
# [text](target): the target up to its closing parenthesis, no spaces (a URL or a path).
LINK = re.compile(r"\]\(([^)\s]+)\)")


def github_anchor(heading: str) -> str:
    """The anchor GitHub gives a heading: lower case, inline code marks and punctuation dropped
    (letters, digits, ``_`` and ``-`` kept, in any script), each space a hyphen."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def anchors(path: Path) -> set[str]:
    """Every heading's anchor in a Markdown file, outside fenced code (where ``#`` starts a
    shell comment); a repeated heading's anchors get ``-1``, ``-2``… as on GitHub."""
    seen: dict[str, int] = {}
    out = set()
    fenced = False
    for line in path.read_text().splitlines():
        if line.startswith("```"):
            fenced = not fenced
        elif not fenced and (m := re.match(r"#{1,6} (.+)", line)):
            base = github_anchor(m.group(1))
            n = seen.get(base, 0)
            seen[base] = n + 1
            out.add(base if n == 0 else f"{base}-{n}")
    return out


def test_every_link_between_the_documents_resolves():
    """A link from one of the repository's Markdown files to a file in it names a file that
    exists, and its ``#anchor`` a heading of that file: renaming a heading fails here until
    every link to it follows."""
    broken = []
    for pattern in DOCUMENTS:
        for doc in sorted(REPO.glob(pattern)):
            for target in LINK.findall(doc.read_text()):
                if re.match(r"[a-z][a-z0-9+.-]*:", target):  # http:, https:, mailto:
                    continue
                path, _, anchor = target.partition("#")
                file = (doc.parent / path).resolve() if path else doc
                where = f"{doc.relative_to(REPO)}: ({target})"
                if not file.exists():
                    broken.append(f"{where}: no file {file.relative_to(REPO)}")
                elif anchor and file.suffix == ".md" and anchor not in anchors(file):
                    broken.append(f"{where}: no heading with anchor #{anchor} in "
                                  f"{file.relative_to(REPO)}")
    assert not broken, "broken links:\n" + "\n".join(broken)


def test_github_anchors_drop_code_marks_and_punctuation():
    assert github_anchor("The default `lvm run` (2026-12-01)") == "the-default-lvm-run-2026-12-01"
    assert github_anchor("Embedding cache: 1 %-edited rebuilds") == "embedding-cache-1--edited-rebuilds"
