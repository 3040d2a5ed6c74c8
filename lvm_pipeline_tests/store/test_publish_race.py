"""Two publishes of one build at once (two runs of one recipe): the later move into place finds
the earlier build there and keeps it. The same race across two `lvm` processes:
lvm_pipeline_tests/defs/test_reuse.py."""

from __future__ import annotations

from pathlib import Path

from lvm_pipeline.store.artifacts import ArtifactStore, Build, recipe_key

RECIPE = {"asset": "thing", "code_version": "0.1.0+x", "config": {}, "inputs": {}}


def _publish(store: ArtifactStore) -> Build:
    with store.stage("thing") as staged:
        (staged / "a.bin").write_bytes(b"the same bytes in both runs")
        return store.publish("thing", staged, {"note": "x"}, recipe=RECIPE)


def test_a_build_published_between_the_look_and_the_move_is_kept(store, monkeypatch):
    sound = ArtifactStore._sound
    theirs: list[Build] = []

    def the_other_run_moves_in_after_we_looked(self: ArtifactStore, kind: str, folder: Path,
                                               build_id: str) -> Build | None:
        found = sound(self, kind, folder, build_id)
        if not theirs:  # our look found nothing; the other run now publishes the same build
            assert found is None
            monkeypatch.setattr(ArtifactStore, "_sound", sound)
            theirs.append(_publish(store))
            monkeypatch.setattr(ArtifactStore, "_sound", the_other_run_moves_in_after_we_looked)
        return found

    monkeypatch.setattr(ArtifactStore, "_sound", the_other_run_moves_in_after_we_looked)
    ours = _publish(store)
    assert ours.build_id == theirs[0].build_id and ours.path == theirs[0].path
    assert ours.manifest == theirs[0].manifest  # theirs, untouched
    # One build folder (no staging left over) and the recipe's entry.
    assert sorted(p.name for p in (store.root / "thing").iterdir()) == sorted(
        [ours.path.name, "recipes"])
    assert store.build_for_recipe("thing", recipe_key(RECIPE)).build_id == ours.build_id
