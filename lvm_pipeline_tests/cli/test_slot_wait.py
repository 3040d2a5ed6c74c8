"""`lvm` runs and the `training` pool when a run dies: a training killed with SIGKILL does not
block the next run, a run waiting for the slot says who holds it and stops on SIGTERM or
SIGINT, and a waiting run goes on once the run it waits for is killed. Each `lvm` here is its own
process, as a user starts it; the run that holds the slot is a real training or a run recorded
in the instance for a process the test controls."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import dagster as dg
import pytest

from lvm_pipeline.defs.runs import HOST_TAG, PID_TAG, pool_slots, process_tags
from lvm_pipeline_tests.conftest import instance_at
from lvm_pipeline_tests.runs import add_run

WAITING = "waiting for the 'training' slot held by run"
RETRAIN = """
import sys
from pathlib import Path
from lvm_pipeline_tests.conftest import SMALL_TRAINING, materialize_all
result = materialize_all(Path(sys.argv[1]), selection=["mamba_s"],
                         training={**SMALL_TRAINING, "rebuild": True})
sys.exit(0 if result.success else 1)
"""


def lvm_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k not in ("DAGSTER_HOME", "LVM_DATA_DIR")}


def start_lvm(args: list[str], log: Path) -> subprocess.Popen:
    with open(log, "wb") as out:
        return subprocess.Popen([sys.executable, "-m", "lvm_pipeline.cli", *args], env=lvm_env(),
                                stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)


def wait_for_line(log: Path, text: str, process: subprocess.Popen, timeout_s: float) -> str:
    deadline = time.monotonic() + timeout_s
    while text not in log.read_text(errors="replace"):
        assert process.poll() is None, f"lvm exited {process.returncode}:\n{log.read_text()}"
        assert time.monotonic() < deadline, f"no {text!r} in {timeout_s} s:\n{log.read_text()}"
        time.sleep(0.1)
    return log.read_text(errors="replace")


def hold_training_slot(data_dir: Path, pid: int) -> str:
    """A STARTED run of process ``pid`` on this machine holding the `training` slot (step
    mamba_s), recorded in the data dir's instance as `lvm` would have; returns its id."""
    with instance_at(data_dir) as instance:
        return add_run(instance, {PID_TAG: str(pid), HOST_TAG: process_tags()[HOST_TAG]})


def run_status(data_dir: Path, run_id: str) -> dg.DagsterRunStatus:
    with instance_at(data_dir) as instance:
        return instance.get_run_by_id(run_id).status


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_a_waiting_run_names_the_holder_and_stops_on_a_signal(tmp_path, signum):
    data_dir = tmp_path / "data"
    holder = hold_training_slot(data_dir, os.getpid())  # this test process: alive
    log = tmp_path / "waiting.log"
    waiting = start_lvm(["materialize", "mamba_s", "--no-tracking", "--data-dir", str(data_dir)],
                        log)
    try:
        text = wait_for_line(log, WAITING, waiting, timeout_s=60)
        line = next(x for x in text.splitlines() if WAITING in x)
        assert f"held by run {holder[:8]} (step mamba_s, started " in line
        assert f"pid {os.getpid()} on this machine is alive" in line
        assert f"`lvm runs clear {holder[:8]}`" in line
        signalled = time.monotonic()
        waiting.send_signal(signum)
        code = waiting.wait(timeout=20)
        stopped_after = time.monotonic() - signalled
    finally:
        waiting.kill()
    text = log.read_text()
    assert code == 1, text
    assert stopped_after < 10, f"took {stopped_after:.1f} s to stop"
    assert f"✗ {signum.name}: stopping run" in text and "lvm materialize FAILED" in text, text
    with instance_at(data_dir) as instance:
        [mine] = [r for r in instance.get_runs() if r.run_id != holder]
        assert mine.status == dg.DagsterRunStatus.FAILURE
        held, waits = pool_slots(instance)
        assert waits == [], "the stopped run left its claim in the queue"
        assert [s.run_id for s in held] == [holder]  # the live holder is left alone
        assert instance.get_run_by_id(holder).status == dg.DagsterRunStatus.STARTED


def test_a_waiting_run_goes_on_once_the_run_it_waits_for_is_killed(tmp_path):
    data_dir = tmp_path / "data"
    training = subprocess.Popen(["sleep", "600"])  # the holder's process
    holder = hold_training_slot(data_dir, training.pid)
    log = tmp_path / "waiting.log"
    waiting = start_lvm(["materialize", "mamba_s", "--no-tracking", "--data-dir", str(data_dir)],
                        log)
    try:
        wait_for_line(log, WAITING, waiting, timeout_s=60)
        training.kill()
        training.wait()
        killed = time.monotonic()
        # The step gets the slot and runs (it then fails: this data dir has no sequences).
        text = wait_for_line(log, "▶ mamba_s", waiting, timeout_s=40)
        waited = time.monotonic() - killed
        waiting.wait(timeout=60)
    finally:
        waiting.kill()
        training.kill()
    assert f"! run {holder[:8]} (job full_retrain, was STARTED) cleared: pid {training.pid} on " \
           f"this machine is gone" in text, text
    assert "freed the 'training' slot of mamba_s" in text
    assert waited < 30, f"went on {waited:.0f} s after the holder died"
    assert run_status(data_dir, holder) == dg.DagsterRunStatus.FAILURE


