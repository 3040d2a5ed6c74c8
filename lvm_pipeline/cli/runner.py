"""The one in-process runner: ``lvm run``, ``lvm materialize``, ``lvm check``, the reference
imports and the tests all execute (part of) the graph through :func:`execute`, recorded in the
data dir's Dagster instance (:func:`open_instance`), so the UI shows every run.

What it decides, once for all of them:
- the definitions are loaded once per process (:func:`definitions`);
- the artifact root is bound to the data dir the caller names (never to whatever the
  environment said when the definitions were loaded), and any resource can be replaced;
- a run is the ``full_retrain`` job or the implicit asset job cut to a selection of assets and
  checks, the jobs the UI launches, and it carries the code location's label, so it shows on
  the job's page and the Overview timeline like a run launched from the UI;
- a console (:class:`Console`) replaces Dagster's console logger with ours (cli/console.py);
- no run waits behind a dead one: before it starts, the runs of the instance whose process is
  gone from this machine are marked failed and their pool slots freed, and each run records its
  own process (pid and host) in its tags so that a later run can tell (defs/runs.py);
- a step waiting for a pool slot says so, names the run that holds it, and stops on SIGINT or
  SIGTERM (cli/slot_wait.py).
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import shutil
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import dagster as dg

from lvm_pipeline.cli.console import CONSOLE_LOGGER, cleared_line, console_logger, notice
from lvm_pipeline.cli.slot_wait import SlotWatch
from lvm_pipeline.definitions import defs
from lvm_pipeline.defs.io_manager import storage_resources
from lvm_pipeline.defs.resources import ProgressResource, StorageResource
from lvm_pipeline.defs.runs import clear_dead_runs, process_tags

PROJECT_ROOT = Path(__file__).resolve().parents[2]
# The instance configuration `lvm` copies into a data dir's DAGSTER_HOME that has none.
INSTANCE_YAML = PROJECT_ROOT / "dagster.yaml"
# The label of the code location workspace.yaml loads: Dagster's job page and Overview list a
# run of a job only when the run carries it (the UI's own launches get it from the workspace).
CODE_LOCATION = "lvm_pipeline"
REPOSITORY_TAG = ".dagster/repository"
REPOSITORY_LABEL = f"__repository__@{CODE_LOCATION}"


@functools.cache
def definitions() -> dg.Definitions:
    """The project's ``Definitions``, loaded once per process."""
    return defs()


@contextlib.contextmanager
def _instance_lock(home: Path) -> Iterator[None]:
    """Held while an instance is opened: opening a fresh SQLite instance creates its tables,
    and two processes doing that at once fail with "table … already exists" (seen with two
    parallel first runs); once created, opening is cheap and runs proceed in parallel."""
    with open(home / ".lvm-instance.lock", "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        yield


def open_instance(home: Path) -> dg.DagsterInstance:
    """The Dagster instance at ``home`` (use it in a ``with``), given the repository's
    ``dagster.yaml`` first if it has none (an existing one, e.g. Postgres, is kept)."""
    home.mkdir(parents=True, exist_ok=True)
    if not (home / "dagster.yaml").exists():
        shutil.copyfile(INSTANCE_YAML, home / "dagster.yaml")
    with _instance_lock(home):
        return dg.DagsterInstance.from_config(str(home))


@dataclass(frozen=True)
class Console:
    """Our console instead of Dagster's: step and check results at ``log_level``, and progress
    bars when ``bars`` (the command started on a terminal)."""

    log_level: str = "INFO"
    bars: bool = False


def _job(run_defs: dg.Definitions, job: str | None,
         selection: dg.AssetSelection | None) -> dg.JobDefinition:
    """``job`` by name, or the implicit asset job cut to the assets and checks ``selection``
    resolves to (every asset when None)."""
    if job is not None:
        return run_defs.resolve_job_def(job)
    whole = run_defs.resolve_implicit_global_asset_job_def()
    if selection is None:
        return whole
    graph = run_defs.resolve_asset_graph()
    return whole.get_subset(
        asset_selection=selection.resolve(graph) & set(graph.materializable_asset_keys),
        asset_check_selection=selection.resolve_checks(graph))


def execute(data_dir: Path, instance: dg.DagsterInstance, *, job: str | None = None,
            selection: dg.AssetSelection | None = None,
            run_config: dg.RunConfig | None = None,
            resources: Mapping[str, Any] | None = None,
            tags: Mapping[str, str] | None = None,
            console: Console | None = None) -> dg.ExecuteInProcessResult:
    """Run ``job`` (or the asset ``selection``, checks included) in this process against
    ``data_dir``, recorded in ``instance``; ``resources`` replace the definitions' ones.
    Never raises on a failed step: the result says what happened (an interrupt while waiting
    for a pool slot fails the run, as one during a step does)."""
    loaded = definitions()
    bound = {**loaded.resources, **storage_resources(StorageResource(root=str(data_dir))),
             "progress": ProgressResource(bars=bool(console and console.bars)),
             **(resources or {})}
    run_defs = dg.Definitions(assets=loaded.assets, asset_checks=loaded.asset_checks,
                              jobs=loaded.jobs, resources=bound)
    chosen = _job(run_defs, job, selection)
    config = run_config or dg.RunConfig()
    if console is not None:
        chosen = chosen.with_logger_defs({CONSOLE_LOGGER: console_logger})
        config = dg.RunConfig(ops=config.ops, resources=config.resources,
                              execution=config.execution, loggers={CONSOLE_LOGGER: {"config": {
                                  "log_level": console.log_level, "bars": console.bars}}})
    for cleared in clear_dead_runs(instance):
        notice(cleared_line(cleared))
    run_id = str(uuid.uuid4())
    with SlotWatch(instance, run_id):
        return chosen.execute_in_process(
            run_config=config, instance=instance, run_id=run_id, raise_on_error=False,
            tags={REPOSITORY_TAG: REPOSITORY_LABEL, **process_tags(), **(tags or {})})
