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
