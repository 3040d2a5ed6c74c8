"""``lvm runs``: the runs of the instance that have not ended or that hold pool slots, with
whether their process is alive; ``lvm runs clear RUN`` ends one whose process is gone and frees
its slots (the instance logic: lvm_pipeline/defs/runs.py)."""

from __future__ import annotations

import argparse
from typing import Any

from lvm_pipeline.cli.common import (
    EXIT_OK,
    CliError,
    UsageError,
    add_command,
    instance_home,
    resolve_data_dir,
)

EPILOG = """\
A run whose process was killed (SIGKILL, out of memory, a machine restarted) never records its
end: it stays STARTED and keeps its pool slots, and the steps of every later run in that pool
(the five trainings share `training`) wait for it. `lvm run` and `lvm materialize` clear such
runs before they start, a waiting run clears the run it waits for once its process is gone, and
the sensor `clear_dead_runs` does it every minute under `lvm ui`; all only for processes on this
machine. `lvm runs clear RUN` does it by hand.

examples:
  lvm runs                          unfinished runs, their process, the slots they hold or wait for
  lvm runs clear 1a2b3c4d           end a dead run (a unique prefix of its id is enough)
  lvm runs clear 1a2b3c4d --force   end it although its process is alive or cannot be checked

exit codes: 0 success, 1 the run is alive (or cannot be checked) without --force, or no such
run, 2 a usage error (an ambiguous prefix).
"""

# How far back a prefix given to `lvm runs clear` is looked up, besides the runs it lists.
RECENT = 100


def _open(data_dir: Any) -> Any:
    """The data dir's instance, or None when no run was ever recorded there (nothing is created
    by looking)."""
    from lvm_pipeline.cli.runner import open_instance

    home = instance_home(data_dir)
    return open_instance(home) if (home / "dagster.yaml").exists() else None


def _rows(instance: Any) -> list[tuple[Any, Any, list, list]]:
    """(run, its process, the slots it holds, the slots it waits for) for every run that has
    not ended or appears in a pool, newest first; a run the instance no longer records is its
    id, with no process."""
    import dagster as dg

    from lvm_pipeline.defs.runs import UNFINISHED, find_run_process, pool_slots

    held, waiting = pool_slots(instance)
    runs = {r.run_id: r for r in instance.get_runs(dg.RunsFilter(statuses=list(UNFINISHED)))}
    ids = list(runs) + sorted({s.run_id for s in held + waiting} - set(runs))
    rows = []
    for run_id in ids:
        run = runs.get(run_id) or instance.get_run_by_id(run_id)
        process = find_run_process(instance, run) if run else None
        rows.append((run or run_id, process, [s for s in held if s.run_id == run_id],
                     [s for s in waiting if s.run_id == run_id]))
    return rows


def cmd_runs(args: argparse.Namespace) -> int:
    from lvm_pipeline.cli.console import short_run_id, when
    from lvm_pipeline.defs.runs import UNFINISHED

    data_dir = resolve_data_dir(args.data_dir)
    instance = _open(data_dir)
    if instance is None:
        print(f"no Dagster instance at {instance_home(data_dir)}: no run recorded")
        return EXIT_OK
    with instance:
        rows = _rows(instance)
    if not rows:
        print("no unfinished run, and no run holds a pool slot")
        return EXIT_OK
    dead = []
    for run, process, held, waiting in rows:
        if isinstance(run, str):  # slots of a run the instance no longer has
            print(f"{short_run_id(run)}  (not recorded)")
            dead.append(run)
        else:
            print(f"{short_run_id(run.run_id)}  {run.status.value:<9} {run.job_name}  "
                  f"started {when(process.started)}  {process.evidence}")
            if process.dead or run.status not in UNFINISHED:
                dead.append(run.run_id)
        for slot in held:
            print(f"          holds the {slot.pool!r} slot: {slot.step_key} since "
                  f"{when(slot.since)}")
        for slot in waiting:
            print(f"          waits for a {slot.pool!r} slot: {slot.step_key} since "
                  f"{when(slot.since)}")
    if dead:
        print(f"\nto end the dead runs and free their slots: "
              f"{'; '.join(f'lvm runs clear {short_run_id(r)}' for r in dead)} (lvm run and "
              "lvm materialize do it before they start)")
    return EXIT_OK


