"""What the CLI says about a run's events: the reason a step failed, one line per failed step,
failed check or skipped step, the build a run materialized, and the table of a run's check
results (check, asset, status, figure, threshold). Plain attribute access on Dagster's event
objects, so this module imports nothing of Dagster and both the console logger and the
commands can use it.

A failure is one line: the error the failing code raised (not the Dagster error that wraps it),
``Type: message`` with its line breaks folded. Its traceback is for ``--debug``
(:func:`failure_details`): a stack trace per failed step buried the one line that names the
file and the rule.
"""

from __future__ import annotations

import sys
from collections.abc import Collection, Iterable
from dataclasses import dataclass
from typing import Any

# The error Dagster ends a check's step with when the check failed and is blocking: the
# check's own verdict says why, so this says nothing more.
BLOCKING_CHECK_FAILED = "DagsterAssetCheckFailedError"
# The error Dagster raises when an input manager's load_input raised (its cause).
INPUT_NOT_LOADED = "DagsterExecutionLoadInputError"


def error_reason(error: Any, with_type: bool = True) -> str:
    """``Type: message`` (``with_type``) or the message alone, of the error the failing code
    raised, on one line: Dagster's own wrappers (``DagsterExecutionStepExecutionError``,
    ``…LoadInputError``) are skipped to their cause. ``error`` is a ``SerializableErrorInfo``
    (or None)."""
    if error is None:
        return "unknown error"
    while error.cause is not None and error.cls_name.startswith("Dagster"):
        error = error.cause
    text = " ".join(error.message.split())
    # The message starts with the (qualified) class name, as Python prints an exception.
    head, sep, rest = text.partition(": ")
    if head.rsplit(".", 1)[-1] == error.cls_name:
        text = rest if sep else ""
    if not with_type and text:
        return text
    return f"{error.cls_name}: {text}" if text else error.cls_name


def step_failure_reason(event: Any) -> str:
    """The one line a STEP_FAILURE event's error comes down to (:func:`error_reason`)."""
    return error_reason(event.event_specific_data.error)


def _is_blocking_verdict(event: Any) -> bool:
    """A check step that ended because its blocking check failed (not because it crashed)."""
    error = event.event_specific_data.error
    return error is not None and error.cls_name == BLOCKING_CHECK_FAILED


def failure_lines(events: Iterable[Any], steps: Collection[str] = ()) -> list[str]:
    """One line per failed step or failed check (or a resource that failed to start), with the
    reason, then one line for the steps of ``steps`` (the run's plan) that did not run because
    of them: the first failure is the news, the 30-odd steps downstream of it are one
    consequence."""
    lines, failed, ran, skipped = [], [], set(), []
    resource_failed = False
    for event in events:
        kind = event.event_type_value
        if kind == "STEP_START":
            ran.add(event.step_key)
        if kind == "STEP_FAILURE":
            failed.append(event.step_key)
            if not _is_blocking_verdict(event):
                lines.append(f"step {event.step_key} failed: {step_failure_reason(event)}")
        elif kind == "ASSET_CHECK_EVALUATION":
            evaluation = event.event_specific_data
            if not evaluation.passed and not _warns(evaluation):
                lines.append(f"check {evaluation.check_name} on "
                             f"{evaluation.asset_key.to_user_string()} FAILED: "
                             f"{' '.join((evaluation.description or '').split())}")
        elif kind == "STEP_SKIPPED":
            skipped.append(event.step_key)
        elif kind == "RESOURCE_INIT_FAILURE":  # before any step of the run started
            resource_failed = True
            lines.append("a resource failed to start: "
                         f"{error_reason(event.event_specific_data.error)}")
        elif kind == "PIPELINE_FAILURE" and not lines and event.event_specific_data.error:
            lines.append(f"the run failed: {error_reason(event.event_specific_data.error)}")
    not_run = [step for step in steps if step not in ran and step not in failed]
    plural = "s" * (len(not_run) != 1)
    if not_run and failed:
        lines.append(f"{len(not_run)} downstream step{plural} not run because "
                     f"{', '.join(failed)} failed")
    elif not_run and resource_failed:
        lines.append(f"{len(not_run)} step{plural} not run because a resource failed to start")
    elif skipped:
        lines.append(f"{len(skipped)} step{'s' * (len(skipped) != 1)} skipped (an upstream "
                     f"step or blocking check did not pass): {', '.join(skipped)}")
    return lines


def _warns(evaluation: Any) -> bool:
    """A check of severity WARN: its failure is said, but blocks nothing."""
    return getattr(evaluation.severity, "value", evaluation.severity) == "WARN"


def warning_lines(events: Iterable[Any]) -> list[str]:
    """One line per failed check that does not block (severity WARN), with the reason."""
    return [f"check {e.check_name} on {e.asset_key.to_user_string()} WARNS: "
            f"{' '.join((e.description or '').split())}"
            for e in (event.event_specific_data for event in events
                      if event.event_type_value == "ASSET_CHECK_EVALUATION")
            if not e.passed and _warns(e)]


def planned_steps(result: Any) -> list[str]:
    """The steps of ``result``'s run (its job's nodes, each one step here)."""
    return [node.name for node in result.job_def.graph.nodes]


def failure_details(events: Iterable[Any]) -> list[str]:
    """Each failure's full error, causes and stack included (what ``--debug`` prints): failed
    steps, a resource that failed to start, a run that failed outside its steps."""
    return [f"{f'step {event.step_key}' if event.step_key else 'run'}:\n"
            f"{event.event_specific_data.error.to_string()}"
            for event in events
            if event.event_type_value in ("STEP_FAILURE", "RESOURCE_INIT_FAILURE",
                                          "PIPELINE_FAILURE")
            and getattr(event.event_specific_data, "error", None) is not None]


