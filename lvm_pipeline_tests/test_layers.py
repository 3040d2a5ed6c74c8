"""House rules on layers: every module outside ``defs/`` and ``cli/`` (the domain) imports without
Dagster (the torchrun worker may use the standalone ``dagster_pipes`` package, which is not
Dagster), and nothing uses Dagster's private API. The domain is read off the tree, so a new
module is checked the day it is added."""

from __future__ import annotations

import ast
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


# Variables of other tools' protocols that the domain may read: torchrun's ranks, Triton's
# interpreter switch, MLflow's own log level. None of them is a setting of this project.
OTHER_TOOLS_ENV = {"RANK", "LOCAL_RANK", "WORLD_SIZE", "TRITON_INTERPRET",
                   "MLFLOW_LOGGING_LEVEL"}


def _environment_uses(tree: ast.AST) -> list[tuple[int, str, bool]]:
    """(line, variable, written) of every ``os.environ[...]`` / ``.get`` / ``os.getenv``."""
    uses = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Subscript) and ast.unparse(node.value) == "os.environ":
            name = node.slice.value if isinstance(node.slice, ast.Constant) else "?"
            uses.append((node.lineno, name, isinstance(node.ctx, ast.Store | ast.Del)))
        elif isinstance(node, ast.Call) and ast.unparse(node.func) in (
                "os.environ.get", "os.getenv", "os.environ.setdefault", "os.putenv",
                "os.environ.pop", "os.environ.update"):
            first = node.args[0] if node.args else None
            name = first.value if isinstance(first, ast.Constant) else "?"
            written = not ast.unparse(node.func).endswith(("get", "getenv"))
            uses.append((node.lineno, name, written))
    return uses


def test_no_domain_module_reads_or_writes_a_setting_in_the_environment():
    """Settings reach the code through Dagster resources and config; the domain never takes
    one from the environment, and no module of the package writes one."""
    offenders = []
    for path in sorted(PACKAGE.rglob("*.py")):
        module = "lvm_pipeline." + ".".join(path.relative_to(PACKAGE).with_suffix("").parts)
        domain = not any(module == layer or module.startswith(layer + ".")
                         for layer in DAGSTER_LAYER)
        for line, name, written in _environment_uses(ast.parse(path.read_text())):
            if written or (domain and name not in OTHER_TOOLS_ENV):
                offenders.append(f"{path.relative_to(PACKAGE)}:{line} "
                                 f"{'writes' if written else 'reads'} {name}")
    assert not offenders, offenders
