"""Content-addressed artifact storage under one data root.

Every artifact (corpus, payload, sequences, checkpoint, index, report) is written into a
temporary folder, hashed file by file, and renamed into ``<root>/<kind>/<build_id>/`` with a
``manifest.json``. Why: a run that fails halfway leaves at most a temp folder, which is removed,
and builds are immutable and content-addressed, so no run can overwrite another's. Loading
re-hashes each file against the manifest, so a truncated or edited file fails loudly and names
itself.

Which build a run reads is not decided here: the Dagster instance records every
materialization's build id, and the IO manager (``lvm_pipeline/defs/io_manager.py``) resolves
each input from it. ``<root>/<kind>/CURRENT`` is a convenience for readers outside a run
(``lvm report``, ``lvm check``, ``lvm verify``, notebooks): it names the build of the last step
that *succeeded* in materializing that kind (:meth:`ArtifactStore.set_current`, called by the IO
manager after the step's asset function returned), and no step reads it.

A build id proves its content: it is the hash of the kind, every file's sha256, the upstream
build ids and the manifest's content fields (:func:`content_id`), and verifying a build
recomputes it, so a file edited together with its hash in the manifest, or a manifest edited
alone, is refused like a truncated file. What says how a build was made rather than what it
holds (when, by which code and recipe, how long it took, from where) sits under keys the id
leaves out (:data:`PROVENANCE`), so the same content is the same build wherever it was made.
A build that fails verification is moved aside (:meth:`ArtifactStore.quarantine`, never deleted
silently) and the step that would produce it builds it anew.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import json
import os
import shutil
import tempfile
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

MANIFEST = "manifest.json"
CURRENT = "CURRENT"
# <kind>/recipes/<recipe key>.json: which build each recipe made (ArtifactStore.build_for_recipe).
RECIPES = "recipes"
# <kind>/.quarantine/<build dir>-<when>/: builds that failed verification, moved aside.
QUARANTINE = ".quarantine"
QUARANTINED = "QUARANTINED.json"
# Manifest keys that say how a build was made, not what it holds: the build id leaves them out.
PROVENANCE = ("build_id", "created_at", "code_version", "recipe", "run")
# Top-level folders of a data root that hold no builds: the Dagster instance, and the
# embedding cache (lvm_pipeline.embedding.cache: its shards verify themselves when read).
NOT_BUILDS = ("dagster_home", "embedding_cache")
# Short enough for readable folder names, long enough (64 bits) that two builds never collide.
BUILD_DIR_CHARS = 16


class ArtifactError(RuntimeError):
    """An artifact is missing, unreadable or unusable; the message says which and why."""


class HashMismatchError(ArtifactError):
    """A file's bytes no longer match the sha256 its manifest recorded (truncated or edited)."""


def sha256_file(path: Path, chunk_bytes: int = 1 << 22) -> str:
    """sha256 of a file's bytes, read in 4 MiB chunks so GB-sized payloads stay out of RAM."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk_bytes):
            digest.update(block)
    return digest.hexdigest()


def sha256_json(obj: Any) -> str:
    """sha256 of an object's canonical JSON (sorted keys), used for ids derived from content."""
    return hashlib.sha256(json.dumps(obj, sort_keys=True).encode()).hexdigest()


def code_version() -> str:
    """Package version plus a hash of the package's own source files, measured at call time.

    Why not git: an installed wheel has no repository, and a dirty tree would lie.
    """
    from lvm_pipeline import __version__

    package_dir = Path(__file__).resolve().parent
    digest = hashlib.sha256()
    for source in sorted(package_dir.rglob("*.py")):
        digest.update(source.relative_to(package_dir).as_posix().encode())
        digest.update(source.read_bytes())
    return f"{__version__}+{digest.hexdigest()[:12]}"


def content_id(manifest: Mapping[str, Any]) -> str:
    """The build id a manifest's content gives: the sha256 of everything in it but
    :data:`PROVENANCE` (the kind, the files' hashes, the upstream build ids and the content
    fields)."""
    return sha256_json({k: v for k, v in manifest.items() if k not in PROVENANCE})


