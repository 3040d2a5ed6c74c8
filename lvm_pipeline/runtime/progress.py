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


# The shape of the lines make_progress logs ("task: done/total unit · …", or a training's
# "task: epoch e/E · …"): a console that draws bars recognises them and leaves them to the bar.
_PROGRESS_LINE = re.compile(r"^[^:\n]+: (epoch \d+/\d+|[\d,]+/([\d,]+|\?))( |$)")
# (done, total, seconds since the start, metrics) → the line after "task: ".
Describe = Callable[[int, int, float, dict[str, Any]], str]


def is_progress_line(message: str) -> bool:
    """True for a line logged by :func:`make_progress` (so a terminal with bars can skip it)."""
    return bool(_PROGRESS_LINE.match(message))


def _figure(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else f"{value:,}" if isinstance(
        value, int) and not isinstance(value, bool) else str(value)


def counted(unit: str) -> Describe:
    """The body of a progress line of work counted in ``unit``: ``1,024/6,006 texts · 212
    texts/s · 23 s left · name value``. The rate and time left show once a second has passed
    (a rate over a millisecond says nothing)."""
    def describe(done: int, total: int, elapsed: float, metrics: dict[str, Any]) -> str:
        parts = [f"{done:,}/{total:,} {unit}" if total else f"{done:,}/? {unit}"]
        if elapsed >= 1.0 and done:
            rate = done / elapsed
            parts.append(f"{rate:,.1f} {unit}/s" if rate < 10 else f"{rate:,.0f} {unit}/s")
            if total and done < total:
                parts.append(f"{(total - done) / rate:,.0f} s left")
        parts += [f"{name} {_figure(value)}" for name, value in metrics.items()]
        return " · ".join(parts).strip()
    return describe


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
    unit: str = "",
    describe: Describe | None = None,
) -> Progress:
    """A Progress that logs ``task: <line>`` at most every ``every_s`` seconds (and at the end)
    through ``log``, and draws a tqdm bar on stderr when ``bar``: the caller knows whether a
    person watches a terminal (``lvm run`` does; a step's own stderr is Dagster's capture pipe,
    so it cannot tell). ``describe`` words the line (default :func:`counted` in ``unit``)."""
    show_bar = bar
    describe = describe or counted(unit)
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
                pbar.set_postfix_str(" ".join(f"{k}={_figure(v)}" for k, v in metrics.items()))
            if finished:
                pbar.close()
                state["bar"] = None
        if log is not None and (finished or now - state["last"] >= every_s):
            state["last"] = now
            log(f"{task}: " + describe(done, total, now - state["start"], metrics))

    return report
