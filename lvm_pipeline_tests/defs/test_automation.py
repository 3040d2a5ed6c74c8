"""The weekly retrain schedule and the declarative automation, through Dagster's testing APIs.

The automation tests report materializations and check results as runless events (what a run
would have written), so they exercise the real conditions on the real asset graph in seconds.
"""

from __future__ import annotations

import datetime as dt

import dagster as dg
import pytest
from dagster._core.definitions.asset_checks.asset_check_evaluation import (
    AssetCheckEvaluationTargetMaterializationData,
)

from lvm_pipeline.definitions import defs
from lvm_pipeline.defs.schedules import DEFAULT_RETRAIN_CRON, retrain_schedule
from lvm_pipeline.models import VARIANTS

# evaluate_automation_conditions selects with a beta parameter internally.
pytestmark = pytest.mark.filterwarnings("ignore::dagster.BetaWarning")

CHILDREN_OF_PAYLOAD = {"aligned_training_sequences", "aligned_eval", "faiss_index"}
DOWNSTREAM_OF_PAYLOAD = {*CHILDREN_OF_PAYLOAD, *VARIANTS, "retrieval_report"}


def _checks_on(*assets: str) -> set[tuple[str, str]]:
    """(asset, check) for every check the graph defines on these assets."""
    return {(k.asset_key.to_user_string(), k.name)
            for k in defs().resolve_asset_graph().asset_check_keys
            if k.asset_key.to_user_string() in assets}


# ----------------------------------------------------------------------------- schedule

def test_weekly_retrain_requests_a_valid_full_retrain(monkeypatch):
    schedule = defs().resolve_schedule_def("weekly_full_retrain")
    assert schedule.job_name == "full_retrain"
    assert schedule.cron_schedule == DEFAULT_RETRAIN_CRON  # Sundays 03:00
    assert schedule.default_status == dg.DefaultScheduleStatus.STOPPED
    with dg.instance_for_test() as instance:
        context = dg.build_schedule_context(
            instance=instance, scheduled_execution_time=dt.datetime(2026, 3, 1, 3, tzinfo=dt.UTC))
        data = schedule.evaluate_tick(context)
    [request] = data.run_requests
    job = defs().resolve_job_def("full_retrain")
    assert dg.validate_run_config(job, request.run_config) is not None
    # The run covers every asset of the graph.
    assert {k.to_user_string() for k in job.asset_layer.executable_asset_keys} >= (
        DOWNSTREAM_OF_PAYLOAD | {"corpus", "payload"})


def test_retrain_is_skipped_while_one_is_running():
    schedule = defs().resolve_schedule_def("weekly_full_retrain")
    job = defs().resolve_job_def("full_retrain")
    with dg.instance_for_test() as instance:
        run = instance.create_run_for_job(job, run_config={})
        instance.handle_run_event(run.run_id, dg.DagsterEvent(
            event_type_value="PIPELINE_START", job_name=job.name))
        data = schedule.evaluate_tick(dg.build_schedule_context(instance=instance))
    assert not data.run_requests
    assert f"full_retrain run {run.run_id} is still started" in data.skip_message


def test_cron_timezone_and_status_come_from_the_environment():
    schedule = retrain_schedule({"LVM_RETRAIN_CRON": "30 1 * * 1-5",
                                 "LVM_RETRAIN_TZ": "Europe/Berlin",
                                 "LVM_RETRAIN_SCHEDULE": "running"})
    assert schedule.cron_schedule == "30 1 * * 1-5"
    assert schedule.execution_timezone == "Europe/Berlin"
    assert schedule.default_status == dg.DefaultScheduleStatus.RUNNING
    with pytest.raises(ValueError, match="valid: stopped, running"):
        retrain_schedule({"LVM_RETRAIN_SCHEDULE": "on"})


# ----------------------------------------------------------------------------- automation

def _requested(result) -> set[str]:
    return {r.key.to_user_string() if isinstance(r.key, dg.AssetKey) else r.key.name
            for r in result.results if r.true_subset.size}


