"""The `lvm` command: exit codes, one-line errors, and a real small `lvm run`."""

from __future__ import annotations

import json

import pytest

from lvm_pipeline.cli import EXIT_FAILED, EXIT_OK, EXIT_USAGE, main


def test_usage_errors_exit_2(capsys):
    assert main(["run", "--preset", "huge"]) == EXIT_USAGE
    assert "invalid choice: 'huge'" in capsys.readouterr().err
    assert main([]) == EXIT_USAGE


def test_help_explains_each_command(capsys):
    assert main(["run", "--help"]) == EXIT_OK
    out = capsys.readouterr().out
    assert "--data-dir" in out and "LVM_DATA_DIR" in out and "--max-chunks" in out


def test_unwritable_data_dir_is_one_line_and_exit_1(tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    assert main(["run", "--data-dir", str(blocker / "data")]) == EXIT_FAILED
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "is not writable" in err[0]


def test_report_without_a_run_says_what_to_do(tmp_path, capsys):
    assert main(["report", "--data-dir", str(tmp_path)]) == EXIT_FAILED
    assert "no report under" in capsys.readouterr().err


@pytest.mark.slow
def test_lvm_run_small_then_report(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("DAGSTER_HOME", raising=False)
    data = tmp_path / "data"
    code = main(["run", "--data-dir", str(data), "--max-chunks", "300", "--epochs", "1",
                 "--log-level", "WARNING"])
    out = capsys.readouterr()
    assert code == EXIT_OK, out.err[-2000:]
    assert "| mamba_s |" in out.out and "copy_last_context" in out.out
    assert (data / "dagster_home" / "dagster.yaml").exists()
    # The run is recorded in the instance the UI reads.
    assert any((data / "dagster_home").rglob("*.db"))
    assert main(["report", "--data-dir", str(data), "--json"]) == EXIT_OK
    report = json.loads(capsys.readouterr().out)
    assert set(report["models"]) == {"mamba_s", "mamba_h", "mamba_xl", "mamba_sandwich",
                                     "mamba_gr"}


# --------------------------------------------------------------------------- guard commands


@pytest.fixture
def _cli_env(monkeypatch):
    """CLI calls set LVM_DATA_DIR / DAGSTER_HOME; keep them from leaking into other tests."""
    monkeypatch.delenv("DAGSTER_HOME", raising=False)
    monkeypatch.delenv("LVM_DATA_DIR", raising=False)


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


def test_check_and_verify_pass_on_a_copy_of_the_default_run(small_run_copy, capsys, _cli_env):
    from lvm_pipeline_tests.test_pipeline import CHECKS

    assert main(["check", "--data-dir", str(small_run_copy)]) == EXIT_OK
    out = capsys.readouterr().out
    assert out.splitlines()[2].split() == ["check", "asset", "status", "figure", "threshold"]
    for name in CHECKS:
        check, asset = name.split("@")
        assert any(line.split()[:3] == [check, asset, "pass"] for line in out.splitlines()), name
    assert (small_run_copy / "dagster_home" / "dagster.yaml").exists()  # recorded for the UI
    assert main(["verify", "--data-dir", str(small_run_copy)]) == EXIT_OK
    out = capsys.readouterr().out
    assert "11 of 11 builds match their manifests" in out and "ok      payload/" in out


def test_exported_training_set_imports_back_at_cosine_one(small_run_copy, tmp_path, capsys,
                                                           _cli_env):
    import numpy as np

    from lvm_pipeline.artifacts import ArtifactStore

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
    assert line.split()[2:4] == ["pass", "1"]
    imported = store.current("sequences/train")
    assert imported.build_id != native.build_id
    assert imported.manifest["source"]["kind"] == "imported npz"
    assert imported.manifest["alignment"]["target_cos_min"] > 0.9999
    assert imported.manifest["alignment"]["context_cos_min"] > 0.9999
