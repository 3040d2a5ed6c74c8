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
