"""The artifact store mirrored to an object store (``s3://``, ``gs://``, any fsspec URL).

Why a mirror and not an object-store root: builds are memory-mapped (``vectors.npy``), read by
FAISS from a file path, and published by an atomic folder rename; object stores offer none of
the three. So compute keeps a local root (a pod's scratch disk, a laptop's ``./data``) and the
object store holds what every machine shares:

- ``publish`` publishes locally as always, then uploads the build's files, its manifest *last*
  (a remote manifest means a complete build). Builds are immutable and content-addressed, so an
  upload is safe to repeat. ``set_current`` writes ``<kind>/CURRENT`` there too, one small
  object whose PUT is atomic.
- ``get`` (what a run's IO manager asks for: the build id the Dagster instance recorded) and
  ``current`` download a build missing locally into a staging folder, re-hash every file
  against its manifest, and only then rename it into the local root. A corrupt or truncated
  object fails loudly, naming its URL, and leaves nothing.

The remote is the truth for ``current``: a kind the mirror lacks is missing, even if an old
local copy exists (no silent fallback to stale local state).
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from lvm_pipeline.store.artifacts import (
    BUILD_DIR_CHARS,
    CURRENT,
    MANIFEST,
    ArtifactError,
    ArtifactStore,
    Build,
    HashMismatchError,
    content_id,
    pointed_build,
    recipe_key,
    safe_name,
    verify_file,
    write_json_atomic,
)


class MirroredStore(ArtifactStore):
    """An :class:`ArtifactStore` whose builds and CURRENT pointers live in ``mirror_url``."""

    def __init__(self, root: str | os.PathLike[str], mirror_url: str,
                 storage_options: Mapping[str, Any] | None = None) -> None:
        super().__init__(root)
        import fsspec

        self.mirror_url = mirror_url.rstrip("/")
        self.fs, self._base = fsspec.core.url_to_fs(self.mirror_url, **(storage_options or {}))

    def __repr__(self) -> str:
        return f"MirroredStore({str(self.root)!r}, mirror_url={self.mirror_url!r})"

    def _remote(self, *parts: str) -> str:
        return "/".join([self._base.rstrip("/"), *parts])

    def _url(self, *parts: str) -> str:
        return "/".join([self.mirror_url, *parts])

    # ------------------------------------------------------------------ writing

    def publish(self, kind: str, staged: Path, manifest: Mapping[str, Any],
                upstream: Mapping[str, str] | None = None,
                recipe: Mapping[str, Any] | None = None,
                run: Mapping[str, Any] | None = None) -> Build:
        """Publish here, push the build, then note its recipe in the mirror (after the build
        it names is there), so every machine reuses what any of them built."""
        build = super().publish(kind, staged, manifest, upstream, recipe=recipe, run=run)
        self.push(build)
        if recipe is not None:
            entry = self._recipe_entry(kind, recipe_key(recipe))
            self.fs.makedirs(self._remote(kind, entry.parent.name), exist_ok=True)
            self.fs.pipe_file(self._remote(kind, entry.parent.name, entry.name),
                              entry.read_bytes())
        return build

    def push(self, build: Build) -> None:
        """Upload ``build`` (files, then manifest) unless the mirror has it."""
        remote_dir = self._remote(build.kind, build.path.name)
        if not self.fs.exists(f"{remote_dir}/{MANIFEST}"):
            for name in sorted(build.manifest["files"]):
                self.fs.makedirs(os.path.dirname(f"{remote_dir}/{name}"), exist_ok=True)
                self.fs.put_file(str(build.path / name), f"{remote_dir}/{name}")
            self.fs.put_file(str(build.path / MANIFEST), f"{remote_dir}/{MANIFEST}")

    def set_current(self, build: Build) -> None:
        """Point the local and the mirror's CURRENT at ``build``."""
        super().set_current(build)
        pointer = {"build_id": build.build_id, "dir": build.path.name}
        self.fs.pipe_file(self._remote(build.kind, CURRENT), json.dumps(pointer).encode())

    # ------------------------------------------------------------------ reading

    def build_for_recipe(self, kind: str, key: str) -> Build | None:
        """The build recipe ``key`` made here or on any machine sharing the mirror (pulled and
        verified like any build), or None."""
        entry = self._recipe_entry(kind, key)
        remote = self._remote(kind, entry.parent.name, entry.name)
        if not entry.exists() and self.fs.exists(remote):
            entry.parent.mkdir(parents=True, exist_ok=True)
            entry.write_bytes(self.fs.cat_file(remote))
        return super().build_for_recipe(kind, key)

    def has_current(self, kind: str) -> bool:
        return self.fs.exists(self._remote(kind, CURRENT))

    def current(self, kind: str) -> Build:
        """The build the mirror's CURRENT names, downloaded and verified if not here yet."""
        pointer = self._remote(kind, CURRENT)
        if not self.fs.exists(pointer):
            raise ArtifactError(f"no {kind} under {self.mirror_url}: materialize it first "
                                "(`lvm run` builds everything)")
        try:
            target = json.loads(self.fs.cat_file(pointer))
        except ValueError as err:
            raise ArtifactError(f"{self._url(kind, CURRENT)}: not valid JSON ({err})") from None
        build = self.get(kind, pointed_build(self._url(kind, CURRENT), target, kind))
        write_json_atomic(self._local_pointer(kind), target)
        return build

    def get(self, kind: str, build_id: str) -> Build:
        """The build ``build_id``, downloaded and verified first when it is not here yet."""
        if not (self.root / kind / build_id[:BUILD_DIR_CHARS] / MANIFEST).exists():
            self._pull(kind, build_id[:BUILD_DIR_CHARS])
        return super().get(kind, build_id)

    def _local_pointer(self, kind: str) -> Path:
        (self.root / kind).mkdir(parents=True, exist_ok=True)
        return self.root / kind / CURRENT

    def _pull(self, kind: str, build_dir: str) -> None:
        remote_dir = self._remote(kind, build_dir)
        try:
            manifest = json.loads(self.fs.cat_file(f"{remote_dir}/{MANIFEST}"))
        except FileNotFoundError:
            raise ArtifactError(f"{self._url(kind, build_dir, MANIFEST)}: missing (the "
                                "upload of this build never finished)") from None
        where = self._url(kind, build_dir, MANIFEST)
        try:
            named = manifest["build_id"]
            proven = content_id(manifest) == named and named.startswith(build_dir)
            files = {safe_name(name, where): info for name, info in manifest["files"].items()}
        except (AttributeError, KeyError, TypeError) as err:
            raise ArtifactError(f"{where}: not a manifest ({err}); refused") from None
        if not proven:
            raise HashMismatchError(f"{where}: its content does not hash to the build id it "
                                    "names: edited after it was published; refused")
        with self.stage(kind) as staged:
            for name, info in sorted(files.items()):
                local = staged / name
                local.parent.mkdir(parents=True, exist_ok=True)
                self.fs.get_file(f"{remote_dir}/{name}", str(local))
                try:
                    verify_file(local, info["sha256"])
                except HashMismatchError as err:
                    raise HashMismatchError(f"{self._url(kind, build_dir, name)}: downloaded "
                                            f"bytes do not match its manifest ({err})") from None
            write_json_atomic(staged / MANIFEST, manifest)
            final = self.root / kind / manifest["build_id"][:BUILD_DIR_CHARS]
            if not final.exists():
                os.rename(staged, final)


def open_store(root: str | os.PathLike[str], mirror_url: str = "") -> ArtifactStore:
    """The artifact store at ``root``, mirrored to ``mirror_url`` when one is given: the one way
    every reader and writer opens it (assets, checks, the command line, the ``torchrun``
    worker), so a build published anywhere reaches the mirror."""
    return MirroredStore(root, mirror_url) if mirror_url else ArtifactStore(root)
