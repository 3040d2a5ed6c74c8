"""Runs recorded in a Dagster instance for a process the test controls, holding a pool slot as
a run's step would: the dead, live and far-away runs of the dead-run tests."""

from __future__ import annotations

import subprocess
import sys
import uuid

import dagster as dg


def dead_pid() -> int:
    """The pid of a process that ran and was reaped."""
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def add_run(instance: dg.DagsterInstance, tags: dict[str, str],
            status: dg.DagsterRunStatus = dg.DagsterRunStatus.STARTED,
            holds: tuple[str, str] | None = ("training", "mamba_s")) -> str:
    """A run of ``full_retrain`` recorded in ``instance`` with ``tags`` (e.g. the process tags
    of defs/runs.py), its step holding the slot ``holds`` (pool, step); returns its id."""
    run_id = str(uuid.uuid4())
    instance.add_run(dg.DagsterRun(job_name="full_retrain", run_id=run_id, status=status,
                                   tags=tags))
    if holds:
        storage = instance.event_log_storage
        if holds[0] not in storage.get_concurrency_keys():
            storage.set_concurrency_slots(holds[0], 1)
        assert storage.claim_concurrency_slot(holds[0], run_id, holds[1]).is_claimed
    return run_id
