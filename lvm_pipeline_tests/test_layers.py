"""House rules on layers: every module outside ``defs/`` and ``cli/`` (the domain) imports without
Dagster (the torchrun worker may use the standalone ``dagster_pipes`` package, which is not
Dagster), and nothing uses Dagster's private API. The domain is read off the tree, so a new
module is checked the day it is added."""

from __future__ import annotations

import pkgutil
import subprocess
import sys
from pathlib import Path

import lvm_pipeline

PACKAGE = Path(lvm_pipeline.__file__).parent
# The Dagster layer: the definitions, the assets and checks, and the command line that runs them.
DAGSTER_LAYER = ("lvm_pipeline.defs", "lvm_pipeline.cli", "lvm_pipeline.definitions")


def domain_modules() -> list[str]:
    """Every module of the package outside the Dagster layer."""
    names = [m.name for m in pkgutil.walk_packages([str(PACKAGE)], "lvm_pipeline.")]
    return sorted(n for n in names
                  if not any(n == layer or n.startswith(layer + ".") for layer in DAGSTER_LAYER))


def test_the_domain_is_every_stage_package():
    """The walk finds the stage packages (so the import test below is not vacuous)."""
    packages = {name.split(".")[1] for name in domain_modules()}
    assert {"store", "corpus", "embedding", "payload", "sequences", "search", "training",
            "evaluation", "report", "guards", "models"} <= packages


def test_domain_modules_never_import_dagster():
    modules = domain_modules()
    code = ("import importlib, sys\n"
            f"for name in {modules!r}:\n"
            "    importlib.import_module(name)\n"
            "bad = [m for m in sys.modules if m == 'dagster' or m.startswith('dagster.')]\n"
            "assert not bad, bad\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_the_package_uses_no_private_dagster_api():
    """Dagster's ``dagster._…`` modules change without notice between releases."""
    offenders = [f"{path.relative_to(PACKAGE)}:{n}" for path in sorted(PACKAGE.rglob("*"))
                 if path.suffix in (".py", ".yaml")
                 for n, line in enumerate(path.read_text().splitlines(), 1)
                 if "dagster._" in line]
    assert not offenders, offenders
