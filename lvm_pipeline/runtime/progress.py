"""Progress reporting for long work (embedding, training, index build, evaluation).

Domain code reports through a :class:`Progress` callback instead of a Dagster context, so it runs
the same from a notebook, a `torchrun` worker or an asset. :func:`make_progress` gives a bar on an
interactive terminal and, always, throttled log lines (which Dagster shows in the run's logs).
"""

from __future__ import annotations

import re
import sys
import time
from collections.abc import Callable
from typing import Any, Protocol


class Progress(Protocol):
    def __call__(self, done: int, total: int, **metrics: Any) -> None:
        """Report ``done`` of ``total`` units with optional named figures (loss, val_cos…);
        ``total`` 0: not known yet (a corpus read whole), until a call with ``done == total``."""


def silent(done: int, total: int, **metrics: Any) -> None:
    """A Progress that reports nothing (tests, library use)."""


# The shape of the lines make_progress logs ("task: done/total (rate/s) metrics"): a console
# that draws bars recognises them with this and leaves them to the bar.
_PROGRESS_LINE = re.compile(r"^[^:\n]+: \d+/(\d+|\?) \([\d.]+/s\)")


def is_progress_line(message: str) -> bool:
    """True for a line logged by :func:`make_progress` (so a terminal with bars can skip it)."""
    return bool(_PROGRESS_LINE.match(message))


def _format(metrics: dict[str, Any]) -> str:
    return " ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
                    for k, v in metrics.items())


def tee(*targets: Progress) -> Progress:
    """One Progress that reports to each of ``targets`` in turn (the console and a tracker)."""

    def report(done: int, total: int, **metrics: Any) -> None:
        for target in targets:
            target(done, total, **metrics)

    return report


def make_progress(
    task: str,
    log: Callable[[str], None] | None = None,
    every_s: float = 5.0,
    bar: bool = False,
) -> Progress:
    """A Progress that logs ``task: done/total`` at most every ``every_s`` seconds (and at the
    end) through ``log``, and draws a tqdm bar on stderr when ``bar``: the caller knows whether
    a person watches a terminal (``lvm run`` does; a step's own stderr is Dagster's capture
    pipe, so it cannot tell)."""
    show_bar = bar
    state: dict[str, Any] = {"last": 0.0, "bar": None, "start": time.perf_counter()}

    def report(done: int, total: int, **metrics: Any) -> None:
        now = time.perf_counter()
        finished = 0 < total <= done
        if show_bar:
            if state["bar"] is None:
                from tqdm import tqdm

                state["bar"] = tqdm(total=total or None, desc=task, file=sys.stderr, leave=True)
            pbar = state["bar"]
            pbar.total = total or None
            pbar.update(done - pbar.n)
            if metrics:
                pbar.set_postfix_str(_format(metrics))
            if finished:
                pbar.close()
                state["bar"] = None
        if log is not None and (finished or now - state["last"] >= every_s):
            state["last"] = now
            rate = done / max(now - state["start"], 1e-9)
            extra = f" {_format(metrics)}" if metrics else ""
            log(f"{task}: {done}/{total or '?'} ({rate:.1f}/s){extra}")

    return report
