"""The `lvm` command: exit codes, one-line errors, and a real small `lvm run`."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from lvm_pipeline.cli import EXIT_FAILED, EXIT_OK, EXIT_USAGE, main


def test_usage_errors_exit_2(capsys):
    assert main(["run", "--preset", "huge"]) == EXIT_USAGE
    assert "invalid choice: 'huge'" in capsys.readouterr().err
    assert main([]) == EXIT_USAGE


@pytest.mark.parametrize("epochs", ["0", "-3"])
def test_epochs_below_one_is_a_usage_error_before_anything_runs(tmp_path, capsys, epochs):
    for command in ("run", "materialize mamba_s"):
        argv = [*command.split(), "--epochs", epochs, "--data-dir", str(tmp_path / "data")]
        assert main(argv) == EXIT_USAGE
        assert f"argument --epochs: must be >= 1, got {int(epochs)}" in capsys.readouterr().err
    assert not (tmp_path / "data").exists()  # refused before the data dir was touched


def test_help_explains_each_command(capsys):
    assert main(["run", "--help"]) == EXIT_OK
    out = capsys.readouterr().out
    assert "--data-dir" in out and "LVM_DATA_DIR" in out and "--max-chunks" in out
    assert "exit codes: 0 success, 1" in out
    assert main(["materialize", "--help"]) == EXIT_OK
    out = capsys.readouterr().out
    assert "SELECTION" in out and "payload+" in out and "--epochs" in out
    assert main(["ui", "--help"]) == EXIT_OK
    out = capsys.readouterr().out
    assert "--port" in out and "127.0.0.1" in out and "DAGSTER_HOME" in out
    assert main(["--help"]) == EXIT_OK
    out = capsys.readouterr().out
    assert all(command in out for command in ("run", "materialize", "report", "ui"))


def test_materialize_unknown_asset_is_a_usage_error_listing_assets(tmp_path, capsys):
    assert main(["materialize", "mamba_q", "--data-dir", str(tmp_path)]) == EXIT_USAGE
    [line] = capsys.readouterr().err.strip().splitlines()
    assert "cannot select 'mamba_q'" in line and "mamba_s" in line and "payload" in line


def test_materialize_option_for_an_unselected_asset_is_a_usage_error(tmp_path, capsys):
    assert main(["materialize", "faiss_index", "--epochs", "3",
                 "--data-dir", str(tmp_path)]) == EXIT_USAGE
    assert "configure the models, which 'faiss_index' does not include" in (
        capsys.readouterr().err)


def test_materialize_failed_step_exit_1_with_reason_and_run_to_open(tmp_path, capsys):
    # No payload was ever built: the index step fails and says so.
    assert main(["materialize", "faiss_index", "--data-dir", str(tmp_path)]) == EXIT_FAILED
    err = capsys.readouterr().err
    assert "✗ faiss_index failed:" in err and "step faiss_index failed:" in err
    assert "payload" in err.split("step faiss_index failed:")[1].splitlines()[0]
    assert "Details: `lvm ui --data-dir" in err and "Runs →" in err


def test_materialize_selection_runs_its_checks_and_prints_builds(small_run_copy, capsys):
    assert main(["materialize", "aligned_eval", "--data-dir", str(small_run_copy)]) == EXIT_OK
    out = capsys.readouterr()
    assert "✓ check check_eval_sequences_aligned on aligned_eval passed" in out.err
    [line] = out.out.strip().splitlines()
    name, build, path = line.split("\t")
    assert name == "aligned_eval" and (small_run_copy / "sequences" / "eval").samefile(
        f"{path}/..") and path.endswith(build[:12] + path[-4:])


def test_ui_refuses_a_busy_port_in_one_line(tmp_path, capsys):
    import socket

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        assert main(["ui", "--data-dir", str(tmp_path), "--port", str(port)]) == EXIT_FAILED
    [line] = capsys.readouterr().err.strip().splitlines()
    assert f"port {port} on 127.0.0.1 is already in use" in line
    assert f"see `lvm ui --port {port + 1}`" in line


def test_ui_runs_dg_dev_on_the_workspace():
    import sys

    from lvm_pipeline.cli.runner import PROJECT_ROOT
    from lvm_pipeline.cli.ui import dagster_dev_command

    command = dagster_dev_command("127.0.0.1", 3999)
    assert command[:2] == [str(Path(sys.executable).with_name("dg")), "dev"]
    assert command[2:4] == ["-w", str(PROJECT_ROOT / "workspace.yaml")]
    assert command[-4:] == ["-h", "127.0.0.1", "-p", "3999"]


def test_unwritable_data_dir_is_one_line_and_exit_1(tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    assert main(["run", "--data-dir", str(blocker / "data")]) == EXIT_FAILED
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "is not writable" in err[0]


def test_report_without_a_run_says_what_to_do(tmp_path, capsys):
    assert main(["report", "--data-dir", str(tmp_path)]) == EXIT_FAILED
    assert "no report under" in capsys.readouterr().err


def test_report_refuses_a_report_whose_checkpoint_was_truncated(tmp_path, capsys):
    """The report is printed only about checkpoints that still hash as they did when scored."""
    from lvm_pipeline.store import ArtifactStore, kinds

    store = ArtifactStore(tmp_path / "data")
    with store.stage(kinds.checkpoint("mamba_s")) as staged:
        (staged / "model.safetensors").write_bytes(b"weights" * 100)
        checkpoint = store.publish(kinds.checkpoint("mamba_s"), staged, {})
    store.set_current(checkpoint)
    with store.stage(kinds.REPORT) as staged:
        (staged / "report.json").write_text("{}")
        report = store.publish(kinds.REPORT, staged, {},
                               upstream={kinds.checkpoint("mamba_s"): checkpoint.build_id})
    store.set_current(report)
    weights = checkpoint.path / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])
    assert main(["report", "--data-dir", str(tmp_path / "data")]) == EXIT_FAILED
    [line] = capsys.readouterr().err.splitlines()
    assert line.startswith(f"lvm report: report {report.build_id[:12]} scored models/mamba_s "
                           f"{checkpoint.build_id[:12]}, which no longer verifies: {weights}: "
                           "sha256 mismatch, file was truncated")


# --------------------------------------------------------------------------- guard commands


def test_guard_commands_explain_themselves(capsys):
    for command in ("check", "verify", "import-training", "export-training", "import-payload"):
        assert main([command, "--help"]) == EXIT_OK
        assert "--data-dir" in capsys.readouterr().out
    main(["import-payload", "--help"])
    assert "--allow-pickle" in capsys.readouterr().out


def test_check_and_verify_on_an_empty_data_dir_say_what_to_do(tmp_path, capsys):
    assert main(["check", "--data-dir", str(tmp_path)]) == EXIT_FAILED
    assert "no checked artifacts under" in capsys.readouterr().err
    assert main(["verify", "--data-dir", str(tmp_path)]) == EXIT_FAILED
    assert "no artifacts under" in capsys.readouterr().err


def test_check_and_verify_pass_on_a_copy_of_the_default_run(small_run_copy, capsys):
    from lvm_pipeline_tests.defs.test_pipeline import CHECKS

    assert main(["check", "--data-dir", str(small_run_copy)]) == EXIT_OK
    out = capsys.readouterr().out
    assert out.splitlines()[2].split() == ["check", "asset", "status", "measure", "value",
                                           "threshold"]
    for name in CHECKS:
        check, asset = name.split("@")
        assert any(line.split()[:3] == [check, asset, "pass"] for line in out.splitlines()), name
    assert (small_run_copy / "dagster_home" / "dagster.yaml").exists()  # recorded for the UI
    assert main(["verify", "--data-dir", str(small_run_copy)]) == EXIT_OK
    out = capsys.readouterr().out
    # corpus, payload, 2 sequences, index, 5 checkpoints, the trained baselines, the report
    assert "12 of 12 builds match their manifests" in out and "ok      payload/" in out


def test_verify_quarantines_a_damaged_build_and_the_next_run_builds_it_anew(small_run_copy,
                                                                             capsys):
    from lvm_pipeline_tests.conftest import materialize_all, materialized

    (vectors,) = small_run_copy.glob("payload/*/vectors.npy")
    raw = bytearray(vectors.read_bytes())
    raw[-1] ^= 1
    vectors.write_bytes(bytes(raw))
    assert main(["verify", "--data-dir", str(small_run_copy)]) == EXIT_FAILED
    err = capsys.readouterr().err
    build = vectors.parent.relative_to(small_run_copy)
    assert f"FAILED  {build} (current): {vectors}: sha256 mismatch" in err
    assert f"quarantined to payload/.quarantine/{build.name}-" in err
    assert f" {vectors.parent})" in err  # the restore command: mv <quarantined> <build folder>
    assert "The next `lvm run` (or `lvm materialize <asset>`) builds each quarantined" in err
    assert not vectors.exists()

    assert materialized(materialize_all(small_run_copy, selection=["payload"])) == {"payload"}
    assert vectors.exists()  # the same content, so the same build id and folder
    assert main(["verify", "--data-dir", str(small_run_copy)]) == EXIT_OK


def test_exported_training_set_imports_back_at_cosine_one(small_run_copy, tmp_path, capsys):
    import numpy as np

    from lvm_pipeline.store.artifacts import ArtifactStore

    npz = tmp_path / "ours.npz"
    assert main(["export-training", str(npz), "--data-dir", str(small_run_copy)]) == EXIT_OK
    assert "with truth_keys and provenance" in capsys.readouterr().out
    store = ArtifactStore(small_run_copy)
    native = store.current("sequences/train")
    with np.load(npz, allow_pickle=False) as data:
        provenance = json.loads(str(data["provenance"]))
        assert data["truth_keys"].shape == (len(data["target_vectors"]), 2)
    assert provenance["payload_build_id"] == store.current("payload").build_id
    assert provenance["sequences_build_id"] == native.build_id
    assert main(["import-training", str(npz), "--data-dir", str(small_run_copy)]) == EXIT_OK
    out = capsys.readouterr().out
    line = next(x for x in out.splitlines() if x.startswith("check_training_sequences_aligned"))
    assert line.split()[2:5] == ["pass", "min_cosine_to_payload", "1"]
    imported = store.current("sequences/train")
    assert imported.build_id != native.build_id
    assert imported.manifest["source"]["kind"] == "imported npz"
    assert imported.manifest["alignment"]["target_cos_min"] > 0.9999
    assert imported.manifest["alignment"]["context_cos_min"] > 0.9999


def _run_config(argv: list[str], ops=None) -> dict:
    """The run config the options give, as the config dict Dagster records for the run."""
    import argparse

    from lvm_pipeline.cli.common import add_run_options, run_config_from_args

    parser = argparse.ArgumentParser()
    add_run_options(parser)
    return run_config_from_args(parser.parse_args(argv), ops=ops,
                                selection_label="'x'").to_config_dict()


def test_corpus_limits_and_device_options_configure_their_assets():
    import dagster as dg

    from lvm_pipeline.definitions import defs

    config = _run_config(["--corpus", "notes", "--corpus-source", "text_dir",
                          "--max-chunks", "0", "--max-chunks-per-article", "100",
                          "--device", "cpu"])
    assert config["ops"]["corpus"]["config"].items() >= {
        "source": "text_dir", "path": str(Path("notes").resolve()), "max_chunks": 0,
        "max_chunks_per_article": 100}.items()
    # --device moves the embedder (payload, the canary) and the five trainings together.
    assert config["resources"]["embedder"]["config"]["device"] == "cpu"
    assert config["ops"]["mamba_gr"]["config"]["device"] == "cpu"
    dg.validate_run_config(defs().resolve_job_def("full_retrain"), config)
    # Nothing asked, nothing set: each source keeps its own defaults (the sample's limits).
    assert _run_config([])["ops"] == {} and _run_config([])["resources"] == {}
    # A payload-only selection takes --device for its embedder alone.
    config = _run_config(["--device", "cpu"], ops=["payload"])
    assert config["ops"] == {} and config["resources"]["embedder"]["config"]["device"] == "cpu"


@pytest.mark.parametrize(("argv", "ops", "message"), [
    (["--max-chunks-per-article", "-1"], None, "--max-chunks-per-article must be >= 0"),
    (["--max-chunks-per-article", "5"], ["payload"], "configure `corpus`, which 'x' does not"),
    (["--device", "cpu"], ["faiss_index"], "--device configures the embedder"),
])
def test_bad_corpus_or_device_options_are_usage_errors(argv, ops, message):
    from lvm_pipeline.cli.common import UsageError

    with pytest.raises(UsageError, match=message):
        _run_config(argv, ops)


# --------------------------------------------------------------------------- one-line failures


def test_an_unexpected_error_is_one_line_and_debug_shows_its_traceback(tmp_path, monkeypatch,
                                                                        capsys):
    import lvm_pipeline.store

    def broken(*args, **kwargs):
        raise RuntimeError("the verifier broke")

    monkeypatch.setattr(lvm_pipeline.store, "verify_store", broken)
    assert main(["verify", "--data-dir", str(tmp_path)]) == EXIT_FAILED
    assert capsys.readouterr().err.splitlines() == [
        "lvm verify: RuntimeError: the verifier broke (run with --debug for the traceback)"]
    for argv in (["--debug", "verify"], ["verify", "--debug"]):
        with pytest.raises(RuntimeError, match="the verifier broke"):
            main([*argv, "--data-dir", str(tmp_path)])


def test_a_full_disk_is_one_line_naming_the_file_it_could_not_write(tmp_path, monkeypatch,
                                                                     capsys):
    import errno
    import os

    import lvm_pipeline.store

    target = tmp_path / "payload" / "vectors.npy"

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(target))

    monkeypatch.setattr(lvm_pipeline.store, "verify_store", full)
    assert main(["verify", "--data-dir", str(tmp_path)]) == EXIT_FAILED
    assert capsys.readouterr().err.splitlines() == [
        f"lvm verify: no space left on device writing {target} "
        "(run with --debug for the traceback)"]


def test_a_failed_instance_database_write_is_one_line_naming_the_instance(tmp_path, monkeypatch,
                                                                          capsys):
    import sqlite3

    import sqlalchemy.exc

    import lvm_pipeline.cli.runner

    def disk_io_error(*args, **kwargs):
        raise sqlalchemy.exc.OperationalError("INSERT INTO event_logs …", {},
                                              sqlite3.OperationalError("disk I/O error"))

    monkeypatch.setattr(lvm_pipeline.cli.runner, "execute", disk_io_error)
    data = tmp_path / "data"
    assert main(["materialize", "corpus", "--data-dir", str(data)]) == EXIT_FAILED
    last = capsys.readouterr().err.splitlines()[-1]
    assert last == (f"lvm materialize: the Dagster instance database {data / 'dagster_home'} "
                    "could not be written: disk I/O error (is the disk full?) "
                    "(run with --debug for the traceback)")


def _payload_in_instance(data_dir: Path):
    """A synthetic payload published into ``data_dir`` and recorded in its instance, as a run
    would have left it."""
    from lvm_pipeline.store import ArtifactStore
    from lvm_pipeline_tests.conftest import instance_at, publish_synthetic_payload, record_build

    store = ArtifactStore(data_dir)
    publish_synthetic_payload(store, [5] * 8)
    build = store.current("payload")
    with instance_at(data_dir) as instance:
        record_build(instance, "payload", build)
    return build


@pytest.mark.parametrize("manifest", ["{not json", '{"kind": "payload"}'])
def test_check_on_a_broken_manifest_fails_each_check_in_one_line(tmp_path, manifest, capsys):
    """A manifest that is not JSON, or lacks its fields, fails every check on its asset with
    the manifest's path and what is wrong with it: no stack trace unless --debug."""
    data = tmp_path / "data"
    path = _payload_in_instance(data).path / "manifest.json"
    path.write_text(manifest)
    assert main(["check", "--data-dir", str(data)]) == EXIT_FAILED
    out = capsys.readouterr()
    for check in ("check_payload_integrity", "check_payload_embedder_canary"):
        assert any(line.split()[:3] == [check, "payload", "FAIL"] for line in out.out.splitlines())
    reasons = [line for line in out.err.splitlines() if line]
    assert len(reasons) == 2 and "Stack Trace" not in out.err and "Traceback" not in out.err
    for line in reasons:
        assert line.startswith("check_payload_") and f"FAIL: INPUT REFUSED: {path}: " in line
    assert main(["check", "--debug", "--data-dir", str(data)]) == EXIT_FAILED
    assert "Stack Trace" in capsys.readouterr().err


