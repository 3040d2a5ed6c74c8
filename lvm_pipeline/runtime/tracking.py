"""Experiment tracking: every training and every report as an MLflow run.

Where the runs go (:func:`tracking_uri`): the config's ``uri`` (a server, or any store MLflow
knows; the Dagster layer fills it from ``MLFLOW_TRACKING_URI``), else SQLite under the data root,
``<data dir>/mlflow/mlflow.db``, with the runs' files in ``<data dir>/mlflow/artifacts``: no
server to run, and the runs travel with a copy of the data dir like the Dagster instance does
(a copy's store is pointed at its own files when it is first opened there).
Not MLflow's ``file:`` store: MLflow 3.x keeps it in maintenance mode and refuses to open it
unless ``MLFLOW_ALLOW_FILE_STORE`` is set; SQLite is its default and needs only SQLAlchemy and
alembic, which Dagster already installs, so ``mlflow-skinny`` suffices (benchmarks/RESULTS.md
compares it with the full ``mlflow``).

Off (``TrackingConfig(enabled=False)``): :func:`start_run` yields a run that records nothing,
MLflow is never imported and nothing is written.

MLflow is imported on the first tracked run, never when this module is imported: it costs
seconds, which ``lvm --help`` and the definitions' import must not pay. Runs go through
:class:`mlflow.MlflowClient`, not the fluent ``mlflow.start_run``: the fluent API keeps one
active run per process, which the steps of an in-process Dagster run would share.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import warnings
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lvm_pipeline.store import Build

DEFAULT_EXPERIMENT = "lvm-pipeline"
# The tracking store's folder under the data root (SQLite file and the runs' artifacts).
STORE_DIR = "mlflow"
# The runs' files, beside the database: <data dir>/mlflow/artifacts.
ARTIFACTS = "artifacts"
# MLflow's limits per log_batch call (params per call, metrics per call).
_MAX_PARAMS, _MAX_METRICS = 100, 1000


@dataclass(frozen=True)
class TrackingConfig:
    """``uri`` empty: SQLite under the data dir."""

    enabled: bool = True
    uri: str = ""
    experiment: str = DEFAULT_EXPERIMENT


def store_dir(data_dir: Path) -> Path:
    return Path(data_dir) / STORE_DIR


def default_uri(data_dir: Path) -> str:
    """The SQLite store under the data root (four slashes: an absolute path)."""
    return f"sqlite:///{(store_dir(data_dir) / 'mlflow.db').resolve()}"


def tracking_uri(config: TrackingConfig, data_dir: Path) -> str:
    """The store a run started with ``config`` under ``data_dir`` is written to."""
    return config.uri or default_uri(data_dir)


def flatten(values: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    """Nested config as MLflow params: ``{"train": {"lr": 1e-3}}`` → ``{"train.lr": "0.001"}``."""
    out: dict[str, str] = {}
    for key, value in values.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            out.update(flatten(value, f"{name}."))
        else:
            out[name] = str(value)
    return out


def numeric(values: Mapping[str, Any]) -> dict[str, float]:
    """The entries MLflow can plot: numbers (not bools), finite; the rest are not metrics."""
    return {k: float(v) for k, v in values.items()
            if isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)}


def _import_mlflow() -> Any:
    """MLflow, quiet: its INFO lines ("Creating initial MLflow database tables…") would land
    between our own on the console; ``MLFLOW_LOGGING_LEVEL`` still wins when set."""
    import mlflow

    if not os.environ.get("MLFLOW_LOGGING_LEVEL"):
        logging.getLogger("mlflow").setLevel(logging.WARNING)
    return mlflow


@contextlib.contextmanager
def _store_lock(data_dir: Path) -> Iterator[None]:
    """Held while the default store is opened: opening a new one runs its migrations, which
    two processes must not run at once on one file (Dagster's SQLite instance failed so,
    cli/common.py)."""
    import fcntl

    store_dir(data_dir).mkdir(parents=True, exist_ok=True)
    with open(store_dir(data_dir) / ".lock", "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        yield


def _rebase_copied_store(data_dir: Path) -> None:
    """Point a copied (or moved) data dir's store at its own files. MLflow records each
    experiment's and run's artifact location as an absolute URI, so a ``cp -a`` of a data dir
    would log into, and show the files of, the original's ``mlflow/artifacts``; rewriting the
    prefix (SQL on MLflow's ``experiments`` and ``runs`` tables, the only places it is kept)
    makes the copy independent. Call under :func:`_store_lock`."""
    import sqlite3

    database = store_dir(data_dir) / "mlflow.db"
    if not database.exists():
        return
    here = (store_dir(data_dir) / ARTIFACTS).resolve().as_uri()
    with contextlib.closing(sqlite3.connect(database)) as db, db:
        tables = {row[0] for row in db.execute("SELECT name FROM sqlite_master")}
        if not {"experiments", "runs"} <= tables:
            return
        suffix = f"/{STORE_DIR}/{ARTIFACTS}"
        for (location,) in db.execute("SELECT DISTINCT artifact_location FROM experiments "
                                      "WHERE artifact_location LIKE ?", (f"%{suffix}",)).fetchall():
            if location == here:
                continue
            db.execute("UPDATE experiments SET artifact_location = ? WHERE artifact_location = ?",
                       (here, location))
            db.execute("UPDATE runs SET artifact_uri = ? || substr(artifact_uri, ?) "
                       "WHERE substr(artifact_uri, 1, ?) = ?",
                       (here, len(location) + 1, len(location), location))


class TrackedRun:
    """One MLflow run; every method writes through at once, so a crash keeps what was logged."""

    def __init__(self, client: Any, run_id: str) -> None:
        self._client = client
        self.run_id: str | None = run_id

    def log_params(self, params: Mapping[str, Any]) -> None:
        from mlflow.entities import Param

        items = [Param(k, v) for k, v in flatten(params).items()]
        for lo in range(0, len(items), _MAX_PARAMS):
            self._client.log_batch(self.run_id, params=items[lo:lo + _MAX_PARAMS])

    def log_metrics(self, metrics: Mapping[str, Any], step: int = 0) -> None:
        """The numeric entries of ``metrics`` at ``step`` (others are skipped)."""
        import time

        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        items = [Metric(k, v, now, step) for k, v in numeric(metrics).items()]
        for lo in range(0, len(items), _MAX_METRICS):
            self._client.log_batch(self.run_id, metrics=items[lo:lo + _MAX_METRICS])

    def set_tags(self, tags: Mapping[str, Any]) -> None:
        from mlflow.entities import RunTag

        self._client.log_batch(self.run_id, tags=[RunTag(k, str(v)) for k, v in tags.items()])

    def log_artifact(self, path: Path, folder: str | None = None) -> None:
        self._client.log_artifact(self.run_id, str(path), folder)

    def record_build(self, build: Build, metrics: Mapping[str, Any] | None = None) -> None:
        """What the run produced: the build id, its kind and lineage (each upstream build id,
        as the manifest records it) as tags, and its figures as metrics."""
        upstream = build.manifest.get("upstream", {})
        self.set_tags({"lvm.build_id": build.build_id, "lvm.kind": build.kind,
                       **{f"lvm.upstream.{kind}": bid for kind, bid in upstream.items()}})
        self.log_metrics(metrics or {})

    def log_build_files(self, build: Build, names: Iterable[str]) -> None:
        """Copies of some of the build's files, in the same folders (``plots/…``)."""
        for name in names:
            folder = str(Path(name).parent)
            self.log_artifact(build.path / name, None if folder == "." else folder)

    def log_history(self, history: Iterable[Mapping[str, Any]]) -> None:
        """Per-epoch records as a checkpoint's history holds them (``epoch`` plus figures),
        for epochs that did not come through :meth:`progress` (a resumed or torchrun run)."""
        for record in history:
            self.log_metrics({k: v for k, v in record.items() if k != "epoch"},
                             step=int(record["epoch"]))

    def progress(self, done: int, total: int, **metrics: Any) -> None:
        """A :class:`~lvm_pipeline.runtime.progress.Progress`: unit ``done`` (an epoch, for training)
        logs its figures at step ``done - 1``, the 0-based index the checkpoint's history uses.
        The trainer's in-epoch reports (``windows_done``…) are feedback on the terminal and in
        the run's log, not an epoch's figures, and are not logged."""
        if "windows_done" in metrics:
            return
        self.log_metrics(metrics, step=done - 1)


class UntrackedRun(TrackedRun):
    """What :func:`start_run` yields when tracking is off: records nothing."""

    def __init__(self) -> None:
        self.run_id = None

    def log_params(self, params: Mapping[str, Any]) -> None:
        pass

    def log_metrics(self, metrics: Mapping[str, Any], step: int = 0) -> None:
        pass

    def set_tags(self, tags: Mapping[str, Any]) -> None:
        pass

    def log_artifact(self, path: Path, folder: str | None = None) -> None:
        pass


def _experiment_id(mlflow: Any, client: Any, name: str, artifacts: Path | None) -> str:
    """The id of experiment ``name``, created (with its files in ``artifacts``) if new."""
    experiment = client.get_experiment_by_name(name)
    if experiment is not None:
        return str(experiment.experiment_id)
    location = artifacts.resolve().as_uri() if artifacts is not None else None
    try:
        return str(client.create_experiment(name, artifact_location=location))
    except mlflow.exceptions.MlflowException:  # another process created it meanwhile
        experiment = client.get_experiment_by_name(name)
        if experiment is None:
            raise
        return str(experiment.experiment_id)


@contextlib.contextmanager
def start_run(config: TrackingConfig, data_dir: Path, name: str,
              params: Mapping[str, Any] | None = None,
              tags: Mapping[str, Any] | None = None) -> Iterator[TrackedRun]:
    """An MLflow run named ``name`` in ``config.experiment``, ended FINISHED when the block
    completes and FAILED when it raises (the error still propagates)."""
    if not config.enabled:
        yield UntrackedRun()
        return
    mlflow = _import_mlflow()
    uri = tracking_uri(config, data_dir)
    local = uri == default_uri(data_dir)
    with (_store_lock(data_dir) if local else contextlib.nullcontext(),
          warnings.catch_warnings()):
        # MLflow's SQLAlchemy store uses a loader SQLAlchemy 2.1 deprecates; the warning is
        # MLflow's to fix and says nothing to a user of this pipeline.
        warnings.filterwarnings("ignore", category=DeprecationWarning, module=r"mlflow\.")
        if local:
            _rebase_copied_store(data_dir)
        client = mlflow.MlflowClient(tracking_uri=uri)
        # The default store keeps the runs' files beside its database (MLflow's own default
        # for SQLite is ./mlartifacts, under whatever folder the process runs in); a server
        # decides for itself.
        experiment_id = _experiment_id(mlflow, client, config.experiment,
                                       store_dir(data_dir) / ARTIFACTS if local else None)
    run = TrackedRun(client, client.create_run(experiment_id, run_name=name,
                                               tags=dict(tags or {})).info.run_id)
    try:
        if params:
            run.log_params(params)
        yield run
    except BaseException:
        client.set_terminated(run.run_id, "FAILED")
        raise
    client.set_terminated(run.run_id, "FINISHED")
