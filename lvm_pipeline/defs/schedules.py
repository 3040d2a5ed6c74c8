"""When things rebuild without anyone asking: a weekly full retrain, and declarative automation
that follows a changed payload downstream only past passed blocking checks.

Two mechanisms, on purpose:
- The **schedule** rebuilds everything (``full_retrain``) on a cron, so a deployment retrains
  on fresh data even when nobody touched it. Cron and timezone come from the environment
  (``LVM_RETRAIN_CRON``, ``LVM_RETRAIN_TZ``) because they are deployment choices, not code.
- **Declarative automation** (:data:`REBUILD_AFTER_CHECKED_UPSTREAM`, attached in each asset's
  decorator) reacts to a change: when ``payload`` is rebuilt (a new corpus, another embedder),
  its dependents are requested — but an asset is requested only while every *blocking* check
  of its upstream assets passed against their latest materialization. A failed alignment check
  therefore stops the five trainings from being requested at all, not just inside one run.

Both are off until switched on (UI → Automation, or ``dagster schedule start`` /
``dagster sensor start default_automation_condition_sensor``), so ``lvm ui`` on a laptop never
starts a multi-hour retrain by surprise; ``LVM_RETRAIN_SCHEDULE=running`` starts the schedule
switched on (a deployment's choice).
"""

import os
from collections.abc import Mapping

import dagster as dg

from lvm_pipeline.defs.jobs import full_retrain

# Sunday 03:00: a quiet hour, and weekly because a full retrain of five models is the expensive
# path; fresher data between retrains arrives through the automation below.
DEFAULT_RETRAIN_CRON = "0 3 * * 0"
DEFAULT_RETRAIN_TZ = "UTC"
_STATUSES = {"stopped": dg.DefaultScheduleStatus.STOPPED,
             "running": dg.DefaultScheduleStatus.RUNNING}

# Requested when an upstream asset updated (or will be, in the same tick), and only while every
# blocking check on the upstream assets has passed against their latest materialization (or
# is requested in the same tick, in which case the run itself gates the child on the check).
REBUILD_AFTER_CHECKED_UPSTREAM = (
    dg.AutomationCondition.eager() & dg.AutomationCondition.all_deps_blocking_checks_passed()
).with_label("eager_after_blocking_checks_passed")

# Checks run whenever the asset they check is (re)materialized by automation, so the condition
# above has a fresh result to look at.
CHECK_WITH_ITS_ASSET = dg.AutomationCondition.eager()


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