@pytest.mark.parametrize("mirrored", [False, True])
def test_verify_reports_a_current_that_names_no_build_as_failed(tmp_path, monkeypatch, capsys,
                                                                mirrored):
    import fsspec

    from lvm_pipeline.store import open_store
    from lvm_pipeline_tests.conftest import publish_synthetic_payload

    mirror = f"memory://lvm-verify-{tmp_path.name}" if mirrored else ""
    if mirror:
        monkeypatch.setenv("LVM_ARTIFACT_MIRROR", mirror)
    data = tmp_path / "data"
    publish_synthetic_payload(open_store(data, mirror), [5] * 8)
    pointer = f"{mirror}/payload/CURRENT" if mirror else str(data / "payload" / "CURRENT")
    with fsspec.open(pointer, "w") as handle:
        handle.write("{}")
    try:
        assert main(["verify", "--data-dir", str(data)]) == EXIT_FAILED
    finally:
        if mirror:
            fsspec.filesystem("memory").rm(mirror.removeprefix("memory://"), recursive=True)
    err = capsys.readouterr().err
    assert f"FAILED  payload/CURRENT (current): {pointer}: names no build (holds {{}})" in err
    assert "1 of 1 builds match their manifests; 1 CURRENT pointer names no sound build" in err


def test_import_payload_advises_allow_pickle_only_for_a_file_that_needs_it(tmp_path, capsys):
    import numpy as np

    from lvm_pipeline_tests.conftest import save_pickled

    plain = tmp_path / "plain.npy"
    np.save(plain, np.zeros((10, 4), np.float32))
    truncated = tmp_path / "truncated.npy"
    truncated.write_bytes(plain.read_bytes()[:140])
    data = str(tmp_path / "data")
    for path, reason in ((plain, "holds a plain float32 array (10, 4)"),
                         (truncated, "truncated: 140 bytes")):
        assert main(["import-payload", str(path), "--data-dir", data]) == EXIT_FAILED
        [line] = capsys.readouterr().err.splitlines()
        assert line.startswith(f"lvm import-payload: {path}: {reason}")
        assert "--allow-pickle" not in line
    pickled = save_pickled(tmp_path / "ref.npy", {"a": ("t", {}, np.ones(4))})
    assert main(["import-payload", str(pickled), "--data-dir", data]) == EXIT_FAILED
    [line] = capsys.readouterr().err.splitlines()
    assert "holds pickled objects" in line and line.endswith("add --allow-pickle")


def test_documented_selections_select_what_they_say():
    """Dagster's `payload+` is one level down; `payload*` is everything downstream. Each
    "everything downstream/upstream of it" example in `lvm materialize --help` selects exactly
    that, and no doc offers `+` for it."""
    import re

    import dagster as dg

    from lvm_pipeline.cli.materialize import EPILOG, resolve_selection
    from lvm_pipeline.cli.runner import PROJECT_ROOT, definitions

    graph = definitions().resolve_asset_graph()
    examples = re.findall(r"^  '?([*+]?\w+[*+]?)'?\s+(\w+) and everything (downstream|upstream) "
                          r"of it", EPILOG, re.M)
    assert {e[0] for e in examples} == {"payload*", "*faiss_index"}
    for selection, asset, direction in examples:
        closure = getattr(dg.AssetSelection.assets(asset), direction)()
        assert set(resolve_selection(selection)) == closure.resolve(graph) & set(
            graph.materializable_asset_keys), selection
    assert len(resolve_selection("payload*")) > len(resolve_selection("payload+"))
    for doc in ("README.md", "docs/deploy.md"):
        for line in (PROJECT_ROOT / doc).read_text().splitlines():
            assert not re.search(r"\w\+.{0,40}everything downstream", line), (doc, line)
