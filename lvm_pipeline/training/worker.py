"""The ``torchrun`` worker: one rank of data-parallel training, launched through Dagster Pipes.

The checkpoint asset starts ``python -m torch.distributed.run ... -m lvm_pipeline.training.worker``
with :class:`dagster.PipesSubprocessClient` (defs/assets/models.py). Like hooli's Pipes scripts,
this file only opens Pipes, reads its parameters from the extras, runs one domain function
(:func:`lvm_pipeline.training.train_variant`) and reports metadata. Rank 0 opens the Pipes
channel: its progress lines become the run's log lines and its materialization carries the
measured figures; the other ranks read the same extras from the Pipes context and train
silently. Only rank 0 publishes the checkpoint, once, through the artifact store.

It imports ``dagster_pipes`` (a small standalone package), never ``dagster``.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import fields
from typing import Any

from dagster_pipes import (
    PipesContext,
    PipesDefaultContextLoader,
    PipesEnvVarParamsLoader,
    open_dagster_pipes,
)

from lvm_pipeline.payload import payload_of
from lvm_pipeline.runtime import make_progress, pick_device, silent
from lvm_pipeline.store import kinds, open_store
from lvm_pipeline.training.config import TrainConfig
from lvm_pipeline.training.distributed import init_from_env, shutdown
from lvm_pipeline.training.loop import progress_line, train_variant

EXTRAS = ("data_dir", "mirror_url", "sequences_build_id", "variant", "size", "train_config",
          "min_alignment_cosine", "recipe")


def extras_for(data_dir: str, mirror_url: str, sequences_build_id: str, variant: str, size: str,
               config: TrainConfig, min_alignment_cosine: float,
               recipe: dict[str, Any]) -> dict[str, Any]:
    """The Pipes extras a worker needs (JSON values only). The store is named as the asset
    opened it (data dir and mirror), so the checkpoint rank 0 publishes reaches the mirror too;
    the sequences by build id, the one the asset's input resolved, so every rank trains on
    exactly that build."""
    from dataclasses import asdict

    return {"data_dir": data_dir, "mirror_url": mirror_url,
            "sequences_build_id": sequences_build_id, "variant": variant, "size": size,
            "train_config": asdict(config), "min_alignment_cosine": min_alignment_cosine,
            "recipe": recipe}


def _read_extras_without_channel() -> dict[str, Any]:
    """Ranks other than 0 read the extras from the Pipes context but open no message channel,
    so the materialization gets one report, not one per rank."""
    params = PipesEnvVarParamsLoader().load_context_params()
    with PipesDefaultContextLoader().load_context(params) as data:
        return dict(data["extras"])


def run(extras: dict[str, Any], pipes: PipesContext | None) -> None:
    """Train one variant as this rank; rank 0 publishes and reports."""
    missing = set(EXTRAS) - set(extras)
    if missing:
        raise ValueError(f"train_worker: Pipes extras lack {sorted(missing)}; need {EXTRAS}")
    names = {f.name for f in fields(TrainConfig)}
    unknown = set(extras["train_config"]) - names
    if unknown:
        raise ValueError(f"train_worker: unknown TrainConfig field(s) {sorted(unknown)}; "
                         f"valid: {sorted(names)}")
    config = TrainConfig(**extras["train_config"])
    device = pick_device(config.device)  # "auto" resolved once, before the process group
    ranks = init_from_env(device)
    try:
        store = open_store(extras["data_dir"], extras["mirror_url"])
        sequences = store.get(kinds.TRAIN_SEQUENCES, extras["sequences_build_id"])
        payload = payload_of(store, sequences)
        progress = silent
        if pipes is not None:
            pipes.log.info(f"torchrun: {ranks.world_size} processes, device {device}, "
                           f"global batch {config.batch_size}")
            progress = make_progress(f"training {extras['variant']}", log=pipes.log.info,
                                     describe=progress_line,
                                     every_s=0.0, bar=False)
        build, result = train_variant(
            store, extras["variant"], extras["size"], payload, sequences, config,
            float(extras["min_alignment_cosine"]), progress, ranks, extras["recipe"])
        if pipes is not None and build is not None:
            pipes.report_asset_materialization(metadata={
                "build_id": build.build_id, **result.summary(),
                "history": {"raw_value": result.history, "type": "json"}})
    finally:
        shutdown(ranks)


def main() -> None:
    is_rank_0 = int(os.environ.get("RANK", "0")) == 0
    with open_dagster_pipes() if is_rank_0 else contextlib.nullcontext() as pipes:
        run(pipes.extras if pipes is not None else _read_extras_without_channel(), pipes)


if __name__ == "__main__":
    main()
