"""Resources: where artifacts live, which encoder embeds, how articles split, guard thresholds,
the promotion gate's margin, where trainings and reports are tracked (MLflow), how steps show
progress, and the Pipes client that launches multi-process training. (How inputs find their
builds is the IO manager's, :mod:`lvm_pipeline.defs.io_manager`.)

Each is a typed ``ConfigurableResource`` that tests swap (``materialize(..., resources=...)``)
and that the UI's launchpad can override per run. Settings reach the code only through them:
where the environment is the source (a deployment's data dir, mirror or tracking server), the
definitions read it as a Dagster ``EnvVar``, resolved when a run starts; nothing here, and no
domain module, writes an environment variable.
"""

import contextlib
import dataclasses
import functools
import os
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import dagster as dg

from lvm_pipeline.embedding import DEFAULT_EMBEDDER, Embedder, EmbedderConfig
from lvm_pipeline.guards import GuardConfig
from lvm_pipeline.report import PromotionConfig
from lvm_pipeline.runtime import (
    DEFAULT_EXPERIMENT,
    Describe,
    Progress,
    TrackedRun,
    TrackingConfig,
    make_progress,
    start_run,
)
from lvm_pipeline.sequences import SplitConfig
from lvm_pipeline.store import ArtifactStore, open_store
from lvm_pipeline.synthetic import SPEC_PREFIX, SyntheticEncoder, SyntheticPayloadConfig

# Environment variables a deployment sets (docs/deploy.md); `lvm ui` sets the first for the
# processes it starts.
DATA_DIR_ENV, MIRROR_ENV = "LVM_DATA_DIR", "LVM_ARTIFACT_MIRROR"
TRACKING_ENV, TRACKING_URI_ENV = "LVM_TRACKING", "MLFLOW_TRACKING_URI"
PICKLE_IMPORTS_ENV = "LVM_PICKLE_IMPORTS"


class StorageResource(dg.ConfigurableResource):
    """The artifact root every asset reads from and writes to.

    ``root``: the data dir. ``mirror_url`` (e.g. ``s3://bucket/lvm``): share builds between
    machines through an object store; ``root`` stays the local working copy
    (:mod:`lvm_pipeline.store.remote` says why). Empty: local only.
    """

    root: str
    mirror_url: str = ""

    def store(self) -> ArtifactStore:
        return open_store(self.root, self.mirror_url)


def _from_environment(name: str, default: str) -> str | dg.EnvVar:
    """``name`` as a Dagster ``EnvVar`` when the environment sets it (resolved when a run
    starts, so a changed value needs no reload), else ``default``."""
    return dg.EnvVar(name) if os.environ.get(name) else default


def storage_from_environment() -> StorageResource:
    """The storage of the definitions the UI, the daemon and the schedule load: the data dir
    ``LVM_DATA_DIR`` (else ``./data`` of the process's folder) and mirror ``LVM_ARTIFACT_MIRROR``
    (else none). ``lvm`` itself binds the data dir it was given instead."""
    return StorageResource(root=_from_environment(DATA_DIR_ENV, str(Path("data").resolve())),
                           mirror_url=_from_environment(MIRROR_ENV, ""))


@functools.lru_cache(maxsize=4)
def _load_embedder(config: EmbedderConfig) -> Embedder | SyntheticEncoder:
    if config.model.startswith(SPEC_PREFIX):
        return SyntheticEncoder(SyntheticPayloadConfig.from_spec(config.model))
    return Embedder(config)


class EmbedderResource(dg.ConfigurableResource):
    """The encoder of the payload (and of the canary that re-checks it).

    ``model``: a bundled or local sentence-transformers model, or a synthetic payload's
    generator spec (``synthetic:…``, what `lvm run --payload` sets for a synthetic payload).
    ``batch_size`` (texts per forward pass; unset: by device) and ``length_multiple`` shape
    the forward passes, and so the vectors' bytes (:class:`EmbedderConfig`).
    """

    model: str = DEFAULT_EMBEDDER
    batch_size: int | None = EmbedderConfig.batch_size
    length_multiple: int = EmbedderConfig.length_multiple
    device: str = EmbedderConfig.device
    precision: str = EmbedderConfig.precision

    def config(self) -> EmbedderConfig:
        return EmbedderConfig(model=self.model, batch_size=self.batch_size,
                              length_multiple=self.length_multiple, device=self.device,
                              precision=self.precision)

    def load(self) -> Embedder | SyntheticEncoder:
        """Loaded once per process: the payload asset and the canary check share it."""
        return _load_embedder(self.config())


class SplitResource(dg.ConfigurableResource):
    """The article split shared by both sequence assets, so they can never disagree."""

    seed: int = 0
    val_fraction: float = 0.1
    eval_fraction: float = 0.1
    near_duplicate_cosine: float = SplitConfig.near_duplicate_cosine

    def config(self) -> SplitConfig:
        return SplitConfig(self.seed, self.val_fraction, self.eval_fraction,
                           self.near_duplicate_cosine)


