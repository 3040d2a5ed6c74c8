"""What the CLI says about a run's events: the reason a step failed, and one line per failed
step, failed check or skipped step. Plain attribute access on Dagster's event objects, so this
module imports nothing of Dagster and both the console logger and the commands can use it.
"""

from __future__ import annotations

from collections.abc import Iterable
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
            if not evaluation.passed:
                lines.append(f"check {evaluation.check_name} on "
                             f"{evaluation.asset_key.to_user_string()} FAILED: "
                             f"{evaluation.description}")
        elif event.event_type_value == "STEP_SKIPPED":
            lines.append(f"step {event.step_key} skipped (an upstream step or blocking check "
                         "did not pass)")
    return lines
