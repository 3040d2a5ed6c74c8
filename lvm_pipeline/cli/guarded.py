"""What the guard commands share: a Dagster run of some assets and checks in the project's
instance, and the check results as a table (check, asset, status, figure, threshold)."""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lvm_pipeline.cli.common import EXIT_FAILED, EXIT_OK, open_instance_lock, prepare_environment


@dataclass(frozen=True)
class CheckRow:
    check: str
    asset: str
    status: str  # pass / FAIL / ERROR
    figure: float | None
    threshold: float | None
    blocking: bool
    description: str


def run_selection(data_dir: Path, selection: Any, run_config: dict | None = None) -> Any:
    """Materialize ``selection`` (assets and/or checks) against ``data_dir``, recorded in the
    instance under DAGSTER_HOME so the run shows in the UI. Never raises on a failed step."""
    home = prepare_environment(data_dir)
    import dagster as dg

    from lvm_pipeline.definitions import defs
    from lvm_pipeline.defs.resources import storage_resources

    loaded = defs()
    # The storage root is passed explicitly: this process may have run against another one.
    resources = {**loaded.resources, **storage_resources(str(data_dir))}
    # The table says what failed and why; Dagster's own console lines (stack traces of the
    # blocked steps) would bury it. The full log stays in the instance for the UI.
    run_config = {"loggers": {"console": {"config": {"log_level": "CRITICAL"}}},
                  **(run_config or {})}
    with open_instance_lock(home):  # a fresh instance creates its tables once (common.py)
        instance = dg.DagsterInstance.get()
    with instance:
        return dg.materialize([*loaded.assets, *loaded.asset_checks], selection=selection,
                              run_config=run_config, resources=resources,
                              instance=instance, raise_on_error=False)


def _value(metadata: dict, key: str) -> float | None:
    entry = metadata.get(key)
    return None if entry is None else entry.value


def check_rows(result: Any) -> list[CheckRow]:
    """One row per check evaluated in the run, and one ERROR row per check step that crashed."""
    rows = []
    for event in result.all_events:
        if event.event_type_value == "ASSET_CHECK_EVALUATION":
            ev = event.event_specific_data
            rows.append(CheckRow(ev.check_name, ev.asset_key.to_user_string(),
                                 "pass" if ev.passed else "FAIL", _value(ev.metadata, "figure"),
                                 _value(ev.metadata, "threshold"), ev.blocking,
                                 ev.description or ""))
        elif _check_step_crashed(event):
            error = event.event_specific_data.error
            rows.append(CheckRow(event.step_key, "", "ERROR", None, None, True,
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


def report(result: Any, title: str) -> int:
    """Print the check table and the reasons for every failure; return the exit code
    (1 when a blocking check failed or errored, or a step failed)."""
    rows = check_rows(result)
    failures = step_failures(result)
    widths = (max([len(r.check) for r in rows] + [5]), max([len(r.asset) for r in rows] + [5]))
    print(f"{title}\n")
    print(f"{'check':<{widths[0]}}  {'asset':<{widths[1]}}  status  {'figure':>10}  threshold")
    for r in rows:
        print(f"{r.check:<{widths[0]}}  {r.asset:<{widths[1]}}  {r.status:<6}  "
              f"{_fmt(r.figure):>10}  {_fmt(r.threshold)}")
    bad = [r for r in rows if r.status != "pass"]
    for r in bad:
        print(f"\n{r.check} on {r.asset or 'its asset'} {r.status}"
              f"{'' if r.blocking else ' (not blocking)'}:\n  {r.description}", file=sys.stderr)
    for line in failures:
        print(f"\n{line}", file=sys.stderr)
    blocked = any(r.blocking for r in bad) or bool(failures)
    return EXIT_FAILED if blocked else EXIT_OK
