"""Resources: where artifacts live, which encoder embeds, how articles split, guard thresholds,
and the Pipes client that launches multi-process training.

Each is a typed ``ConfigurableResource`` that tests swap (``materialize(..., resources=...)``)
and that the UI's launchpad can override per run.
"""

import functools
import os
from pathlib import Path

import dagster as dg

from lvm_pipeline.artifacts import ArtifactStore
from lvm_pipeline.embedding import DEFAULT_EMBEDDER, Embedder, EmbedderConfig
from lvm_pipeline.guards import GuardConfig
from lvm_pipeline.sequences import SplitConfig


def default_data_dir() -> str:
    """``LVM_DATA_DIR`` or ``./data``, made absolute when the definitions load."""
    return str(Path(os.environ.get("LVM_DATA_DIR", "data")).expanduser().resolve())


class StorageResource(dg.ConfigurableResource):
    """The artifact root every asset reads from and writes to."""

    root: str

    def store(self) -> ArtifactStore:
        return ArtifactStore(self.root)


@functools.lru_cache(maxsize=4)
def _load_embedder(config: EmbedderConfig) -> Embedder:
    return Embedder(config)


class EmbedderResource(dg.ConfigurableResource):
    """The encoder of the payload (and of the canary that re-checks it)."""

    model: str = DEFAULT_EMBEDDER
    max_batch_tokens: int = EmbedderConfig.max_batch_tokens
    batch_size: int = EmbedderConfig.batch_size
    device: str = "cpu"

    def config(self) -> EmbedderConfig:
        return EmbedderConfig(model=self.model, max_batch_tokens=self.max_batch_tokens,
                              batch_size=self.batch_size, device=self.device)

    def load(self) -> Embedder:
        """Loaded once per process: the payload asset and the canary check share it."""
        return _load_embedder(self.config())


class SplitResource(dg.ConfigurableResource):
    """The article split shared by both sequence assets, so they can never disagree."""

    seed: int = 0
    val_fraction: float = 0.1
    eval_fraction: float = 0.1

    def config(self) -> SplitConfig:
        return SplitConfig(self.seed, self.val_fraction, self.eval_fraction)


class GuardsResource(dg.ConfigurableResource):
    """Thresholds of the guards; the checks and the consuming assets read the same values."""

    min_alignment_cosine: float = GuardConfig.min_alignment_cosine

    def config(self) -> GuardConfig:
        return GuardConfig(min_alignment_cosine=self.min_alignment_cosine)


@dg.definitions
def resources() -> dg.Definitions:
    return dg.Definitions(resources={
        "storage": StorageResource(root=default_data_dir()),
        "embedder": EmbedderResource(),
        "splits": SplitResource(),
        "guards": GuardsResource(),
        # Launches torchrun for data-parallel training (world_size > 1) and streams its
        # logs and reported metadata back into the materialization.
        "pipes_subprocess_client": dg.PipesSubprocessClient(),
    })