def _materialized(instance: dg.DagsterInstance, *assets: str) -> None:
    for asset in assets:
        instance.report_runless_asset_event(dg.AssetMaterialization(asset))


def _checked(instance: dg.DagsterInstance, asset: str, check: str, passed: bool) -> None:
    """A check result against the asset's latest materialization, as a run records it."""
    record = instance.fetch_materializations(dg.AssetKey(asset), limit=1).records[0]
    instance.report_runless_asset_event(dg.AssetCheckEvaluation(
        asset_key=dg.AssetKey(asset), check_name=check, passed=passed,
        target_materialization_data=AssetCheckEvaluationTargetMaterializationData(
            storage_id=record.storage_id, run_id=record.run_id, timestamp=record.timestamp)))


def _payload_rebuilt_then_sequences_checked(training_check_passed: bool) -> set[str]:
    """Tick 1 after a new payload, a tick while that run is in flight, the run's results, and
    the tick after it; returns what that last tick requested."""
    with dg.instance_for_test() as instance:
        result = dg.evaluate_automation_conditions(defs=defs(), instance=instance)
        assert not _requested(result), "nothing is requested before anything changed"
        _materialized(instance, "corpus", "payload")
        result = dg.evaluate_automation_conditions(defs=defs(), instance=instance,
                                                   cursor=result.cursor)
        # A new payload requests its children with their blocking checks, and at most what is
        # downstream of them: Dagster evaluates one graph level concurrently, so whether the
        # models (the same level as the sequences' checks) join this tick's run is its choice;
        # when they do, the run itself gates them on the checks.
        requested = _requested(result)
        assert CHILDREN_OF_PAYLOAD | {
            name for _, name in _checks_on("payload", *CHILDREN_OF_PAYLOAD)} <= requested
        assert requested <= DOWNSTREAM_OF_PAYLOAD | {
            name for _, name in _checks_on("payload", *DOWNSTREAM_OF_PAYLOAD)}
        result = dg.evaluate_automation_conditions(defs=defs(), instance=instance,
                                                   cursor=result.cursor)
        assert not _requested(result), "a tick while the run is in flight requests nothing"
        # The run: payload checked, sequences and index rebuilt and checked; the training
        # alignment check decides the models.
        _materialized(instance, "aligned_training_sequences", "aligned_eval", "faiss_index")
        for asset, check in _checks_on("payload", "aligned_training_sequences", "aligned_eval",
                                       "faiss_index"):
            passed = training_check_passed if check == "check_training_sequences_aligned" else True
            _checked(instance, asset, check, passed)
        result = dg.evaluate_automation_conditions(defs=defs(), instance=instance,
                                                   cursor=result.cursor)
        return _requested(result)


def test_failed_blocking_check_keeps_training_from_being_requested():
    assert _payload_rebuilt_then_sequences_checked(training_check_passed=False) == set()


def test_passed_blocking_check_lets_training_follow_new_sequences():
    assert _payload_rebuilt_then_sequences_checked(training_check_passed=True) == {
        *VARIANTS, "retrieval_report",
        *(name for _, name in _checks_on("retrieval_report", *VARIANTS))}


def test_the_automation_sensor_says_what_it_does_and_targets_the_pipeline_by_name():
    """The UI shows a sensor's description and its target's text: a sentence and group names,
    not a Python repr; off until a user switches it on."""
    # Beside it only the sensor that clears dead runs (defs/runs.py), which requests nothing.
    assert {s.name for s in defs().sensors} == {"rebuild_after_checked_upstream", "clear_dead_runs"}
    sensor = defs().resolve_sensor_def("rebuild_after_checked_upstream")
    assert "blocking check" in sensor.description and "Off until switched on" in sensor.description
    assert sensor.default_status == dg.DefaultSensorStatus.STOPPED
    assert str(sensor.asset_selection) == (
        'group:"data" or group:"sequences" or group:"models" or group:"evaluation"')
    graph = defs().resolve_asset_graph()
    automated = {k.to_user_string() for k in graph.materializable_asset_keys
                 if graph.get(k).automation_condition is not None}
    assert automated <= {k.to_user_string() for k in sensor.asset_selection.resolve(graph)}