def materialized_build(result: Any, asset: str) -> str:
    """The build id that ``result``'s run recorded for its materialization of ``asset``: what
    this run produced, whatever another run has done since."""
    for event in result.get_asset_materialization_events():
        materialization = event.event_specific_data.materialization
        if materialization.asset_key.to_user_string() == asset:
            return str(materialization.metadata["build_id"].value)
    raise KeyError(f"run {result.run_id} materialized no {asset}")


@dataclass(frozen=True)
class CheckRow:
    check: str
    asset: str
    status: str  # pass / FAIL / ERROR
    measure: str  # what the figure is (min_cosine_to_payload, broken_keys…)
    figure: float | None
    threshold: float | None
    blocking: bool
    description: str


def _figures(metadata: dict) -> tuple[str, float | None, float | None]:
    """(measure, value, threshold): a check's first number is its measure, named by its key,
    then its threshold (defs/checks.py ``figures``)."""
    numbers = [(k, v.value) for k, v in metadata.items()
               if isinstance(v.value, int | float) and not isinstance(v.value, bool)]
    measured = [(k, v) for k, v in numbers if k != "threshold"]
    threshold = next((v for k, v in numbers if k == "threshold"), None)
    return (*measured[0], threshold) if measured else ("", None, threshold)


def check_rows(result: Any) -> list[CheckRow]:
    """One row per check evaluated in the run (warn: a failed check of severity WARN, which
    blocks nothing), and one per check whose step failed before it could judge: FAIL when its
    input was refused (a damaged manifest, a missing build), ERROR when the check itself
    crashed; either way with the one-line reason."""
    rows = []
    checks_of_step = _checks_by_step(result)
    for event in result.all_events:
        if event.event_type_value == "ASSET_CHECK_EVALUATION":
            ev = event.event_specific_data
            status = "pass" if ev.passed else "warn" if _warns(ev) else "FAIL"
            rows.append(CheckRow(ev.check_name, ev.asset_key.to_user_string(), status,
                                 *_figures(ev.metadata), ev.blocking and not _warns(ev),
                                 " ".join((ev.description or "").split())))
        elif _check_step_crashed(event):
            error = event.event_specific_data.error
            refused = error is not None and error.cls_name == INPUT_NOT_LOADED
            # As defs/checks.py could_not_run words a refusal the check itself caught.
            reason = (f"INPUT REFUSED: {error_reason(error, with_type=False)}" if refused
                      else f"CHECK COULD NOT RUN: {error_reason(error)}")
            status = "FAIL" if refused else "ERROR"
            for check, asset in checks_of_step.get(event.step_key, [(event.step_key, "")]):
                rows.append(CheckRow(check, asset, status, "", None, None, True, reason))
    return sorted(rows, key=lambda r: (r.asset, r.check))


def _checks_by_step(result: Any) -> dict[str, list[tuple[str, str]]]:
    """Each check step of the run → the (check, asset) pairs it evaluates (a multi-asset check
    evaluates several)."""
    out: dict[str, list[tuple[str, str]]] = {}
    for definition in result.job_def.asset_layer.asset_graph.assets_defs:
        if definition.is_executable and definition.check_keys:
            out[definition.node_def.name] = sorted(
                (key.name, key.asset_key.to_user_string()) for key in definition.check_keys)
    return out


def _is_check_step(event: Any) -> bool:
    return "check" in (event.step_key or "")


def _check_step_crashed(event: Any) -> bool:
    """A check step that raised. A failed *blocking* check also ends its step with
    DagsterAssetCheckFailedError; that one is already a FAIL row, not a crash."""
    return (event.event_type_value == "STEP_FAILURE" and _is_check_step(event)
            and not _is_blocking_verdict(event))


def step_failures(result: Any) -> list[str]:
    """One line per asset step that failed, with the reason (:func:`error_reason`)."""
    return [f"step {event.step_key} failed: {step_failure_reason(event)}"
            for event in result.all_events
            if event.event_type_value == "STEP_FAILURE" and not _is_check_step(event)]


def _fmt(value: float | None) -> str:
    return "" if value is None else f"{value:.4g}"


def print_check_table(result: Any, title: str, debug: bool = False) -> bool:
    """Print the check table and the reason for every failure, one line each (``debug``: then
    every failed step's traceback); return whether anything blocks (a blocking check failed or
    errored, or a step failed)."""
    rows = check_rows(result)
    failures = step_failures(result)
    widths = [max([len(getattr(r, f)) for r in rows] + [5]) for f in ("check", "asset", "measure")]
    print(f"{title}\n")
    print(f"{'check':<{widths[0]}}  {'asset':<{widths[1]}}  status  {'measure':<{widths[2]}}  "
          f"{'value':>10}  threshold")
    for r in rows:
        print(f"{r.check:<{widths[0]}}  {r.asset:<{widths[1]}}  {r.status:<6}  "
              f"{r.measure:<{widths[2]}}  {_fmt(r.figure):>10}  {_fmt(r.threshold)}")
    bad = [r for r in rows if r.status != "pass"]
    if bad or failures:
        print(file=sys.stderr)
    for r in bad:
        print(f"{r.check} on {r.asset or 'its asset'} {r.status}"
              f"{'' if r.blocking else ' (not blocking)'}: {r.description}", file=sys.stderr)
    for line in failures:
        print(line, file=sys.stderr)
    if debug:
        for detail in failure_details(result.all_events):
            print(f"\n{detail}", file=sys.stderr)
    return any(r.blocking for r in bad) or bool(failures)
