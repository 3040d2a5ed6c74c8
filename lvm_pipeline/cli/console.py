"""How ``lvm run`` / ``lvm materialize`` show a run on the terminal.

Dagster's default console logger prints every event as a long line (timestamp, job, run id,
step, event type), which buries the few things a person watches for. This logger replaces it
for CLI runs only (the UI's run logs keep everything): one line per step start and result with
its duration, one per check with its verdict, warnings and errors in full, the assets' own log
lines at INFO, and progress. A failed step is one line with its reason (its traceback stays in
the run's logs, and ``--debug`` prints it after the run); Dagster's "Dependencies for step …
Not executing." line for every step downstream of a failure is left out, and the command's
summary counts those steps in one line (:func:`lvm_pipeline.cli.events.failure_lines`).
When the command started on a terminal
(``bars``), progress is the tqdm bars that :func:`lvm_pipeline.runtime.make_progress` draws
(embedding batches, training epochs with loss and val cosine, index build, evaluation), and
lines are written with ``tqdm.write`` so they scroll above the bars instead of breaking them;
in a pipe or CI log, progress is the throttled ``task: done/total`` lines instead.

Beside the run's own events, the runner says what Dagster leaves silent (cli/slot_wait.py): a
step waiting for a pool slot, who holds it and how to clear that run if it is dead, a dead run
cleared before or during the run, and a signal that stopped the wait.
"""

from __future__ import annotations

import datetime as dt
import logging
import re
import sys
import time
from collections.abc import Sequence

import dagster as dg
from tqdm import tqdm

from lvm_pipeline.cli.events import BLOCKING_CHECK_FAILED, error_reason, step_failure_reason
from lvm_pipeline.defs.metadata import ARTIFACT_KIND, BUILD_ID, BUILT, REUSE
from lvm_pipeline.defs.runs import Cleared, RunProcess, Slot
from lvm_pipeline.runtime import is_progress_line

CONSOLE_LOGGER = "lvm_console"
# What Dagster logs (at ERROR) for each step it abandons because an upstream step failed
# (dagster/_core/execution/plan/active.py).
NOT_EXECUTING = re.compile(r"^Dependencies for step \S+ .*\. Not executing\.$", re.S)


def _event_line(event: dg.DagsterEvent, step: str | None) -> str | None:
    """The one line a step or check event deserves; "" for one to leave out, None for
    bookkeeping events (shown at DEBUG)."""
    kind = event.event_type_value
    data = event.event_specific_data
    # A check's own step says nothing its verdict line does not (checks are `check_<property>`,
    # so their steps are `<asset>_check_<property>`); a crash of one still shows below.
    if kind in ("STEP_START", "STEP_SUCCESS") and "_check_" in (step or ""):
        return ""
    if kind == "STEP_START":
        return f"▶ {step}"
    if kind == "STEP_SUCCESS":
        return f"✓ {step} ({data.duration_ms / 1000:.1f} s)"
    if kind == "STEP_FAILURE":
        error = data.error
        if error is not None and error.cls_name == BLOCKING_CHECK_FAILED:
            return ""  # the check's verdict line (✗ check …) said it
        return f"✗ {step} failed: {step_failure_reason(event)}"
    if kind == "RESOURCE_INIT_FAILURE":
        return f"✗ a resource failed to start: {error_reason(data.error)}"
    if kind == "STEP_SKIPPED":
        return f"- {step} skipped (an upstream step or blocking check did not pass)"
    if kind == "ASSET_MATERIALIZATION":
        return _materialization_line(data.materialization, step)
    if kind == "ASSET_CHECK_EVALUATION":
        verdict = "✓ check" if data.passed else "✗ check"
        outcome = "passed" if data.passed else f"FAILED: {data.description}"
        return f"{verdict} {data.check_name} on {data.asset_key.to_user_string()} {outcome}"
    return None


def _materialization_line(materialization: dg.AssetMaterialization, step: str | None) -> str:
    """``  mamba_s: built models/mamba_s 1a2b…`` or ``… reused … (same code, config and inputs)
    from run …``: whether the step computed its build (lvm_pipeline/defs/reuse.py)."""
    meta = materialization.metadata
    if BUILD_ID not in meta or REUSE not in meta:
        return ""
    how = meta[REUSE].value
    build = f"{meta[ARTIFACT_KIND].value} {str(meta[BUILD_ID].value)[:12]}"
    if how == BUILT:
        return f"  {step}: built {build}"
    return f"  {step}: {how.replace('the build', build, 1)}"


