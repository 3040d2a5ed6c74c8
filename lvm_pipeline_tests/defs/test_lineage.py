"""Lineage through Dagster: every input is the build the instance recorded (this run's, or the
latest when the upstream is not in the run), data versions are build ids, and two overlapping
runs never mix their builds."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
from pathlib import Path

import dagster as dg
import pytest

from lvm_pipeline.definitions import defs
from lvm_pipeline.defs.io_manager import materialization_in_run
from lvm_pipeline.defs.resources import storage_from_environment
from lvm_pipeline.models import VARIANTS
from lvm_pipeline.store.artifacts import ArtifactStore, Build
from lvm_pipeline.store.lineage import LineageError, report_lineage
from lvm_pipeline_tests import race
from lvm_pipeline_tests.conftest import (
    instance_at,
    materialize_all,
    materialized_metadata,
    metadata_values,
    small_config,
    step_errors,
)

pytestmark = pytest.mark.slow

CORPUS_DOWN = dg.AssetSelection.assets("corpus").downstream()


def _build(kind: str, build_id: str, payload: str, upstream: dict | None = None) -> Build:
    return Build(kind, Path("/nowhere") / kind, {"build_id": build_id, "kind": kind,
                                                "payload_build_id": payload,
                                                "upstream": upstream or {}})


def test_report_lineage_refuses_mixed_payloads_and_training_sets_naming_both_builds():
    index, eval_set = _build("index", "i" * 64, "p" * 64), _build("sequences/eval", "e" * 64, "p" * 64)
    train = _build("sequences/train", "t" * 64, "p" * 64)
    good = _build("models/mamba_s", "m" * 64, "p" * 64, {"sequences/train": "t" * 64})
    lineage = report_lineage(index, eval_set, train, {"mamba_s": good})
    assert lineage == {"payload": "p" * 64, "index": "i" * 64, "sequences/eval": "e" * 64,
                       "sequences/train": "t" * 64, "models": {"mamba_s": "m" * 64}}
    other_set = _build("models/mamba_h", "h" * 64, "p" * 64, {"sequences/train": "u" * 64})
    with pytest.raises(LineageError, match="mamba_h hhhhhhhhhhhh was trained on sequences/train "
                                           "uuuuuuuuuuuu, the baselines on tttttttttttt"):
        report_lineage(index, eval_set, train, {"mamba_s": good, "mamba_h": other_set})
    other_payload = _build("models/mamba_xl", "x" * 64, "q" * 64, {"sequences/train": "t" * 64})
    with pytest.raises(LineageError, match="mamba_xl xxxxxxxxxxxx was trained over payload "
                                           "qqqqqqqqqqqq, the index iiiiiiiiiiii holds payload "
                                           "pppppppppppp"):
        report_lineage(index, eval_set, train, {"mamba_xl": other_payload})
    with pytest.raises(LineageError, match="sequences/eval eeeeeeeeeeee indexes payload "
                                           "qqqqqqqqqqqq"):
        report_lineage(index, _build("sequences/eval", "e" * 64, "q" * 64), train, {})


def test_the_definitions_read_the_data_dir_as_an_env_var_resolved_per_run(tmp_path, monkeypatch):
    """The UI's definitions take the data dir from ``LVM_DATA_DIR`` as a Dagster ``EnvVar``:
    resolved when a run starts, so a changed value needs no reload and nothing is read at
    import."""
    monkeypatch.setenv("LVM_DATA_DIR", str(tmp_path / "one"))
    storage = storage_from_environment()
    monkeypatch.setenv("LVM_DATA_DIR", str(tmp_path / "two"))
    assert storage.process_config_and_initialize().store().root == (tmp_path / "two").resolve()


def test_rebuilding_identical_content_keeps_the_data_version(small_run_copy):
    """Same corpus config → same bytes → same build id → same DataVersion, so Dagster sees
    nothing downstream as changed."""
    with instance_at(small_run_copy) as instance:
        before = instance.get_latest_materialization_event(dg.AssetKey("corpus"))
        payload = instance.get_latest_materialization_event(dg.AssetKey("payload"))
    again = materialize_all(small_run_copy, selection=["corpus"])
    assert again.success
    [event] = again.get_asset_materialization_events()
    version = before.asset_materialization.tags["dagster/data_version"]
    assert event.materialization.tags["dagster/data_version"] == version
    # The payload recorded that corpus version as its input: it is not stale.
    assert payload.asset_materialization.tags["dagster/input_data_version/corpus"] == version


def test_a_report_over_inputs_of_two_payloads_is_refused_naming_both(small_run_copy):
    """The eval set and index rebuilt over a new payload, the checkpoints still over the old
    one: the report alone (its inputs resolved from the instance) refuses to mix them."""
    store = ArtifactStore(small_run_copy)
    old_payload = store.current("payload").build_id
    rebuilt = materialize_all(small_run_copy, corpus={"max_chunks": 300},
                              selection=["corpus", "payload", "aligned_eval", "faiss_index"])
    assert rebuilt.success, step_errors(rebuilt)
    new_payload = materialized_metadata(rebuilt)["payload"]["build_id"]
    assert new_payload != old_payload
    report = materialize_all(small_run_copy, selection=["retrieval_report"])
    error = step_errors(report)["retrieval_report"]
    assert "the report's inputs disagree" in error
    assert f"was trained over payload {old_payload[:12]}" in error
    assert f"holds payload {new_payload[:12]}" in error


def _assert_run_used_its_own_builds(built: dict[str, dict], store: ArtifactStore,
                                    payload_id: str) -> None:
    """Every model of the run (``built``: asset → metadata of the run's materializations)
    trained on the run's sequences, and its report scored exactly the run's checkpoints, its
    sequences, and builds over one payload."""
    sequences = built["aligned_training_sequences"]["build_id"]
    assert built["aligned_training_sequences"]["payload_build_id"] == payload_id
    for variant in VARIANTS:
        checkpoint = store.get(f"models/{variant}", built[variant]["build_id"])
        assert built[variant]["sequences_build_id"] == sequences, variant
        assert checkpoint.manifest["upstream"]["sequences/train"] == sequences, variant
    report = json.loads(store.get("report", built["retrieval_report"]["build_id"])
                        .file("report.json").read_text())
    assert report["lineage"]["models"] == {v: built[v]["build_id"] for v in VARIANTS}
    assert report["lineage"]["sequences/train"] == sequences
    assert report["lineage"]["payload"] == payload_id


def test_two_overlapping_runs_each_finish_with_their_own_builds(small_run_copy, tmp_path):
    """Two overlapping runs, interleaved deterministically (lvm_pipeline_tests/race.py): run A
    rebuilds from a new corpus, run B rebuilds the training sequences and their models while A
    publishes its payload, sequences and models. Each run is its own process, like two `lvm`
    commands (lvm_pipeline_tests/race_run.py)."""
    from lvm_pipeline.cli.runner import PROJECT_ROOT

    data_dir, barriers = small_run_copy, tmp_path / "barriers"
    barriers.mkdir()
    store = ArtifactStore(data_dir)
    old_payload = store.current("payload").build_id
    corpus = race.write_text_corpus(tmp_path / "articles")
    env = {**os.environ, "PYTHONPATH": str(PROJECT_ROOT)}
    env.pop("LVM_DATA_DIR", None)
    runs = {}
    with contextlib.ExitStack() as logs:
        for role, extra in (("A", [str(corpus)]), ("B", [])):
            log = logs.enter_context(open(tmp_path / f"run_{role}.log", "wb"))
            runs[role] = subprocess.Popen(
                [sys.executable, "-m", "lvm_pipeline_tests.race_run", role, str(data_dir),
                 str(barriers), str(tmp_path / f"run_{role}.json"), *extra],
                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env)
        for process in runs.values():
            process.wait(timeout=900)
    results = {}
    for role in runs:
        tail = (tmp_path / f"run_{role}.log").read_text(errors="replace")[-3000:]
        assert (tmp_path / f"run_{role}.json").exists(), tail
        results[role] = json.loads((tmp_path / f"run_{role}.json").read_text())
        assert results[role]["success"], (results[role]["errors"], tail)

    built = {role: results[role]["built"] for role in runs}
    new_payload = built["A"]["payload"]["build_id"]
    assert new_payload != old_payload
    # B resolved the payload when its step started (the old one), though A published the new
    # one while the step ran; its models, report and lineage name only B's builds.
    _assert_run_used_its_own_builds(built["B"], store, old_payload)
    _assert_run_used_its_own_builds(built["A"], store, new_payload)
    assert (built["A"]["aligned_training_sequences"]["build_id"]
            != built["B"]["aligned_training_sequences"]["build_id"])


def _run_materializations(instance: dg.DagsterInstance, run_id: str) -> dict[str, dict]:
    """What run ``run_id`` materialized, read back from the instance: asset → metadata."""
    entries = {key: materialization_in_run(instance, key, run_id)
               for key in instance.get_asset_keys()}
    return {key.to_user_string(): metadata_values(entry.asset_materialization)
            for key, entry in entries.items() if entry is not None}


def test_a_webserver_run_racing_an_lvm_run_each_use_their_own_builds(small_run_copy, tmp_path,
                                                                     monkeypatch):
    """The same race with run A launched through the webserver's GraphQL API (its own run
    worker process, file barriers: lvm_pipeline_tests/race_location.py) and run B an
    `lvm materialize` in this process."""
    from lvm_pipeline.cli import main
    from lvm_pipeline.cli.runner import PROJECT_ROOT
    from lvm_pipeline_tests.webserver import free_port, launch, serving, wait_for_run

    data_dir, barriers = small_run_copy, tmp_path / "barriers"
    barriers.mkdir()
    home = data_dir / "dagster_home"
    store = ArtifactStore(data_dir)
    old_payload = store.current("payload").build_id
    corpus = race.write_text_corpus(tmp_path / "articles")
    port, workspace = free_port(), tmp_path / "workspace.yaml"
    workspace.write_text(f"load_from:\n  - python_module:\n      module_name: "
                         f"lvm_pipeline_tests.race_location\n      location_name: lvm_pipeline\n"
                         f"      working_directory: {PROJECT_ROOT}\n")
    # The webserver's instance and data dir are the ones `lvm materialize` below uses by
    # default for this data dir (<data dir>/dagster_home).
    env = {**os.environ, "LVM_RACE_DIR": str(barriers), "PYTHONPATH": str(PROJECT_ROOT),
           "DAGSTER_HOME": str(home), "LVM_DATA_DIR": str(data_dir)}
    # `dg dev`: the webserver and the daemon, whose run queue starts what GraphQL launches.
    command = [str(Path(sys.executable).with_name("dg")), "dev", "-w", str(workspace),
               "-h", "127.0.0.1", "-p", str(port)]
    with serving(command, env, tmp_path / "webserver.log", port, cwd=PROJECT_ROOT
                 ) as (server, location):
        graph = defs().resolve_asset_graph()  # less the promotion records, which no run makes
        assets = [k.to_user_string() for k in CORPUS_DOWN.resolve(graph)
                  if k in graph.materializable_asset_keys]
        config = small_config({"source": "text_dir", "path": str(corpus)},
                              {"epochs": 1, "batch_size": 32})
        config = {**config.to_config_dict(), "execution": {"config": {"in_process": {}}}}
        run_a = launch(server, location, assets, config)
        race.install(monkeypatch.setattr, lambda: "B", race.FileBarriers(barriers))
        # --rebuild: the small run made B's sequences recipe, and a reused step builds no
        # windows, where B waits for A's payload.
        code_b = main(["materialize", "aligned_training_sequences*", "--epochs", "1",
                       "--rebuild", "--data-dir", str(data_dir)])
        status_a = wait_for_run(server, run_a, timeout_s=600)
        assert status_a == "SUCCESS", f"run {run_a} ended {status_a}:\n{server.tail()}"
    assert code_b == 0
    with dg.DagsterInstance.from_config(str(home)) as instance:
        [run_b] = [r.run_id for r in instance.get_runs()
                   if r.tags.get("lvm/selection") == "aligned_training_sequences*"]
        built_a, built_b = (_run_materializations(instance, r) for r in (run_a, run_b))
    new_payload = built_a["payload"]["build_id"]
    assert new_payload != old_payload
    _assert_run_used_its_own_builds(built_b, store, old_payload)
    _assert_run_used_its_own_builds(built_a, store, new_payload)
