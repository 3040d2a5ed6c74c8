"""The artifact store mirrored to an object store, on fsspec's in-memory filesystem."""

from __future__ import annotations

import uuid

import fsspec
import numpy as np
import pytest

from lvm_pipeline.payload.payload import VECTORS, load_payload
from lvm_pipeline.store import kinds
from lvm_pipeline.store.artifacts import BUILD_DIR_CHARS, ArtifactError, HashMismatchError
from lvm_pipeline.store.remote import MirroredStore
from lvm_pipeline_tests.conftest import publish_synthetic_payload


@pytest.fixture
def mirror_url():
    url = f"memory://lvm-test-{uuid.uuid4().hex[:8]}"
    yield url
    fs = fsspec.filesystem("memory")
    if fs.exists(url):
        fs.rm(url, recursive=True)


def test_a_build_published_on_one_machine_is_pulled_and_verified_on_another(tmp_path,
                                                                            mirror_url):
    writer = MirroredStore(tmp_path / "a", mirror_url)
    published = publish_synthetic_payload(writer, [6, 7, 8])
    fs = fsspec.filesystem("memory")
    remote = mirror_url.removeprefix("memory://")
    assert fs.exists(f"{remote}/{kinds.PAYLOAD}/CURRENT")

    reader = MirroredStore(tmp_path / "b", mirror_url)
    assert not (tmp_path / "b" / kinds.PAYLOAD).exists()
    build = reader.current(kinds.PAYLOAD)
    assert build.build_id == published.build_id and build.path.is_relative_to(tmp_path / "b")
    payload = load_payload(build)  # re-hashes the pulled files against the manifest
    np.testing.assert_array_equal(payload.vectors, published.vectors)

    # A newer build from the reader becomes the writer's current on its next look.
    newer = publish_synthetic_payload(reader, [5, 5, 5], seed=3)
    assert writer.current(kinds.PAYLOAD).build_id == newer.build_id


def test_a_build_named_by_id_is_pulled_from_the_mirror(tmp_path, mirror_url):
    """What a run's IO manager asks for: the build id the instance recorded, on a machine that
    has never seen it."""
    published = publish_synthetic_payload(MirroredStore(tmp_path / "a", mirror_url), [6, 7, 8])
    reader = MirroredStore(tmp_path / "b", mirror_url)
    build = reader.get(kinds.PAYLOAD, published.build_id)
    assert build.path.is_relative_to(tmp_path / "b")
    np.testing.assert_array_equal(load_payload(build).vectors, published.vectors)


def test_a_corrupt_object_fails_naming_its_url_and_leaves_nothing(tmp_path, mirror_url):
    published = publish_synthetic_payload(MirroredStore(tmp_path / "a", mirror_url), [6, 7])
    fs = fsspec.filesystem("memory")
    remote_file = f"{mirror_url.removeprefix('memory://')}/{kinds.PAYLOAD}/{published.build_id[:BUILD_DIR_CHARS]}/{VECTORS}"
    fs.pipe_file(remote_file, fs.cat_file(remote_file)[:-8])  # truncated upload

    reader = MirroredStore(tmp_path / "c", mirror_url)
    with pytest.raises(HashMismatchError, match=f"{mirror_url}/{kinds.PAYLOAD}/.*/{VECTORS}: downloaded"):
        reader.current(kinds.PAYLOAD)
    assert not [p for p in (tmp_path / "c" / kinds.PAYLOAD).iterdir() if p.name != "CURRENT"]


def test_a_kind_the_mirror_lacks_is_missing_even_with_a_local_copy(tmp_path, mirror_url):
    from lvm_pipeline.store.artifacts import ArtifactStore

    publish_synthetic_payload(ArtifactStore(tmp_path / "d"), [6, 7])
    with pytest.raises(ArtifactError, match=f"no payload under {mirror_url}"):
        MirroredStore(tmp_path / "d", mirror_url).current(kinds.PAYLOAD)


def test_assets_write_through_the_mirror_when_storage_names_one(tmp_path, mirror_url):
    from lvm_pipeline.defs.io_manager import storage_resources
    from lvm_pipeline.defs.resources import StorageResource
    from lvm_pipeline_tests.conftest import materialize_all

    storage = storage_resources(StorageResource(root=str(tmp_path / "data"), mirror_url=mirror_url))
    result = materialize_all(tmp_path / "data", selection=["corpus"], corpus={"max_chunks": 40},
                             resources=storage)
    assert result.success
    pulled = MirroredStore(tmp_path / "elsewhere", mirror_url).current("corpus")
    assert pulled.build_id == result.asset_materializations_for_node("corpus")[0].metadata[
        "build_id"].value


def test_a_forged_manifest_naming_a_path_outside_its_build_is_refused(tmp_path):
    """Whoever can write to the bucket forges a consistent manifest (its build id recomputed)
    whose file name climbs out of the build folder: the pull refuses it, naming the object,
    before anything is downloaded."""
    import hashlib
    import json

    from lvm_pipeline.store.artifacts import content_id

    mirror = tmp_path / "bucket"
    writer = MirroredStore(tmp_path / "a", f"file://{mirror}")
    published = writer.get(kinds.PAYLOAD, publish_synthetic_payload(writer, [6]).build_id)
    manifest = json.loads((published.path / "manifest.json").read_text())
    evil = b"written outside the data dir"
    manifest["files"]["../../../escaped.txt"] = {"sha256": hashlib.sha256(evil).hexdigest(),
                                                 "bytes": len(evil)}
    manifest["build_id"] = content_id(manifest)
    forged = mirror / kinds.PAYLOAD / manifest["build_id"][:BUILD_DIR_CHARS]
    forged.mkdir()
    for name in published.manifest["files"]:
        (forged / name).write_bytes((published.path / name).read_bytes())
    (forged / "manifest.json").write_text(json.dumps(manifest))
    (tmp_path / "escaped.txt").write_bytes(evil)  # where ../../../ resolves from the object
    (mirror / kinds.PAYLOAD / "CURRENT").write_text(
        json.dumps({"build_id": manifest["build_id"], "dir": forged.name}))

    reader = MirroredStore(tmp_path / "victim" / "data", f"file://{mirror}")
    with pytest.raises(ArtifactError, match=rf"file://{mirror}/payload/{forged.name}/manifest.json: "
                                            r"file name '\.\./\.\./\.\./escaped\.txt' is not a "
                                            "plain relative path"):
        reader.current(kinds.PAYLOAD)
    assert sorted(p.name for p in tmp_path.rglob("escaped.txt")) == ["escaped.txt"]  # the bait
    assert not (tmp_path / "victim" / "escaped.txt").exists()
