"""Runs and the processes that execute them: which process runs each unfinished run, whether that
process still lives, who holds the instance's pool slots, and clearing a run whose process died.

Why this exists: a run whose process dies without a word (SIGKILL, the OOM killer, a machine
switched off) never reports its end. Dagster keeps it STARTED and keeps the pool slots its steps
claimed, so every later step of that pool (the five trainings share ``training``, dagster.yaml)
waits for it forever, and the weekly schedule skips while it looks busy. Dagster's run monitoring
can only ask a run launcher that checks its own workers (Kubernetes, ECS); ``lvm``'s in-process
runs have no launcher, and the default launcher checks nothing. A process on this machine can be
checked directly, so:

- every ``lvm`` run records its process in its tags (:func:`process_tags`); a run launched by
  Dagster (the UI, the schedule) names its process in its first engine event ("Started process
  for run (pid: N)", "Executing steps in process (pid: N)");
- a run whose recorded process is gone from this machine is dead: :func:`clear_dead_runs` marks
  it failed and frees its slots. ``lvm`` calls it before every run and while a run waits for a
  slot (cli/runner.py), the sensor :data:`clear_dead_runs_sensor` calls it every minute where
  the daemon runs (``lvm ui``), and ``lvm runs clear`` does it for one run on request;
- a run whose process cannot be checked from here (another machine, none recorded yet) is never
  touched automatically: ``lvm runs`` shows it, and ``lvm runs clear --force`` clears it.
"""

import datetime as dt
import os
import socket
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import dagster as dg

PID_TAG = "lvm/pid"
HOST_TAG = "lvm/host"

# The states in which a run has a process that will record its end. A run in one of them whose
# process is gone stays there forever.
UNFINISHED = (dg.DagsterRunStatus.STARTING, dg.DagsterRunStatus.STARTED,
              dg.DagsterRunStatus.CANCELING)
FINISHED = (dg.DagsterRunStatus.SUCCESS, dg.DagsterRunStatus.FAILURE,
            dg.DagsterRunStatus.CANCELED)
# A process that started more than this after its run began is another one that got the pid
# back (after a reboot, or once the pid numbers wrapped). Generous: the boot time Linux reports
# moves with the wall clock, and a run misjudged dead would lose its slot while it trains.
PID_REUSE_MARGIN_S = 60.0


def process_tags() -> dict[str, str]:
    """The tags that name this process as a run's: its pid and this machine's hostname."""
    return {PID_TAG: str(os.getpid()), HOST_TAG: socket.gethostname()}


# ----------------------------------------------------------------------------- processes