def safe_name(name: str, where: str) -> str:
    """``name`` when it is a plain relative path inside a build folder; an error naming
    ``where`` (a manifest, a mirror object) otherwise: a name read from a manifest must never
    reach outside its folder."""
    parts = name.split("/")
    if (not name or name.startswith("/") or "\\" in name or ":" in parts[0]
            or any(p in ("", ".", "..") for p in parts)):
        raise ArtifactError(f"{where}: file name {name!r} is not a plain relative path inside "
                            "the build; refused")
    return name


def recipe_key(recipe: Mapping[str, Any]) -> str:
    """The sha256 of a step's recipe: its asset's code version, its resolved config and the
    build ids of its inputs. Equal keys compute the same thing, so one's build serves both."""
    return sha256_json(dict(recipe))


def utc_now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")


def write_json_atomic(path: Path, obj: Any) -> None:
    """Write JSON through a temp file in the same folder and rename it over ``path``."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as handle:
            json.dump(obj, handle, indent=2, sort_keys=True)
            handle.write("\n")
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def read_json(path: Path) -> Any:
    try:
        return json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise ArtifactError(f"{path}: file is missing") from None
    except json.JSONDecodeError as err:
        raise ArtifactError(f"{path}: not valid JSON ({err})") from None


@dataclass(frozen=True)
class Build:
    """One published artifact: a folder of files plus the manifest that hashes them."""

    kind: str
    path: Path
    manifest: Mapping[str, Any]

    @property
    def build_id(self) -> str:
        return self.manifest["build_id"]

    def file(self, name: str, verify: bool = True) -> Path:
        """Path of one file of this build, re-hashed against the manifest first (``verify``)."""
        files = self.manifest["files"]
        if name not in files:
            raise ArtifactError(
                f"{self.path / MANIFEST}: {self.kind} build has no file {name!r} "
                f"(it has {sorted(files)})"
            )
        path = self.path / safe_name(name, str(self.path / MANIFEST))
        if verify:
            verify_file(path, files[name]["sha256"])
        return path

    def verify_manifest(self) -> None:
        """Recompute the build id from the manifest's content (no file is read): a field
        removed or edited fails here, naming the manifest, not later as a missing key."""
        where = self.path / MANIFEST
        try:
            recomputed = content_id(self.manifest)
        except TypeError as err:
            raise ArtifactError(f"{where}: not a manifest ({err})") from None
        if recomputed != self.build_id or not self.build_id.startswith(self.path.name):
            raise HashMismatchError(
                f"{where}: the manifest's content hashes to {recomputed[:12]}…, not the build "
                f"id {str(self.build_id)[:12]}… of folder {self.path.name}: the manifest was "
                "edited after the build was published")

    def verify(self) -> list[str]:
        """Recompute the build id from the manifest's content and re-hash every file; return
        the names checked, raise on the first mismatch."""
        self.verify_manifest()
        for name in sorted(self.manifest["files"]):
            self.file(name, verify=True)
        return sorted(self.manifest["files"])


@dataclass(frozen=True)
class Verification:
    """What re-hashing one build (or reading one ``CURRENT``) found: ``error`` is None when
    every file matched; ``quarantined`` is where a failing one was moved."""

    kind: str
    folder: Path
    build_id: str | None
    current: bool
    files: int
    bytes: int
    error: str | None
    unlisted: tuple[str, ...] = ()
    quarantined: Path | None = None


def restore_hint(quarantined: Path) -> str:
    """The command that puts a quarantined build or pointer back where it was."""
    note = read_json(quarantined / QUARANTINED)
    origin = Path(note["from"])
    moved = quarantined if origin.name != CURRENT else quarantined / CURRENT
    return f"mv {moved} {origin}"


def verify_store(store: ArtifactStore, quarantine: bool = True) -> list[Verification]:
    """Re-hash every file of every build under ``store`` against its manifest, and check that
    every ``CURRENT`` points at a build whose manifest names it. Never stops at the first bad
    build: the list says which builds are sound and which are not, and why. ``quarantine``:
    move each failing build and pointer aside (:meth:`ArtifactStore.quarantine`), so no step
    reads it again and the step that produces it builds it anew."""
    currents: set[Path] = set()
    out = []
    for pointer in sorted(store.root.rglob(CURRENT)):
        kind = pointer.parent.relative_to(store.root).as_posix()
        if kind.split("/")[0] in NOT_BUILDS or QUARANTINE in pointer.parts:
            continue
        try:
            currents.add(store.current(kind).path.resolve())
        except (ArtifactError, OSError) as err:
            out.append(Verification(kind, pointer, None, True, 0, 0, str(err)))
    for folder in store.build_folders():
        kind = folder.parent.relative_to(store.root).as_posix()
        current = folder.resolve() in currents
        try:
            manifest = read_json(folder / MANIFEST)
            if not isinstance(manifest, dict):
                raise ArtifactError(f"{folder / MANIFEST}: not a manifest (a JSON object)")
            build = Build(kind=kind, path=folder, manifest=manifest)
            names = build.verify()
        except (ArtifactError, KeyError, AttributeError, TypeError) as err:
            error = str(err) if isinstance(err, ArtifactError) else (
                f"{folder / MANIFEST}: not a valid manifest ({type(err).__name__}: {err})")
            out.append(Verification(kind, folder, None, current, 0, 0, error))
            continue
        listed = set(names) | {MANIFEST}
        unlisted = tuple(sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*")
                                if p.is_file() and p.relative_to(folder).as_posix() not in listed))
        out.append(Verification(kind, folder, build.build_id, current, len(names),
                                sum(f["bytes"] for f in manifest["files"].values()), None, unlisted))
    if not quarantine:
        return out
    return [replace(o, quarantined=store.quarantine(o.folder, o.error)) if o.error else o
            for o in out]


def verify_file(path: Path, expected_sha256: str) -> None:
    if not path.exists():
        raise HashMismatchError(f"{path}: file is missing (manifest expects sha256 "
                                f"{expected_sha256[:12]}…)")
    actual = sha256_file(path)
    if actual != expected_sha256:
        raise HashMismatchError(
            f"{path}: sha256 mismatch, file was truncated or edited after it was written "
            f"(manifest {expected_sha256[:12]}…, file now {actual[:12]}…, {path.stat().st_size} bytes)"
        )


def pointed_build(pointer: Path | str, target: Any, kind: str) -> str:
    """The build id a ``CURRENT`` pointer's JSON ``target`` names; an error naming the pointer
    when it names none (``{}``, a list, a number)."""
    if not isinstance(target, dict) or not isinstance(target.get("build_id"), str):
        raise ArtifactError(f"{pointer}: names no build (holds {json.dumps(target)[:80]}); "
                            f"materialize {kind} again to point it at one")
    return target["build_id"]


class ArtifactStore:
    """The data root: stages, publishes and finds builds of each artifact kind."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root).expanduser().resolve()

    def __repr__(self) -> str:
        return f"ArtifactStore({str(self.root)!r})"

    def ensure_writable(self) -> None:
        """Fail early, naming the folder, rather than after an hour of embedding."""
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            probe = self.root / f".write-probe-{uuid.uuid4().hex}"
            probe.write_bytes(b"")
            probe.unlink()
        except OSError as err:
            raise ArtifactError(f"data dir {self.root} is not writable: {err.strerror or err}") from None

    @contextlib.contextmanager
    def stage(self, kind: str) -> Iterator[Path]:
        """A fresh temp folder inside ``<root>/<kind>`` (same filesystem, so rename is atomic).

        The folder is removed when the block exits, whether or not it was published.
        """
        self.ensure_writable()
        kind_dir = self.root / kind
        kind_dir.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=".staging-", dir=kind_dir))
        try:
            yield tmp
        finally:
            shutil.rmtree(tmp, ignore_errors=True)

    def publish(
        self,
        kind: str,
        staged: Path,
        manifest: Mapping[str, Any],
        upstream: Mapping[str, str] | None = None,
        recipe: Mapping[str, Any] | None = None,
        run: Mapping[str, Any] | None = None,
    ) -> Build:
        """Hash the staged files, write the manifest and move the folder into place.

        ``build_id`` is the sha256 of the kind, the files' hashes and the upstream build ids:
        the same bytes against another payload are another artifact, and the same bytes against
        the same inputs are the same build (so a rebuild of identical content changes nothing
        downstream). CURRENT is not touched: :meth:`set_current` does that once a step succeeded.
        ``recipe``: what made it (:func:`recipe_key`), recorded in the manifest and remembered,
        so a step with the same recipe can reuse the build (:meth:`build_for_recipe`); ``run``:
        facts of this making (timings, where it came from), kept beside the content. A folder
        of the same build id that fails verification (a flipped byte, an invalid manifest) is
        quarantined and replaced by the new one: a rebuild repairs a damaged build.
        """
        files = {
            p.relative_to(staged).as_posix(): {"sha256": sha256_file(p), "bytes": p.stat().st_size}
            for p in sorted(staged.rglob("*"))
            if p.is_file() and p.name != MANIFEST
        }
        if not files:
            raise ArtifactError(f"{staged}: nothing was written for {kind}")
        upstream = dict(upstream or {})
        content = {**manifest, "kind": kind, "files": files, "upstream": upstream}
        clash = sorted(set(manifest) & set(PROVENANCE))
        if clash:
            raise ArtifactError(f"{kind} manifest fields {clash} are the store's own")
        build_id = content_id(content)
        full = {**content, "build_id": build_id,
                "code_version": recipe["code_version"] if recipe else code_version(),
                "created_at": utc_now(), **({"run": dict(run)} if run else {})}
        if recipe is not None:
            full["recipe"] = {**recipe, "key": recipe_key(recipe)}
        write_json_atomic(staged / MANIFEST, full)
        final = self.root / kind / build_id[:BUILD_DIR_CHARS]
        existing = self._sound(kind, final, build_id)
        if existing is None:
            try:
                os.rename(staged, final)
            except OSError as err:
                # Another process published this build id since we looked (two runs of one
                # recipe at once): a folder is never renamed over a full one, so keep theirs.
                existing = self._sound(kind, final, build_id)
                if existing is None:
                    raise ArtifactError(f"{final}: cannot move the new {kind} build into place "
                                        f"({err.strerror or err})") from err
        if existing is not None:
            # Identical content was published before and is intact; keep it untouched.
            full = dict(existing.manifest)
        if recipe is not None:
            self.remember_recipe(kind, recipe_key(recipe), build_id)
        return Build(kind=kind, path=final, manifest=full)

    def _recipe_entry(self, kind: str, key: str) -> Path:
        return self.root / kind / RECIPES / f"{key[:BUILD_DIR_CHARS * 2]}.json"

    def remember_recipe(self, kind: str, key: str, build_id: str) -> None:
        """Note that recipe ``key`` made build ``build_id`` (after it is in place, so an entry
        never names a build that is not complete)."""
        entry = self._recipe_entry(kind, key)
        entry.parent.mkdir(parents=True, exist_ok=True)
        write_json_atomic(entry, {"recipe_key": key, "build_id": build_id})

    def build_for_recipe(self, kind: str, key: str) -> Build | None:
        """The build recipe ``key`` made, verified; None when the recipe never ran here or its
        build is gone, or damaged (then quarantined): it must be built anew."""
        entry = self._recipe_entry(kind, key)
        if not entry.exists():
            return None
        try:
            recorded = read_json(entry)["build_id"]
        except (ArtifactError, KeyError, TypeError):
            return None
        # The manifest may carry another recipe: identical content made by another recipe is
        # one build, and both recipes name it.
        return self._sound(kind, self.root / kind / str(recorded)[:BUILD_DIR_CHARS], recorded)

    def _sound(self, kind: str, folder: Path, build_id: str) -> Build | None:
        """The build in ``folder`` when it is ``build_id`` and verifies; None when there is
        none; a damaged one is quarantined first (and then None)."""
        if not folder.exists():
            return None
        try:
            build = Build(kind=kind, path=folder, manifest=read_json(folder / MANIFEST))
            if build.manifest.get("build_id") != build_id:
                raise ArtifactError(f"{folder / MANIFEST}: names build "
                                    f"{build.manifest.get('build_id')}, expected {build_id}")
            build.verify()
        except (ArtifactError, AttributeError, KeyError, TypeError) as err:
            self.quarantine(folder, str(err))
            return None
        return build

    def quarantine(self, path: Path, reason: str) -> Path:
        """Move a build folder (or a ``CURRENT`` pointer) that failed verification aside, into
        ``<kind>/.quarantine/<name>-<when>/``, with a note of why; return where it went (never
        deleted: a person decides). Moving it back (:func:`restore_hint`) undoes it."""
        target = path.parent / QUARANTINE / f"{path.name}-{dt.datetime.now(dt.UTC):%Y%m%dT%H%M%S%f}"
        target.parent.mkdir(parents=True, exist_ok=True)
        if path.is_dir():
            os.rename(path, target)
        else:
            target.mkdir()
            os.rename(path, target / path.name)
        write_json_atomic(target / QUARANTINED, {"from": str(path), "reason": reason,
                                                 "at": utc_now()})
        return target

    def set_current(self, build: Build) -> None:
        """Point ``<kind>/CURRENT`` at ``build`` (atomically), for readers outside a run."""
        write_json_atomic(self.root / build.kind / CURRENT, {"build_id": build.build_id,
                                                             "dir": build.path.name})

    def has_current(self, kind: str) -> bool:
        return (self.root / kind / CURRENT).exists()

    def current(self, kind: str) -> Build:
        """The build that ``<kind>/CURRENT`` points at, with its manifest."""
        pointer = self.root / kind / CURRENT
        if not pointer.exists():
            raise ArtifactError(
                f"no {kind} under {self.root}: materialize it first (`lvm run` builds everything)"
            )
        return self.get(kind, pointed_build(pointer, read_json(pointer), kind))

    def get(self, kind: str, build_id: str) -> Build:
        path = self.root / kind / safe_name(build_id[:BUILD_DIR_CHARS], f"{kind} build id")
        manifest = read_json(path / MANIFEST)
        if not isinstance(manifest, dict) or manifest.get("build_id") != build_id:
            found = manifest.get("build_id") if isinstance(manifest, dict) else None
            raise ArtifactError(f"{path / MANIFEST}: names build {found}, expected {build_id}")
        build = Build(kind=kind, path=path, manifest=manifest)
        build.verify_manifest()
        return build

    def find(self, kind: str, prefix: str) -> Build:
        """The ``kind`` build whose id starts with ``prefix`` (what a person types: the first
        12 characters `lvm` prints); raises naming the folder when none or several match."""
        prefix = prefix.strip().lower()
        if len(prefix) < 6:
            raise ArtifactError(f"{kind} build {prefix!r}: give at least 6 characters of the "
                                "build id")
        ids = [read_json(folder / MANIFEST).get("build_id", "")
               for folder in sorted((self.root / kind).glob("*"))
               if not folder.name.startswith(".") and (folder / MANIFEST).exists()]
        matches = [build_id for build_id in ids if build_id.startswith(prefix)]
        if len(matches) != 1:
            raise ArtifactError(f"{self.root / kind}: {'several' if matches else 'no'} {kind} "
                                f"builds start with {prefix!r}")
        return self.get(kind, matches[0])

    def build_folders(self) -> list[Path]:
        """Every published build folder under the root, current or not (not staging or
        resume folders, whose names start with a dot, and not :data:`NOT_BUILDS`)."""
        folders = []
        for manifest in sorted(self.root.rglob(MANIFEST)):
            parts = manifest.parent.relative_to(self.root).parts
            if parts and parts[0] not in NOT_BUILDS and not any(p.startswith(".") for p in parts):
                folders.append(manifest.parent)
        return folders
