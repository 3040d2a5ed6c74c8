"""The artifact store: atomic publish, content addressing, hash-verified loads."""

from __future__ import annotations

import json
import os
import subprocess

import pytest

from lvm_pipeline.store.artifacts import (
    CURRENT,
    MANIFEST,
    QUARANTINE,
    ArtifactError,
    ArtifactStore,
    HashMismatchError,
    restore_hint,
    sha256_file,
    verify_store,
)


def _publish(store: ArtifactStore, payload: bytes, upstream=None):
    with store.stage("thing") as staged:
        (staged / "a.bin").write_bytes(payload)
        (staged / "sub").mkdir()
        (staged / "sub" / "b.txt").write_text("b")
        return store.publish("thing", staged, {"note": "x"}, upstream)


def test_publish_writes_a_hashed_build_and_leaves_current_to_set_current(store):
    build = _publish(store, b"hello")
    # Publishing never moves CURRENT: only a step that succeeded does (the IO manager).
    assert not store.has_current("thing")
    store.set_current(build)
    assert store.current("thing").build_id == build.build_id
    assert set(build.manifest["files"]) == {"a.bin", "sub/b.txt"}
    assert build.manifest["code_version"].startswith("0.1.0+")
    assert build.verify() == ["a.bin", "sub/b.txt"]
    # No staging folder is left behind.
    assert [p.name for p in (store.root / "thing").iterdir() if p.name.startswith(".")] == []


def test_same_content_is_the_same_build_and_other_upstream_is_not(store):
    first = _publish(store, b"hello")
    assert _publish(store, b"hello").build_id == first.build_id
    assert _publish(store, b"hello", {"payload": "p2"}).build_id != first.build_id


def test_new_build_leaves_the_previous_one_intact(store):
    old = _publish(store, b"old")
    store.set_current(old)
    new = _publish(store, b"new")
    assert store.current("thing").build_id == old.build_id
    store.set_current(new)
    assert store.current("thing").build_id == new.build_id
    assert (old.path / "a.bin").read_bytes() == b"old"
    old.verify()


@pytest.mark.parametrize("damage", ["truncate", "edit", "delete"])
def test_damaged_file_fails_loading_and_names_the_file(store, damage):
    build = _publish(store, b"0123456789")
    target = build.path / "a.bin"
    if damage == "truncate":
        target.write_bytes(b"01234")
    elif damage == "edit":
        target.write_bytes(b"0123456780")
    else:
        target.unlink()
    with pytest.raises(HashMismatchError, match=r"a\.bin"):
        store.get("thing", build.build_id).file("a.bin")


def test_failure_while_staging_publishes_nothing(store):
    with pytest.raises(RuntimeError), store.stage("thing") as staged:
        (staged / "a.bin").write_bytes(b"half")
        raise RuntimeError("crash mid-write")
    assert not store.has_current("thing")
    assert list((store.root / "thing").iterdir()) == []


def test_missing_artifact_says_how_to_build_it(store):
    with pytest.raises(ArtifactError, match=r"no payload under .*lvm run"):
        store.current("payload")


@pytest.mark.skipif(os.geteuid() == 0, reason="root can write to read-only folders")
def test_unwritable_data_dir_is_named(tmp_path):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    with pytest.raises(ArtifactError, match=f"data dir {locked} is not writable"):
        ArtifactStore(locked).ensure_writable()