class ConsoleHandler(logging.Handler):
    """Writes the lines described in the module docstring to stderr."""

    def __init__(self, level: int, bars: bool) -> None:
        super().__init__(logging.DEBUG)
        self.show_level = level
        # Bars draw the progress; its lines are then left out here.
        self.bars = bars

    def emit(self, record: logging.LogRecord) -> None:
        try:
            line = self.render(record)
            if line is not None:
                tqdm.write(line, file=sys.stderr)
        except Exception:
            self.handleError(record)

    def render(self, record: logging.LogRecord) -> str | None:
        meta = getattr(record, "dagster_meta", None) or {}
        event = meta.get("dagster_event")
        step = meta.get("step_key")
        if event is not None:
            line = _event_line(event, step)
            if line is not None:
                return line or None  # "" = known event, deliberately silent
            if self.show_level > logging.DEBUG:
                return None
        message = meta.get("orig_message", record.getMessage())
        if NOT_EXECUTING.match(message) and self.show_level > logging.DEBUG:
            return None  # counted in the command's summary instead
        if record.levelno >= logging.WARNING:
            return f"! {step or 'run'}: {record.levelname.lower()}: {message}"
        if record.levelno < self.show_level or (self.bars and is_progress_line(message)):
            return None
        return f"  {step}: {message}" if step else f"  {message}"


@dg.logger(
    config_schema={"log_level": dg.Field(str, default_value="INFO"),
                   "bars": dg.Field(bool, default_value=False)},
    description="Compact console for `lvm` runs: step and check results, progress bars.",
)
def console_logger(init_context: dg.InitLoggerContext) -> logging.Logger:
    level = logging.getLevelName(init_context.logger_config["log_level"].upper())
    logger = logging.Logger("lvm", level=logging.DEBUG)
    logger.addHandler(ConsoleHandler(level, init_context.logger_config["bars"]))
    return logger


# ----------------------------------------------------------------------------- pool slots

def short_run_id(run_id: str) -> str:
    """The first 8 characters, as the UI shows a run; ``lvm runs clear`` takes them."""
    return run_id[:8]


def when(timestamp: float | None, now: float | None = None) -> str:
    """``11:41:40, 3 min ago`` (the date too when not today); ``?`` when unknown."""
    if timestamp is None:
        return "?"
    now = time.time() if now is None else now
    at = dt.datetime.fromtimestamp(timestamp)
    clock = at.strftime("%H:%M:%S" if at.date() == dt.date.fromtimestamp(now) else "%Y-%m-%d %H:%M")
    return f"{clock}, {duration(now - timestamp)} ago"


def duration(seconds: float) -> str:
    seconds = max(0.0, seconds)
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 90 * 60:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def slot_wait_line(steps: Sequence[str], holder: Slot, process: RunProcess) -> str:
    """``⏸ mamba_h waiting for the 'training' slot held by run 1a2b3c4d (step mamba_s, started
    11:41:40, 3 min ago; pid 4242 on this machine is alive); if that run is dead: `lvm runs
    clear 1a2b3c4d```"""
    run = short_run_id(holder.run_id)
    return (f"⏸ {', '.join(steps)} waiting for the {holder.pool!r} slot held by run {run} "
            f"(step {holder.step_key}, started {when(holder.since)}; {process.evidence}); "
            f"if that run is dead: `lvm runs clear {run}`")


def slot_limit_line(steps: Sequence[str], pool: str, limit: int) -> str:
    return (f"⏸ {', '.join(steps)} waiting for a {pool!r} slot, and the pool's limit is {limit}: "
            f"`dagster instance concurrency set {pool} 1` lets one step run")


def cleared_line(cleared: Cleared) -> str:
    """``! run 1a2b3c4d (job full_retrain, was STARTED) cleared: <reason>; freed the 'training'
    slot of mamba_s``"""
    job = f"job {cleared.job_name}, " if cleared.job_name else ""
    was = f"was {cleared.was}" if cleared.was else "had ended"
    freed = ", ".join(f"the {s.pool!r} slot of {s.step_key}" for s in cleared.freed)
    return (f"! run {short_run_id(cleared.run_id)} ({job}{was}) cleared: {cleared.reason}"
            + (f"; freed {freed}" if freed else ""))


def interrupted_line(signal_name: str, run_id: str, waiting: Sequence[Slot]) -> str:
    pools = sorted({s.pool for s in waiting})
    return (f"✗ {signal_name}: stopping run {short_run_id(run_id)}, which was waiting for the "
            f"{' and '.join(repr(p) for p in pools)} slot")


def notice(line: str) -> None:
    """Write one of the lines above to stderr, above any progress bars."""
    tqdm.write(line, file=sys.stderr)