def _proc_stat(pid: int) -> tuple[str, float] | None:
    """(state letter, start time as a Unix timestamp) of ``pid`` from Linux's /proc; None where
    there is no /proc (macOS) or the process just ended."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        boot = next(float(line.split()[1]) for line in Path("/proc/stat").read_text().splitlines()
                    if line.startswith("btime "))
    except (OSError, StopIteration, ValueError, IndexError):
        return None
    # After the command name (in parentheses, which may hold spaces): state is field 3, the
    # start time (clock ticks after boot) field 22 (proc(5)).
    fields = stat[stat.rindex(")") + 2:].split()
    return fields[0], boot + int(fields[19]) / os.sysconf("SC_CLK_TCK")


def process_alive(pid: int, started_by: float | None = None) -> bool:
    """Whether process ``pid`` runs on this machine: it exists, has not exited (a zombie waits
    only to be reaped) and, when ``started_by`` (a Unix timestamp) is given, started no later
    than that (give the run's start: a later process reuses the pid)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # it exists, under another user
    stat = _proc_stat(pid)
    if stat is None:
        return True
    state, started = stat
    if state in ("Z", "X"):
        return False
    return started_by is None or started <= started_by + PID_REUSE_MARGIN_S


@dataclass(frozen=True)
class RunProcess:
    """A run and the process that runs it, as far as this machine can tell.

    ``alive`` is None when it cannot be told from here (no process recorded yet, or another
    machine); ``evidence`` says why, for a person."""

    run: Any  # dg.DagsterRun
    started: float | None  # when the run started (Unix timestamp), None before it did
    pid: int | None
    host: str | None
    alive: bool | None
    evidence: str

    @property
    def dead(self) -> bool:
        return self.alive is False


def _local_instance(instance: dg.DagsterInstance) -> bool:
    """A SQLite instance lives on one machine (Dagster does not support sharing it), so every
    run recorded in it ran on this one."""
    return "sqlite" in type(instance.run_storage).__name__.lower()


def _recorded_pid(instance: dg.DagsterInstance, run_id: str) -> int | None:
    """The pid of the process that runs ``run_id`` as Dagster records it: the first run-level
    engine event with a ``pid`` (the run worker's "Started process for run", or an in-process
    run's "Executing steps in process"); step-level ones name a step's subprocess."""
    for entry in instance.all_logs(run_id, of_type=dg.DagsterEventType.ENGINE_EVENT):
        data = entry.dagster_event.event_specific_data if entry.dagster_event else None
        pid = (getattr(data, "metadata", None) or {}).get("pid")
        if entry.step_key is None and pid is not None:
            return int(pid.value)
    return None


def find_run_process(instance: dg.DagsterInstance, run: Any) -> RunProcess:
    """The process that runs ``run`` and whether it is alive on this machine."""
    record = instance.get_run_record_by_id(run.run_id)
    started = record.start_time if record else None
    here = socket.gethostname()
    if PID_TAG in run.tags:
        pid, host = int(run.tags[PID_TAG]), run.tags.get(HOST_TAG)
    else:
        pid = _recorded_pid(instance, run.run_id)
        host = here if _local_instance(instance) else None
    if pid is None:
        return RunProcess(run, started, None, host, None, "no process recorded (yet)")
    if host is None:
        return RunProcess(run, started, pid, None, None,
                          f"pid {pid} on a machine the instance does not record")
    if host != here:
        return RunProcess(run, started, pid, host, None, f"pid {pid} on {host}, not this machine")
    alive = process_alive(pid, started)
    return RunProcess(run, started, pid, host, alive,
                      f"pid {pid} on this machine is {'alive' if alive else 'gone'}")


# ----------------------------------------------------------------------------- pool slots

@dataclass(frozen=True)
class Slot:
    """A step of a run in a pool: holding one of its slots, or waiting for one."""

    pool: str
    run_id: str
    step_key: str
    since: float | None  # held: when the step was given the slot; waiting: when it asked


def _timestamp(value: dt.datetime | None) -> float | None:
    return value.timestamp() if value is not None else None


def pool_slots(instance: dg.DagsterInstance, pools: Iterable[str] | None = None
               ) -> tuple[list[Slot], list[Slot]]:
    """(held, waiting): every step holding a slot of ``pools`` (default: every pool of the
    instance), and every step waiting for one."""
    storage = instance.event_log_storage
    if not storage.supports_global_concurrency_limits:
        return [], []
    keys = sorted(storage.get_concurrency_keys() if pools is None else set(pools))
    held, waiting = [], []
    for pool, info in storage.get_concurrency_infos(keys).items():
        pending = {(p.run_id, p.step_key): p for p in info.pending_steps}
        for slot in info.claimed_slots:
            step = pending.get((slot.run_id, slot.step_key))
            held.append(Slot(pool, slot.run_id, slot.step_key,
                             _timestamp(step.assigned_timestamp) if step else None))
        claimed = {(s.run_id, s.step_key) for s in info.claimed_slots}
        waiting += [Slot(pool, p.run_id, p.step_key, _timestamp(p.enqueued_timestamp))
                    for p in info.pending_steps
                    if p.assigned_timestamp is None and (p.run_id, p.step_key) not in claimed]
    return held, waiting


# ----------------------------------------------------------------------------- clearing

@dataclass(frozen=True)
class Cleared:
    """What clearing one run did: the status it left (None: it had already ended or is no
    longer recorded), why, and the slots it freed."""

    run_id: str
    job_name: str | None
    was: str | None  # the run's status before, e.g. "STARTED"
    reason: str
    freed: list[Slot]


def clear_run(instance: dg.DagsterInstance, run_id: str, reason: str) -> Cleared:
    """End ``run_id`` as dead: an unfinished run is marked failed (canceled if it was being
    canceled) with ``reason``, and every pool slot its steps hold or wait for is freed."""
    run = instance.get_run_by_id(run_id)
    held, waiting = pool_slots(instance)
    freed = [s for s in held if s.run_id == run_id]
    was = None
    if run is not None and run.status in UNFINISHED:
        was = run.status.value
        message = f"Marked ended by lvm: {reason}. Its pool slots were freed."
        if run.status == dg.DagsterRunStatus.CANCELING:
            instance.report_run_canceled(run, message)
        else:
            instance.report_run_failed(run, message)
    if any(s.run_id == run_id for s in held + waiting):
        instance.event_log_storage.free_concurrency_slots_for_run(run_id)
    return Cleared(run_id, run.job_name if run else None, was, reason, freed)


def ended_reason(run: Any) -> str:
    """Why a run that ended (``run``), or that the instance no longer records (None), is cleared
    of the pool slots it still holds."""
    state = "is no longer recorded" if run is None else f"ended {run.status.value}"
    return f"it {state} but still held pool slots"


def dead_reason(process: RunProcess) -> str:
    return (f"{process.evidence}: the run was killed (SIGKILL, out of memory) or its machine "
            "restarted")


def clear_dead_runs(instance: dg.DagsterInstance) -> list[Cleared]:
    """Clear every run that can never end by itself: an unfinished run
    whose process is gone from this machine, and a run that ended (or is no longer recorded)
    but still holds or waits for pool slots (marked failed from the UI, say). Runs whose
    process cannot be checked from here are left alone."""
    cleared = []
    for run in instance.get_runs(dg.RunsFilter(statuses=list(UNFINISHED))):
        process = find_run_process(instance, run)
        if process.dead:
            cleared.append(clear_run(instance, run.run_id, dead_reason(process)))
    held, waiting = pool_slots(instance)
    for run_id in sorted({s.run_id for s in held + waiting}):
        run = instance.get_run_by_id(run_id)
        if run is None or run.status in FINISHED:
            cleared.append(clear_run(instance, run_id, ended_reason(run)))
    return cleared


@dg.sensor(name="clear_dead_runs", minimum_interval_seconds=60,
           default_status=dg.DefaultSensorStatus.RUNNING,
           description="Every minute, marks failed each run whose process on this machine is "
                       "gone (killed, out of memory) and frees the pool slots it held, so the "
                       "trainings waiting for the `training` slot (a UI launch, the weekly "
                       "schedule) start. Runs on other machines are left alone; `lvm runs` "
                       "lists them. On by default: it only ends runs that cannot end by "
                       "themselves.")
def clear_dead_runs_sensor(context: dg.SensorEvaluationContext) -> dg.SkipReason:
    cleared = clear_dead_runs(context.instance)
    if not cleared:
        return dg.SkipReason("no dead run")
    return dg.SkipReason("cleared " + "; ".join(
        f"run {c.run_id} ({c.reason}; freed {len(c.freed)} slot(s))" for c in cleared))