# A run with a step in the `training` pool, which waits (this process holds the slot), and a
# step outside it, which runs meanwhile: a signal during that step is Dagster's to handle.
STEP_WHILE_WAITING = """
import sys, time, uuid
from pathlib import Path
import dagster as dg
from lvm_pipeline.cli.runner import open_instance
from lvm_pipeline.cli.slot_wait import SlotWatch
from lvm_pipeline.defs.runs import process_tags
from lvm_pipeline_tests.runs import add_run

@dg.asset(pool="training")
def blocked() -> None:
    pass

@dg.asset
def busy() -> None:
    print("BUSY", flush=True)
    time.sleep(60)

with open_instance(Path(sys.argv[1])) as instance:
    add_run(instance, process_tags())
    run_id = str(uuid.uuid4())
    job = dg.Definitions(assets=[blocked, busy]).resolve_implicit_global_asset_job_def()
    with SlotWatch(instance, run_id):
        job.execute_in_process(instance=instance, run_id=run_id, raise_on_error=False)
    print("RUN", instance.get_run_by_id(run_id).status.value, "STEPS",
          {s.step_key: s.status.value for s in instance.get_run_step_stats(run_id)}, flush=True)
"""


def test_a_signal_during_a_step_is_left_to_dagster_while_another_step_waits(tmp_path):
    log = tmp_path / "run.log"
    with open(log, "wb") as out:
        run = subprocess.Popen([sys.executable, "-c", STEP_WHILE_WAITING, str(tmp_path / "home")],
                               env=lvm_env(), stdout=out, stderr=subprocess.STDOUT)
    try:
        wait_for_line(log, "⏸ blocked waiting for the 'training' slot", run, timeout_s=60)
        wait_for_line(log, "BUSY", run, timeout_s=30)
        run.send_signal(signal.SIGINT)
        assert run.wait(timeout=20) == 0
    finally:
        run.kill()
    text = log.read_text()
    # Dagster interrupted the step; the watcher did not interrupt the run a second time.
    assert "RUN FAILURE STEPS {'busy': 'FAILURE'}" in text, text
    assert "✗ SIGINT" not in text and "Traceback" not in text, text


@pytest.mark.slow
def test_a_training_killed_by_sigkill_does_not_block_the_next_run(small_run_copy, tmp_path):
    data_dir = small_run_copy
    log = tmp_path / "killed.log"
    # --rebuild: train, not reuse the small run's checkpoint; enough epochs to be killed in it.
    training = start_lvm(["materialize", "mamba_s", "--rebuild", "--epochs", "500",
                          "--no-tracking", "--data-dir", str(data_dir)], log)
    try:
        killed_run = None
        deadline = time.monotonic() + 120
        with instance_at(data_dir) as instance:
            while killed_run is None:
                assert training.poll() is None, log.read_text()
                assert time.monotonic() < deadline, "mamba_s never started:\n" + log.read_text()
                for slot in pool_slots(instance, ["training"])[0]:
                    steps = instance.get_run_step_stats(slot.run_id, ["mamba_s"])
                    if slot.step_key == "mamba_s" and steps:  # started, and holds the slot
                        killed_run = slot.run_id
                time.sleep(0.1)
        os.kill(training.pid, signal.SIGKILL)
        training.wait()
    finally:
        training.kill()
    with instance_at(data_dir) as instance:
        # What the kill leaves: a run that looks alive and keeps the slot.
        assert instance.get_run_by_id(killed_run).status == dg.DagsterRunStatus.STARTED
        assert [s.run_id for s in pool_slots(instance)[0]] == [killed_run]

    # The next training, through the same runner, with the small run's settings (so its checks
    # pass as they did there), in a process of its own: were it blocked, the timeout says so.
    second = subprocess.run([sys.executable, "-c", RETRAIN, str(data_dir)], env=lvm_env(),
                            capture_output=True, text=True, timeout=240)
    assert second.returncode == 0, second.stderr[-5000:]
    assert (f"! run {killed_run[:8]} (job __ASSET_JOB, was STARTED) cleared: "
            f"pid {training.pid} on this machine is gone") in second.stderr, second.stderr[-5000:]
    assert WAITING not in second.stderr
    with instance_at(data_dir) as instance:
        assert instance.get_run_by_id(killed_run).status == dg.DagsterRunStatus.FAILURE
        assert pool_slots(instance) == ([], [])
        latest = instance.get_runs(limit=1)[0]
        assert latest.run_id != killed_run and latest.status == dg.DagsterRunStatus.SUCCESS