def test_data_dir_under_a_file_is_not_writable(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with pytest.raises(ArtifactError, match="is not writable"):
        ArtifactStore(blocker / "data").ensure_writable()


# ------------------------------------------------------------ build ids prove content


def test_a_file_edited_with_its_hash_updated_is_refused_by_the_build_id(store):
    """Whoever edits a file and its sha256 in the manifest still cannot keep the build id."""
    build = _publish(store, b"0123456789")
    (build.path / "a.bin").write_bytes(b"forged")
    manifest = json.loads((build.path / MANIFEST).read_text())
    manifest["files"]["a.bin"] = {"sha256": sha256_file(build.path / "a.bin"), "bytes": 6}
    (build.path / MANIFEST).write_text(json.dumps(manifest))
    with pytest.raises(HashMismatchError, match="edited after the build was published"):
        store.get("thing", build.build_id).verify()


def test_a_content_field_edited_in_the_manifest_is_refused(store):
    build = _publish(store, b"0123456789")
    manifest = json.loads((build.path / MANIFEST).read_text())
    manifest["note"] = "y"
    (build.path / MANIFEST).write_text(json.dumps(manifest))
    with pytest.raises(HashMismatchError, match=f"{MANIFEST}: the manifest's content hashes"):
        store.get("thing", build.build_id).verify()


def test_the_same_content_made_at_another_time_is_the_same_build(store):
    first = _publish(store, b"hello")
    with store.stage("thing") as staged:
        (staged / "a.bin").write_bytes(b"hello")
        (staged / "sub").mkdir()
        (staged / "sub" / "b.txt").write_text("b")
        again = store.publish("thing", staged, {"note": "x"}, run={"seconds": 3.5})
    assert again.build_id == first.build_id


# ------------------------------------------------------------ damaged builds heal


def _damage(build, how: str) -> None:
    if how == "flipped byte":
        raw = bytearray((build.path / "a.bin").read_bytes())
        raw[-1] ^= 1
        (build.path / "a.bin").write_bytes(bytes(raw))
    else:
        (build.path / MANIFEST).write_text("{not json")


@pytest.mark.parametrize("how", ["flipped byte", "invalid manifest"])
def test_a_rebuild_replaces_a_damaged_build_and_keeps_it_aside(store, how):
    build = _publish(store, b"0123456789")
    _damage(build, how)
    rebuilt = _publish(store, b"0123456789")
    assert rebuilt.build_id == build.build_id
    assert rebuilt.verify() == ["a.bin", "sub/b.txt"]
    (aside,) = (store.root / "thing" / QUARANTINE).iterdir()
    note = json.loads((aside / "QUARANTINED.json").read_text())
    assert note["from"] == str(build.path) and note["reason"]


def test_verify_quarantines_failing_builds_and_pointers_and_says_how_to_restore(store):
    sound = _publish(store, b"sound")
    damaged = _publish(store, b"0123456789")
    _damage(damaged, "flipped byte")
    store.set_current(sound)
    (store.root / "thing" / CURRENT).write_text("{}")
    outcomes = {o.folder: o for o in verify_store(store)}
    assert outcomes[sound.path].error is None and outcomes[sound.path].quarantined is None
    assert "sha256 mismatch" in outcomes[damaged.path].error
    assert "names no build" in outcomes[store.root / "thing" / CURRENT].error
    assert not damaged.path.exists() and not (store.root / "thing" / CURRENT).exists()
    for path in (damaged.path, store.root / "thing" / CURRENT):
        hint = restore_hint(outcomes[path].quarantined)
        assert hint.startswith("mv ") and hint.endswith(f" {path}")
        subprocess.run(hint.split(), check=True)  # the hint restores exactly what was moved
    assert (damaged.path / "a.bin").exists() and (store.root / "thing" / CURRENT).exists()
    assert [o.folder for o in verify_store(store, quarantine=False) if o.error] == [
        store.root / "thing" / CURRENT, damaged.path]


def test_a_manifest_that_lost_a_field_is_refused_when_its_build_is_looked_up(store):
    """Before any file is read: otherwise a reader fails later on a bare KeyError that names
    neither the manifest nor the build."""
    build = _publish(store, b"hello")
    manifest = dict(build.manifest)
    del manifest["note"]
    (build.path / MANIFEST).write_text(json.dumps(manifest))
    with pytest.raises(HashMismatchError, match=rf"{build.path}/{MANIFEST}: the manifest's "
                                                "content hashes to .* edited after"):
        store.get("thing", build.build_id)
