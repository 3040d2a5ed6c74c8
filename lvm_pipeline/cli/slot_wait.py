"""How an ``lvm`` run waits for a pool slot: visibly, interruptibly, and never behind a dead run.

Dagster's in-process executor (the one ``execute_in_process`` always uses) waits for a step's
pool slot in a loop that shows nothing on the console (a DEBUG event every five minutes) and
never looks at SIGINT or SIGTERM: during a run Dagster holds signals back until the next step
starts, and a step waiting for its slot never starts. So while a run executes, a thread of
:class:`SlotWatch`

- reads the instance every ``POLL_S`` for steps of this run waiting for a slot, and prints who
  holds it, since when, and how to clear that run if it is dead: at once, then at growing
  intervals up to once a minute;
- clears a holder whose process is gone from this machine (defs/runs.py; checked every
  ``DEAD_CHECK_EVERY_S``), so the wait ends by itself when the run it waits for is killed;
- hears SIGINT and SIGTERM through ``signal.set_wakeup_fd`` (Python writes every signal there,
  whichever handler Dagster installed) and, when they arrive while this run does nothing but
  wait (no step of it in progress or just interrupted), raises
  ``DagsterExecutionInterruptedError`` in the thread that runs it: Dagster's own interrupt path
  ends the run (FAILURE, its waiting claims withdrawn), as it does for an interrupt during a
  step.

The wait also keeps one core busy: Dagster's loop computes its sleep as ``min(0, …)`` and so
never sleeps. Changing that needs Dagster's private API (test_layers.py forbids it); the watcher
makes the wait short (dead holders are cleared) and stoppable instead.
"""

from __future__ import annotations

import contextlib
import ctypes
import select
import signal
import socket
import threading
import time
from types import TracebackType

import dagster as dg

from lvm_pipeline.cli.console import (
    cleared_line,
    interrupted_line,
    notice,
    slot_limit_line,
    slot_wait_line,
)
from lvm_pipeline.defs.runs import (
    FINISHED,
    Slot,
    clear_run,
    dead_reason,
    ended_reason,
    find_run_process,
    pool_slots,
)

POLL_S = 2.0
# Between two lines about the same wait: the first at once, then less often (a wait behind a
# live training may last hours).
NOTICE_EVERY_S = (10.0, 20.0, 40.0, 60.0)  # then every minute
# After a signal, how long Dagster gets to act on it itself (a step that starts or runs raises
# at once) before the watcher looks whether the run only waits; and how long it keeps looking.
INTERRUPT_GRACE_S = 0.5
SIGNAL_WINDOW_S = 5.0
# How often the runs holding the slots this run waits for are checked for a dead process.
DEAD_CHECK_EVERY_S = 4.0
STOP_SIGNALS = {signal.SIGINT: "SIGINT", signal.SIGTERM: "SIGTERM"}


def _raise_in_thread(thread_id: int, exception: type[BaseException]) -> None:
    """Raise ``exception`` in thread ``thread_id`` at its next Python instruction (CPython's
    ``PyThreadState_SetAsyncExc``, the one way to interrupt a thread that ignores signals)."""
    ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(thread_id),
                                               ctypes.py_object(exception))


