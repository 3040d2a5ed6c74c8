"""What the CLI says about a run's events: the reason a step failed, one line per failed step,
failed check or skipped step, the build a run materialized, and the table of a run's check
results (check, asset, status, figure, threshold). Plain attribute access on Dagster's event
objects, so this module imports nothing of Dagster and both the console logger and the
commands can use it.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any


def step_failure_reason(event: Any) -> str:
    """The last line of a STEP_FAILURE's root error: the line that names the file and rule."""
    error = event.event_specific_data.error
    if error is None:
        return "unknown error"
    return (error.cause or error).message.strip().splitlines()[-1]


def failure_lines(events: Iterable[Any]) -> list[str]:
    """One line per failed step, failed check or skipped step, with the reason."""
    lines = []
    for event in events:
        if event.event_type_value == "STEP_FAILURE":
            lines.append(f"step {event.step_key} failed: {step_failure_reason(event)}")
        elif event.event_type_value == "ASSET_CHECK_EVALUATION":
            evaluation = event.event_specific_data
            if not evaluation.passed and not _warns(evaluation):
                lines.append(f"check {evaluation.check_name} on "
                             f"{evaluation.asset_key.to_user_string()} FAILED: "
                             f"{evaluation.description}")
        elif event.event_type_value == "STEP_SKIPPED":
            lines.append(f"step {event.step_key} skipped (an upstream step or blocking check "
                         "did not pass)")
    return lines


def _warns(evaluation: Any) -> bool:
    """A check of severity WARN: its failure is said, but blocks nothing."""
    return getattr(evaluation.severity, "value", evaluation.severity) == "WARN"


def warning_lines(events: Iterable[Any]) -> list[str]:
    """One line per failed check that does not block (severity WARN), with the reason."""
    return [f"check {e.check_name} on {e.asset_key.to_user_string()} WARNS: {e.description}"
            for e in (event.event_specific_data for event in events
                      if event.event_type_value == "ASSET_CHECK_EVALUATION")
            if not e.passed and _warns(e)]


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
    """One row per check evaluated in the run, and one ERROR row per check step that crashed."""
    rows = []
    for event in result.all_events:
        if event.event_type_value == "ASSET_CHECK_EVALUATION":
            ev = event.event_specific_data
            rows.append(CheckRow(ev.check_name, ev.asset_key.to_user_string(),
                                 "pass" if ev.passed else "FAIL", *_figures(ev.metadata),
                                 ev.blocking, ev.description or ""))
        elif _check_step_crashed(event):
            error = event.event_specific_data.error
            rows.append(CheckRow(event.step_key, "", "ERROR", "", None, None, True,
                                 error.to_string() if error else "unknown error"))
    return sorted(rows, key=lambda r: (r.asset, r.check))


def _is_check_step(event: Any) -> bool:
    return "check" in (event.step_key or "")


def _check_step_crashed(event: Any) -> bool:
    """A check step that raised. A failed *blocking* check also ends its step with
    DagsterAssetCheckFailedError; that one is already a FAIL row, not a crash."""
    if event.event_type_value != "STEP_FAILURE" or not _is_check_step(event):
        return False
    error = event.event_specific_data.error
    return error is None or error.cls_name != "DagsterAssetCheckFailedError"


def step_failures(result: Any) -> list[str]:
    """One line per asset step that failed, with the last line of its error (the reason)."""
    lines = []
    for event in result.all_events:
        if event.event_type_value == "STEP_FAILURE" and not _is_check_step(event):
            error = event.event_specific_data.error
            while error is not None and error.cause is not None:
                error = error.cause
            reason = error.message.strip() if error else "unknown error"
            lines.append(f"step {event.step_key} failed: {reason}")
    return lines


def _fmt(value: float | None) -> str:
    return "" if value is None else f"{value:.4g}"


def print_check_table(result: Any, title: str) -> bool:
    """Print the check table and the reasons for every failure; return whether anything
    blocks (a blocking check failed or errored, or a step failed)."""
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
    for r in bad:
        print(f"\n{r.check} on {r.asset or 'its asset'} {r.status}"
              f"{'' if r.blocking else ' (not blocking)'}:\n  {r.description}", file=sys.stderr)
    for line in failures:
        print(f"\n{line}", file=sys.stderr)
    return any(r.blocking for r in bad) or bool(failures)