def _resolve(instance: Any, prefix: str) -> str:
    """The run id ``prefix`` names: a whole id, or a unique prefix of the id of a run
    ``lvm runs`` lists or of one of the last ``RECENT`` runs."""
    if instance.get_run_by_id(prefix) is not None:
        return prefix
    candidates = sorted({(run if isinstance(run, str) else run.run_id)
                         for run, *_ in _rows(instance)}
                        | {run.run_id for run in instance.get_runs(limit=RECENT)})
    matches = [c for c in candidates if c.startswith(prefix)]
    if not matches:
        raise CliError(f"no run has an id starting with {prefix!r} (among the unfinished runs, "
                       f"those in a pool and the last {RECENT})", hint="`lvm runs`")
    if len(matches) > 1:
        raise UsageError(f"{prefix!r} is the start of {len(matches)} run ids "
                         f"({', '.join(matches)}); give more of it")
    return matches[0]


def cmd_clear(args: argparse.Namespace) -> int:
    from lvm_pipeline.cli.console import cleared_line, short_run_id
    from lvm_pipeline.defs.runs import (
        UNFINISHED,
        clear_run,
        dead_reason,
        ended_reason,
        find_run_process,
        pool_slots,
    )

    data_dir = resolve_data_dir(args.data_dir)
    instance = _open(data_dir)
    if instance is None:
        raise CliError(f"no Dagster instance at {instance_home(data_dir)}: no run recorded")
    with instance:
        run_id = _resolve(instance, args.run_id)
        run = instance.get_run_by_id(run_id)
        held, waiting = pool_slots(instance)
        in_pools = any(s.run_id == run_id for s in held + waiting)
        short = short_run_id(run_id)
        if run is not None and run.status not in UNFINISHED and not in_pools:
            print(f"run {short} already ended ({run.status.value}) and holds no pool slot: "
                  "nothing to clear")
            return EXIT_OK
        if run is None or run.status not in UNFINISHED:
            reason = ended_reason(run)
        else:
            process = find_run_process(instance, run)
            if process.dead:
                reason = dead_reason(process)
            elif not args.force:
                kill = f"; stop it with `kill {process.pid}`" if process.alive else ""
                raise CliError(
                    f"run {short} may still be running ({process.evidence}){kill}; "
                    "`lvm runs clear --force` ends it in the instance anyway (its slots go to "
                    "the next run even if it still trains)")
            else:
                reason = f"cleared by hand with --force ({process.evidence})"
        print(cleared_line(clear_run(instance, run_id, reason)))
    return EXIT_OK


def register(sub: argparse._SubParsersAction) -> None:
    runs = add_command(
        sub, "runs", "List unfinished runs and who holds the pool slots; `lvm runs clear RUN` "
                     "ends a run whose process died.",
        description="List the runs of the instance that have not ended or hold pool slots: "
                    "status, job, start,\nwhether their process is alive on this machine, "
                    "and the slots they hold or wait for.\n`lvm runs clear RUN` marks a dead "
                    "run failed and frees its slots.",
        epilog=EPILOG)
    runs.set_defaults(func=cmd_runs)
    actions = runs.add_subparsers(dest="action", metavar="ACTION")
    clear = actions.add_parser(
        "clear", help="mark a dead run failed and free its pool slots",
        description="Mark run RUN failed (canceled if it was being canceled) and free every "
                    "pool slot its steps hold\nor wait for. Refused while its process is alive "
                    "on this machine, or cannot be checked\nfrom here, unless --force.",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    clear.add_argument("run_id", metavar="RUN", help="a run id, or a unique prefix of one")
    clear.add_argument("--force", action="store_true",
                       help="clear it even though its process is alive or cannot be checked")
    # SUPPRESS: `lvm runs --data-dir D clear RUN` keeps D (a None default would replace it).
    clear.add_argument("--data-dir", default=argparse.SUPPRESS,
                       help="artifact root (env LVM_DATA_DIR; default ./data)")
    clear.set_defaults(func=cmd_clear)
