"""The weekly full retrain: a deployment retrains on fresh data even when nobody touched it.

It rebuilds everything (``full_retrain``) on a cron; cron and timezone come from the
environment (``LVM_RETRAIN_CRON``, ``LVM_RETRAIN_TZ``) because they are deployment choices, not
code. Fresher data between retrains arrives through the automation
(:mod:`lvm_pipeline.defs.automation`). Off until switched on (UI → Automation, or ``dagster
schedule start``); ``LVM_RETRAIN_SCHEDULE=running`` starts it switched on (a deployment's
choice).
"""

import os
from collections.abc import Mapping

import dagster as dg

from lvm_pipeline.defs.jobs import full_retrain

# Sunday 03:00: a quiet hour, and weekly because a full retrain of five models is the expensive
# path; fresher data between retrains arrives through the automation.
DEFAULT_RETRAIN_CRON = "0 3 * * 0"
DEFAULT_RETRAIN_TZ = "UTC"
_STATUSES = {"stopped": dg.DefaultScheduleStatus.STOPPED,
             "running": dg.DefaultScheduleStatus.RUNNING}


def _skip_if_running(context: dg.ScheduleEvaluationContext) -> dg.RunRequest | dg.SkipReason:
    """One full retrain at a time: on a slow machine a weekly run can outlast its week, and a
    second one would only compete with it for the same cores."""
    running = context.instance.get_run_records(dg.RunsFilter(
        job_name=full_retrain.name,
        statuses=[dg.DagsterRunStatus.QUEUED, dg.DagsterRunStatus.NOT_STARTED,
                  dg.DagsterRunStatus.STARTING, dg.DagsterRunStatus.STARTED]), limit=1)
    if running:
        return dg.SkipReason(f"full_retrain run {running[0].dagster_run.run_id} is still "
                             f"{running[0].dagster_run.status.value.lower()}")
    return dg.RunRequest(run_config={}, tags={"lvm/trigger": "weekly_full_retrain"})


def retrain_schedule(env: Mapping[str, str] | None = None) -> dg.ScheduleDefinition:
    """The weekly full retrain, with cron, timezone and default status read from ``env``."""
    env = os.environ if env is None else env
    status = env.get("LVM_RETRAIN_SCHEDULE", "stopped").lower()
    if status not in _STATUSES:
        raise ValueError(f"LVM_RETRAIN_SCHEDULE={status!r}; valid: {', '.join(_STATUSES)}")
    return dg.ScheduleDefinition(
        name="weekly_full_retrain",
        job=full_retrain,
        cron_schedule=env.get("LVM_RETRAIN_CRON", DEFAULT_RETRAIN_CRON),
        execution_timezone=env.get("LVM_RETRAIN_TZ", DEFAULT_RETRAIN_TZ),
        execution_fn=_skip_if_running,
        default_status=_STATUSES[status],
        description="Rebuild the whole graph (corpus → … → retrieval_report) with the default "
                    "config, skipped while one is still running; cron from LVM_RETRAIN_CRON, "
                    "timezone from LVM_RETRAIN_TZ.",
    )


weekly_full_retrain = retrain_schedule()