class SlotWatch:
    """Watches run ``run_id``, which the calling thread is about to execute, while the ``with``
    block runs; its lines go to stderr, above any progress bars."""

    def __init__(self, instance: dg.DagsterInstance, run_id: str) -> None:
        self.instance, self.run_id = instance, run_id
        self._target = threading.get_ident()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, name=f"lvm-slot-watch-{run_id[:8]}",
                                        daemon=True)
        self._signals: tuple[socket.socket, socket.socket] | None = None
        self._previous_wakeup_fd = -1

    def __enter__(self) -> SlotWatch:
        if threading.current_thread() is threading.main_thread():  # set_wakeup_fd's rule
            self._signals = socket.socketpair()
            for end in self._signals:
                end.setblocking(False)
            self._previous_wakeup_fd = signal.set_wakeup_fd(self._signals[0].fileno(),
                                                            warn_on_full_buffer=False)
        self._thread.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self._stop.set()
        if self._signals is not None:
            signal.set_wakeup_fd(self._previous_wakeup_fd)
            with contextlib.suppress(OSError):
                self._signals[0].send(b"\0")  # wake the thread now, not at its next poll
        self._thread.join()
        if self._signals is not None:
            for end in self._signals:
                end.close()

    # -------------------------------------------------------------------------- the thread

    def _received(self, timeout: float) -> list[int]:
        """Signal numbers that arrived within ``timeout`` s (0 is the wake-up of ``__exit__``)."""
        if self._signals is None:
            self._stop.wait(timeout)
            return []
        readable, _, _ = select.select([self._signals[1]], [], [], timeout)
        if not readable:
            return []
        with contextlib.suppress(BlockingIOError):
            return list(self._signals[1].recv(64))
        return []

    def _watch(self) -> None:
        waiting_since: float | None = None
        notices, checked = 0, 0.0
        # A stop signal not yet acted on: its name, and when (monotonic and wall clock).
        signalled: tuple[str, float, float] | None = None
        while not self._stop.is_set():
            arrived = [STOP_SIGNALS[s] for s in self._received(
                INTERRUPT_GRACE_S if signalled else POLL_S) if s in STOP_SIGNALS]
            if self._stop.is_set():
                return
            if arrived:
                signalled = signalled or (arrived[-1], time.monotonic(), time.time())
            try:
                held, waiting = pool_slots(self.instance)
                mine = [s for s in waiting if s.run_id == self.run_id]
                if signalled and time.monotonic() - signalled[1] >= INTERRUPT_GRACE_S:
                    if mine and not self._steps_took(signalled[2]):
                        notice(interrupted_line(signalled[0], self.run_id, mine))
                        _raise_in_thread(self._target, dg.DagsterExecutionInterruptedError)
                        return
                    if time.monotonic() - signalled[1] >= SIGNAL_WINDOW_S or not mine:
                        signalled = None  # Dagster acts on it when a step starts or runs
                if not mine:
                    waiting_since, notices, checked = None, 0, 0.0
                    continue
                now = time.monotonic()
                waiting_since = waiting_since or now
                others = [s for s in held if s.run_id != self.run_id]
                if now - checked >= DEAD_CHECK_EVERY_S:
                    checked = now
                    others = self._clear_dead(mine, others)
                if now - waiting_since >= sum(NOTICE_EVERY_S[min(i, len(NOTICE_EVERY_S) - 1)]
                                              for i in range(notices)):
                    notices += 1
                    self._tell(mine, others)
            except Exception:  # a busy SQLite file, say: the run matters more; ask again later
                continue

    def _steps_took(self, signalled_at: float) -> bool:
        """Whether Dagster acts on the signal itself: a step of this run is in progress (it is
        interrupted there), or one failed since the signal (it was)."""
        return any(s.status.value == "IN_PROGRESS"
                   or (s.status.value == "FAILURE" and (s.end_time or 0) >= signalled_at - 1)
                   for s in self.instance.get_run_step_stats(self.run_id))

    def _clear_dead(self, mine: list[Slot], others: list[Slot]) -> list[Slot]:
        """Clear each run holding a slot this run waits for whose process is gone, that ended
        without giving it back, or that is no longer recorded; the holders left."""
        alive = []
        for holder in others:
            if holder.pool not in {s.pool for s in mine}:
                continue
            run = self.instance.get_run_by_id(holder.run_id)
            if run is None or run.status in FINISHED:
                reason = ended_reason(run)
            elif (process := find_run_process(self.instance, run)).dead:
                reason = dead_reason(process)
            else:
                alive.append(holder)
                continue
            notice(cleared_line(clear_run(self.instance, holder.run_id, reason)))
        return alive

    def _tell(self, mine: list[Slot], others: list[Slot]) -> None:
        """One line per holder of a slot this run waits for."""
        for pool in sorted({s.pool for s in mine}):
            steps = [s.step_key for s in mine if s.pool == pool]
            holders = [s for s in others if s.pool == pool]
            if not holders:
                limit = self.instance.event_log_storage.get_concurrency_info(pool).limit
                if limit == 0:
                    notice(slot_limit_line(steps, pool, limit))
            for holder in holders:
                run = self.instance.get_run_by_id(holder.run_id)
                if run is not None:
                    notice(slot_wait_line(steps, holder, find_run_process(self.instance, run)))
