"""Runs whose process died: telling a live process from a gone one, clearing the dead runs of an
instance (marked failed, pool slots freed) and leaving alone the ones that cannot be checked, from
`lvm`, the sensor and the daemon's run monitoring."""

from __future__ import annotations

import datetime as dt
import logging
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

import dagster as dg
import pytest
import yaml
from dagster._core.events import EngineEventData
from dagster._core.instance.config import dagster_instance_config

from lvm_pipeline.cli.runner import INSTANCE_YAML, PROJECT_ROOT, open_instance
from lvm_pipeline.defs.runs import (
    HOST_TAG,
    PID_TAG,
    clear_dead_runs,
    clear_dead_runs_sensor,
    find_run_process,
    pool_slots,
    process_alive,
    process_tags,
)
from lvm_pipeline_tests.runs import add_run, dead_pid

LINUX = Path("/proc/self/stat").exists()
MONITORING = {"enabled": True, "poll_interval_seconds": 30, "free_slots_after_run_end_seconds": 30}


@pytest.fixture
def instance(tmp_path):
    with open_instance(tmp_path / "dagster_home") as opened:  # the repository's dagster.yaml
        yield opened


def test_a_live_process_is_told_from_a_gone_one():
    assert process_alive(os.getpid())
    assert not process_alive(dead_pid())


@pytest.mark.skipif(not LINUX, reason="zombies and start times are read from Linux's /proc")
def test_a_zombie_and_a_reused_pid_count_as_gone():
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    deadline = time.monotonic() + 10
    while Path(f"/proc/{child.pid}/stat").read_text().split(")")[1].split()[0] != "Z":
        assert time.monotonic() < deadline, "the child never exited"
        time.sleep(0.05)
    assert not process_alive(child.pid)  # exited, not yet reaped by its parent
    child.wait()
    # This process started before now, so it could be a run's that started now...
    assert process_alive(os.getpid(), started_by=time.time())
    # ...but not a run's that started an hour before it: that pid was given to another process.
    started = float(Path("/proc/self/stat").read_text().split(")")[1].split()[19])
    boot = next(float(line.split()[1]) for line in Path("/proc/stat").read_text().splitlines()
                if line.startswith("btime "))
    assert not process_alive(os.getpid(), started_by=boot + started / os.sysconf("SC_CLK_TCK")
                             - 3600)


def test_dead_runs_are_failed_and_their_slots_freed_and_the_others_left_alone(instance):
    here = process_tags()
    dead = add_run(instance, {PID_TAG: str(dead_pid()), HOST_TAG: here[HOST_TAG]})
    live = add_run(instance, here, holds=("index", "faiss_index"))
    elsewhere = add_run(instance, {PID_TAG: str(dead_pid()), HOST_TAG: "gpu-node-7"},
                        holds=("gpu", "mamba_xl"))
    ended = add_run(instance, here, status=dg.DagsterRunStatus.FAILURE, holds=("eval", "report"))

    process = find_run_process(instance, instance.get_run_by_id(elsewhere))
    assert process.alive is None and "gpu-node-7, not this machine" in process.evidence

    cleared = {c.run_id: c for c in clear_dead_runs(instance)}
    assert set(cleared) == {dead, ended}
    assert cleared[dead].was == "STARTED" and "on this machine is gone" in cleared[dead].reason
    assert [(s.pool, s.step_key) for s in cleared[dead].freed] == [("training", "mamba_s")]
    assert cleared[ended].was is None and "ended FAILURE" in cleared[ended].reason
    status = {r: instance.get_run_by_id(r).status for r in (dead, live, elsewhere, ended)}
    assert status == {dead: dg.DagsterRunStatus.FAILURE, live: dg.DagsterRunStatus.STARTED,
                      elsewhere: dg.DagsterRunStatus.STARTED, ended: dg.DagsterRunStatus.FAILURE}
    held, _ = pool_slots(instance)
    assert {(s.run_id, s.pool) for s in held} == {(live, "index"), (elsewhere, "gpu")}
    # The run's own log says why it ended, for the UI.
    [failure] = [e for e in instance.all_logs(dead) if e.dagster_event
                 and e.dagster_event.event_type_value == "PIPELINE_FAILURE"]
    assert "Marked ended by lvm: pid" in failure.message
    # The freed slot goes to the next training at once.
    assert instance.event_log_storage.claim_concurrency_slot(
        "training", str(uuid.uuid4()), "mamba_h").is_claimed


def test_a_run_launched_by_dagster_is_checked_by_the_pid_of_its_engine_event(instance):
    """A run without `lvm`'s tags (the UI's, the schedule's) names its process in an engine
    event; a SQLite instance is on this machine, so that pid is checked here."""
    run_id = add_run(instance, {})
    run = instance.get_run_by_id(run_id)
    assert find_run_process(instance, run).evidence == "no process recorded (yet)"
    pid = dead_pid()
    instance.report_engine_event(f"Started process for run (pid: {pid}).", run,
                                 EngineEventData(metadata={"pid": dg.MetadataValue.text(str(pid))}))
    process = find_run_process(instance, run)
    assert (process.pid, process.dead) == (pid, True)
    assert [c.run_id for c in clear_dead_runs(instance)] == [run_id]


def test_the_sensor_clears_dead_runs_where_the_daemon_runs(instance):
    sensor = dg.Definitions(sensors=[clear_dead_runs_sensor]).resolve_sensor_def("clear_dead_runs")
    assert sensor.default_status == dg.DefaultSensorStatus.RUNNING
    dead = add_run(instance, {PID_TAG: str(dead_pid()), HOST_TAG: process_tags()[HOST_TAG]})
    [skip] = sensor.evaluate_tick(dg.build_sensor_context(instance=instance)).skip_message.split(
        "\n")
    assert f"cleared run {dead}" in skip and "freed 1 slot(s)" in skip
    assert instance.get_run_by_id(dead).status == dg.DagsterRunStatus.FAILURE
    again = sensor.evaluate_tick(dg.build_sensor_context(instance=instance))
    assert again.skip_message == "no dead run"


def test_run_monitoring_gives_back_the_slots_of_a_run_marked_ended_from_the_ui(instance,
                                                                             monkeypatch):
    """The daemon's own pass over the instance (what `lvm ui` runs every 30 s) with the
    repository's dagster.yaml: a run canceled from the UI while it held a slot loses it."""
    from dagster._daemon.monitoring import concurrency as slots_daemon

    config, _ = dagster_instance_config(str(INSTANCE_YAML.parent))
    assert config["run_monitoring"] == MONITORING
    assert instance.run_monitoring_enabled
    run_id = add_run(instance, process_tags())
    instance.report_run_canceled(instance.get_run_by_id(run_id))

    class Daemon:  # what the pass reads of the daemon's workspace
        def __init__(self, instance: dg.DagsterInstance) -> None:
            self.instance = instance

    def daemon_pass(after_s: float) -> None:
        now = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=after_s)
        monkeypatch.setattr(slots_daemon, "get_current_datetime", lambda: now)
        list(slots_daemon.execute_concurrency_slots_iteration(Daemon(instance),
                                                              logging.getLogger("daemon")))

    daemon_pass(after_s=0)
    assert [s.run_id for s in pool_slots(instance)[0]] == [run_id]
    daemon_pass(after_s=31)
    assert pool_slots(instance) == ([], [])


def test_the_deploy_instances_monitor_runs_too():
    for path in ("postgres", "k8s"):
        config = yaml.safe_load((PROJECT_ROOT / "deploy" / path / "dagster.yaml").read_text())
        assert config["run_monitoring"] == MONITORING, path