class GuardsResource(dg.ConfigurableResource):
    """Thresholds of the guards; the checks and the consuming assets read the same values.

    One field per :class:`~lvm_pipeline.guards.GuardConfig` field, same name and default
    (a test holds them equal).
    """

    min_alignment_cosine: float = GuardConfig.min_alignment_cosine
    max_norm_error: float = GuardConfig.max_norm_error
    canary_sample: int = GuardConfig.canary_sample
    min_canary_cosine: float = GuardConfig.min_canary_cosine
    near_duplicate_cosine: float = GuardConfig.near_duplicate_cosine
    learnability_k: int = GuardConfig.learnability_k
    min_learnability_ratio: float = GuardConfig.min_learnability_ratio
    learnability_max_windows: int = GuardConfig.learnability_max_windows
    learnability_max_queries: int = GuardConfig.learnability_max_queries
    min_index_self_recall: float = GuardConfig.min_index_self_recall
    seed: int = GuardConfig.seed

    def config(self) -> GuardConfig:
        return GuardConfig(**{f.name: getattr(self, f.name)
                              for f in dataclasses.fields(GuardConfig)})


class PromotionResource(dg.ConfigurableResource):
    """The promotion gate's tolerance (lvm_pipeline/report/promotion.py): ``margin`` is the
    MRR@10 a candidate may lose against the promoted model and still be promoted;
    ``resolution`` the widest MRR@10 interval half-width at which the gate decides at all."""

    margin: float = PromotionConfig.margin
    resolution: float = PromotionConfig.resolution

    def config(self) -> PromotionConfig:
        return PromotionConfig(margin=self.margin, resolution=self.resolution)


class TrackingResource(dg.ConfigurableResource):
    """MLflow runs of the trainings and the reports (lvm_pipeline/runtime/tracking.py).

    ``enabled`` False records nothing (`lvm run --no-tracking`; a deployment sets
    ``LVM_TRACKING=off``). ``tracking_uri`` empty: SQLite under the data dir (a deployment's
    ``MLFLOW_TRACKING_URI`` fills it).
    """

    enabled: bool = True
    tracking_uri: str = ""
    experiment: str = DEFAULT_EXPERIMENT

    def config(self) -> TrackingConfig:
        return TrackingConfig(enabled=self.enabled, uri=self.tracking_uri,
                              experiment=self.experiment)

    @contextlib.contextmanager
    def start_run(self, context: dg.AssetExecutionContext, data_dir: Path,
                  params: Mapping[str, Any] | None = None,
                  tags: Mapping[str, Any] | None = None) -> Iterator[TrackedRun]:
        """A run named after the asset, tagged with the Dagster run that made it."""
        name = context.asset_key.to_user_string()
        with start_run(self.config(), data_dir, name, params, {
                "dagster.run_id": context.run.run_id, "dagster.asset": name, **(tags or {})}) as run:
            yield run


def tracking_from_environment() -> TrackingResource:
    """Tracking as a deployment's environment sets it: off with ``LVM_TRACKING=off``, to the
    server ``MLFLOW_TRACKING_URI`` names."""
    return TrackingResource(
        enabled=os.environ.get(TRACKING_ENV, "").strip().lower() != "off",
        tracking_uri=_from_environment(TRACKING_URI_ENV, ""))


class PickleImportsResource(dg.ConfigurableResource):
    """Whether a run may unpickle the reference project's payload (``import_npy`` with
    ``allow_pickle``). Unpickling runs code from the file, so asking for it in a run's config is
    not enough: the deployment must allow it too. `lvm import-payload --allow-pickle` allows it
    for its own run; a UI allows it only when started with `lvm ui --allow-pickle-imports`, since
    anyone who reaches the UI can fill in a launchpad."""

    allowed: bool = False

    def require(self, asked: bool, path: str) -> None:
        """Refuse a pickled import unless both the run asked and the deployment allows."""
        if not asked:
            raise ValueError(f"{path}: a pickled reference payload; unpickling executes code "
                             "stored in the file, so it needs `allow_pickle: true`")
        if not self.allowed:
            raise ValueError(f"{path}: pickled imports are not allowed in this deployment "
                             "(they execute code from the file); use `lvm import-payload "
                             f"{path} --allow-pickle`, or start the UI with `lvm ui "
                             "--allow-pickle-imports` if everyone who can reach it may")


class ProgressResource(dg.ConfigurableResource):
    """How long steps show their progress: always as throttled lines in the run's log, and as
    tqdm bars when ``bars`` (what `lvm run` sets when it started on a terminal; a step cannot
    tell by itself, since Dagster hands it a capture pipe for stderr)."""

    bars: bool = False

    def for_step(self, context: dg.AssetExecutionContext | dg.AssetCheckExecutionContext,
                 task: str, unit: str = "", every_s: float = 5.0,
                 describe: Describe | None = None) -> Progress:
        """Progress of ``task`` in ``context``'s run log, at most every ``every_s`` seconds (and
        at the end), counted in ``unit`` or worded by ``describe``."""
        return make_progress(task, log=context.log.info, every_s=every_s, bar=self.bars,
                             unit=unit, describe=describe)


@dg.definitions
def resources() -> dg.Definitions:
    return dg.Definitions(resources={
        "embedder": EmbedderResource(),
        "splits": SplitResource(),
        "guards": GuardsResource(),
        "promotion": PromotionResource(),
        "tracking": tracking_from_environment(),
        "progress": ProgressResource(),
        # Set for the processes of a UI started with `lvm ui --allow-pickle-imports` only.
        "pickle_imports": PickleImportsResource(
            allowed=os.environ.get(PICKLE_IMPORTS_ENV, "") == "allowed"),
        # Launches torchrun for data-parallel training (world_size > 1) and streams its
        # logs and reported metadata back into the materialization.
        "pipes_subprocess_client": dg.PipesSubprocessClient(),
    })
