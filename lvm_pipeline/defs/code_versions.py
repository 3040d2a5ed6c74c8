"""Each asset's ``code_version``: a hash of the source its computation runs, so the UI says "code
version changed" only for the assets an edit can change.

An asset's code is its wiring module (``defs/assets/<stage>.py``) followed through its imports,
name by name (an import from a package's door counts the module that defines the name, not the
whole package), but never into:

- the code its **upstream** assets own (:data:`OWNED`): what they compute reaches this asset
  as new data, with a new data version (the report does not change version when the Mamba
  block changes: the five checkpoints do, and the report becomes stale through them);
- **infrastructure** that decides no output's bytes: the artifact store, progress, device
  choice and tracking (``runtime``), the guards (they only refuse), the Dagster layer and the
  command line.

Read from the source files when the definitions load (``ast``, nothing is imported), so an
installed wheel and a checkout agree.
"""

import ast
import functools
import hashlib
from collections.abc import Iterable, Mapping
from pathlib import Path

import lvm_pipeline
from lvm_pipeline.models import VARIANTS

PACKAGE = Path(lvm_pipeline.__file__).resolve().parent
INFRASTRUCTURE = ("store", "runtime", "guards", "defs", "cli", "definitions.py", "__init__.py")
CHECKPOINT_CODE = ("training", "models")
# The code each asset owns, as paths under the package (a folder: every module in it): what its
# downstream assets' versions leave out.
OWNED: Mapping[str, tuple[str, ...]] = {
    "corpus": ("corpus",),
    "payload": ("payload", "embedding", "interop/reference_payload.py"),
    "aligned_training_sequences": ("sequences", "interop/reference_npz.py"),
    "aligned_eval": ("sequences",),
    "faiss_index": ("search/index.py",),
    **{variant: CHECKPOINT_CODE for variant in VARIANTS},
    "retrieval_report": ("report", "evaluation", "search/exact.py", "search/torch_search.py"),
}
_DATA = ("corpus", "payload")
# Every asset upstream of each (a test holds this equal to the asset graph's).
UPSTREAM: Mapping[str, tuple[str, ...]] = {
    "corpus": (),
    "payload": ("corpus",),
    "aligned_training_sequences": _DATA,
    "aligned_eval": _DATA,
    "faiss_index": _DATA,
    **{variant: (*_DATA, "aligned_training_sequences") for variant in VARIANTS},
    "retrieval_report": (*_DATA, "aligned_training_sequences", "aligned_eval", "faiss_index",
                         *VARIANTS),
}
WIRING = {"corpus": "corpus", "payload": "payload", "aligned_training_sequences": "sequences",
          "aligned_eval": "sequences", "faiss_index": "index",
          **{variant: "models" for variant in VARIANTS}, "retrieval_report": "report"}


def _files(root: Path, paths: Iterable[str]) -> set[Path]:
    """The ``.py`` files under ``root`` that ``paths`` name (a folder: all of its modules)."""
    out: set[Path] = set()
    for path in paths:
        target = root / path
        out |= set(target.rglob("*.py")) if target.is_dir() else {target}
    return out


def _module_file(root: Path, module: str) -> Path | None:
    """The file of ``lvm_pipeline.<module>`` under ``root`` (a package: its ``__init__``)."""
    base = root.joinpath(*module.split(".")) if module else root
    if base.is_dir():
        return base / "__init__.py"
    return base.with_suffix(".py") if base.with_suffix(".py").is_file() else None


@functools.cache
def _imports(file: Path) -> tuple[tuple[str, tuple[str, ...]], ...]:
    """(module under the package, imported names) of every ``lvm_pipeline`` import in
    ``file``, at any depth (imports inside functions count: they run)."""
    out = []
    for node in ast.walk(ast.parse(file.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0 and (
                node.module == "lvm_pipeline" or node.module.startswith("lvm_pipeline.")):
            out.append((node.module.removeprefix("lvm_pipeline").lstrip("."),
                        tuple(a.name for a in node.names)))
        elif isinstance(node, ast.Import):
            out += [(a.name.removeprefix("lvm_pipeline").lstrip("."), ())
                    for a in node.names if a.name.startswith("lvm_pipeline.")]
    return tuple(out)


def _targets(root: Path, module: str, names: tuple[str, ...]) -> set[Path]:
    """The files that ``from lvm_pipeline.<module> import <names>`` runs for those names: a
    door's name counts the module that defines it."""
    file = _module_file(root, module)
    if file is None:
        return set()
    if file.name != "__init__.py" or not names:
        return {file}
    door = dict(_door_names(root, module))
    out = set()
    for name in names:
        sub = _module_file(root, f"{module}.{name}" if module else name)
        if sub is not None:  # a module (or a package's door) of its own
            out.add(sub)
        elif door.get(name, module) != module:  # re-exported: where the door takes it from
            out |= _targets(root, door[name], (name,))
        else:  # defined in the door itself
            out.add(file)
    return out


@functools.cache
def _door_names(root: Path, package: str) -> tuple[tuple[str, str], ...]:
    """Each name a package's ``__init__`` imports → the module it imports it from."""
    file = _module_file(root, package)
    pairs = []
    for module, names in _imports(file) if file else ():
        pairs += [(name, module) for name in names]
    return tuple(pairs)


def code_files(asset: str, root: Path | None = None) -> list[Path]:
    """The source files ``asset``'s code version hashes (module docstring), sorted; ``root``:
    the package's folder (default: this one)."""
    root = root or PACKAGE
    return _reachable(root, root / "defs" / "assets" / f"{WIRING[asset]}.py", UPSTREAM[asset])


def _reachable(root: Path, start_file: Path, upstream: Iterable[str]) -> list[Path]:
    """``start_file`` and the files its imports reach, short of infrastructure and of the code
    the ``upstream`` assets own."""
    fenced = _files(root, INFRASTRUCTURE) | _files(
        root, [path for up in upstream for path in OWNED[up]])
    start = {start_file}
    seen, todo = set(start), list(start)
    while todo:
        for module, names in _imports(todo.pop()):
            for target in _targets(root, module, names) - seen:
                seen.add(target)
                if target not in fenced:
                    todo.append(target)
    return sorted(f for f in seen if f in start or f not in fenced)


def code_version(asset: str, root: Path | None = None) -> str:
    """``<package version>+<sha256 of asset's code files, 12 hex>``."""
    root = root or PACKAGE
    return _version(root, code_files(asset, root))


def trained_baselines_code_version(root: Path | None = None) -> str:
    """The version of the code that trains the report's baselines
    (``report/trained_baselines.py`` and what it runs: the training loop, the losses), short of
    the data assets' code: the part of ``retrieval_report``'s code a rendering edit leaves
    alone, so the report asks for the baselines it trained before (``defs/assets/report.py``)."""
    root = root or PACKAGE
    return _version(root, _reachable(root, root / "report" / "trained_baselines.py",
                                     (*_DATA, "aligned_training_sequences")))


def _version(root: Path, files: Iterable[Path]) -> str:
    digest = hashlib.sha256()
    for file in files:
        digest.update(file.relative_to(root).as_posix().encode())
        digest.update(file.read_bytes())
    return f"{lvm_pipeline.__version__}+{digest.hexdigest()[:12]}"
