"""Resources: where artifacts live and how inputs find their builds (both in defs/storage.py),
which encoder embeds, how articles split, guard thresholds, the promotion gate's margin, where
trainings and reports are tracked (MLflow), and the Pipes client that launches multi-process
training.

Each is a typed ``ConfigurableResource`` that tests swap (``materialize(..., resources=...)``)
and that the UI's launchpad can override per run.
"""

import contextlib
import dataclasses
import functools
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import dagster as dg

from lvm_pipeline.defs.io_manager import OPTIONAL_INPUT, BuildIOManager, StorageResource
from lvm_pipeline.embedding import DEFAULT_EMBEDDER, Embedder, EmbedderConfig
from lvm_pipeline.guards import GuardConfig
from lvm_pipeline.report import PromotionConfig
from lvm_pipeline.runtime import DEFAULT_EXPERIMENT, TrackedRun, TrackingConfig, start_run
from lvm_pipeline.sequences import SplitConfig
from lvm_pipeline.synthetic import SPEC_PREFIX, SyntheticEncoder, SyntheticPayloadConfig


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
    """The promotion gate's tolerance (lvm_pipeline/report/promotion.py): ``margin`` is the MRR@10 a
    candidate may lose against the promoted model and still be promoted."""

    margin: float = PromotionConfig.margin

    def config(self) -> PromotionConfig:
        return PromotionConfig(margin=self.margin)


class TrackingResource(dg.ConfigurableResource):
    """MLflow runs of the trainings and the reports (lvm_pipeline/runtime/tracking.py).

    ``enabled`` False, or env ``LVM_TRACKING=off`` (what `lvm run --no-tracking` sets), records
    nothing. ``tracking_uri`` empty: ``MLFLOW_TRACKING_URI``, else SQLite under the data dir.
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


def storage_resources(root: str = "", mirror_url: str = "") -> dict[str, dg.ConfigurableResource]:
    """The storage resource and the two IO managers over it, which must share one root: what a
    test or the CLI replaces to run against another data dir (empty root: ``LVM_DATA_DIR``)."""
    storage = StorageResource(root=root, mirror_url=mirror_url)
    return {"storage": storage,
            # Every asset's output and input: builds found through the instance's records.
            "io_manager": BuildIOManager(storage=storage),
            OPTIONAL_INPUT: BuildIOManager(storage=storage, missing_is_none=True)}


@dg.definitions
def resources() -> dg.Definitions:
    return dg.Definitions(resources={
        **storage_resources(),
        "embedder": EmbedderResource(),
        "splits": SplitResource(),
        "guards": GuardsResource(),
        "promotion": PromotionResource(),
        "tracking": TrackingResource(),
        # Launches torchrun for data-parallel training (world_size > 1) and streams its
        # logs and reported metadata back into the materialization.
        "pipes_subprocess_client": dg.PipesSubprocessClient(),
    })
