"""The five checkpoint assets: one per LVM variant, all built by one factory.

``world_size`` 1 trains in the asset's process. ``world_size`` > 1 launches ``torchrun``
(DistributedDataParallel: NCCL on GPUs, Gloo on CPUs) through Dagster Pipes; the worker
(lvm_pipeline/training/worker.py) streams its progress into the run's logs and reports the
materialization, and rank 0 publishes the checkpoint once.
"""

import sys
from dataclasses import asdict
from typing import Any

import dagster as dg

from lvm_pipeline.defs.automation import REBUILD_AFTER_CHECKED_UPSTREAM
from lvm_pipeline.defs.code_versions import code_version
from lvm_pipeline.defs.metadata import build_output, tracked_metadata
from lvm_pipeline.defs.resources import (
    EmbedderResource,
    GuardsResource,
    ProgressResource,
    StorageResource,
    TrackingResource,
)
from lvm_pipeline.defs.reuse import guard_settings, reused_output, step_recipe
from lvm_pipeline.guards import payload_guards, require_passed, training_guards
from lvm_pipeline.models import SIZES, VARIANTS, preset
from lvm_pipeline.models.scan import BACKENDS
from lvm_pipeline.payload import Payload, payload_of
from lvm_pipeline.runtime import Progress, TrackedRun, tee
from lvm_pipeline.store import ArtifactStore, Build, kinds
from lvm_pipeline.training import (
    TrainConfig,
    execution_of,
    extras_for,
    progress_line,
    stop_summary,
    train_variant,
)

_DEFAULT = TrainConfig()


class TrainParams(dg.Config):
    """How one variant trains; the defaults are the measured choice (docs/evaluation.md)."""

    size: str = "tiny"
    epochs: int = _DEFAULT.epochs
    batch_size: int = _DEFAULT.batch_size
    lr: float = _DEFAULT.lr
    loss: str = _DEFAULT.loss
    temperature: float = _DEFAULT.temperature
    negatives: str = _DEFAULT.negatives
    article_negatives: int = _DEFAULT.article_negatives
    seed: int = _DEFAULT.seed
    device: str = _DEFAULT.device
    # How the Mamba scan runs (models/scan.py); the checkpoint records what "auto" chose.
    scan_backend: str = _DEFAULT.scan_backend
    # Processes of data-parallel training; > 1 launches torchrun through Pipes. batch_size
    # stays the global batch, so the result matches world_size 1 up to float rounding.
    world_size: int = 1
    # Compute even when this recipe (code, config, sequences, device) made a build before.
    rebuild: bool = False

    def to_domain(self) -> TrainConfig:
        if self.size not in SIZES:
            raise ValueError(f"unknown size {self.size!r}; valid: {', '.join(SIZES)}")
        if self.scan_backend not in BACKENDS:
            raise ValueError(f"unknown scan backend {self.scan_backend!r}; valid: "
                             f"{', '.join(BACKENDS)}")
        if self.world_size < 1:
            raise ValueError(f"world_size must be >= 1, got {self.world_size}")
        return TrainConfig(epochs=self.epochs, batch_size=self.batch_size, lr=self.lr,
                           loss=self.loss, temperature=self.temperature,
                           negatives=self.negatives, article_negatives=self.article_negatives,
                           seed=self.seed, device=self.device,
                           scan_backend=self.scan_backend)


def torchrun_command(world_size: int) -> list[str]:
    """``torchrun`` for one node, run by this interpreter (so the worker sees this venv)."""
    return [sys.executable, "-m", "torch.distributed.run", "--standalone",
            f"--nproc-per-node={world_size}", "-m", "lvm_pipeline.training.worker"]


def tracked_params(variant: str, config: TrainParams, d_in: int) -> dict[str, Any]:
    """What an MLflow run of this training records as parameters: the variant, its model
    preset (as the checkpoint will record it) and the training config."""
    return {"variant": variant, "size": config.size, "world_size": config.world_size,
            "model": preset(variant, config.size, d_in=d_in).to_dict(),
            "train": asdict(config.to_domain())}


def train_with_torchrun(context: dg.AssetExecutionContext, client: dg.PipesSubprocessClient,
                        variant: str, config: TrainParams, storage: StorageResource,
                        sequences: Build, min_alignment_cosine: float,
                        tracked: TrackedRun, recipe: dict[str, Any]
                        ) -> tuple[Build, dict[str, Any], list[dict]]:
    """Run the worker on ``world_size`` processes; (its build, its summary, the history), the
    epochs' figures logged in the tracked run from the checkpoint's history."""
    command = torchrun_command(config.world_size)
    context.log.info(f"launching {' '.join(command)}")
    store = storage.store()
    extras = extras_for(str(store.root), storage.mirror_url, sequences.build_id, variant,
                        config.size, config.to_domain(), min_alignment_cosine, recipe)
    reported = client.run(context=context, command=command, extras=extras
                          ).get_materialize_result()
    build = store.get(kinds.checkpoint(variant), reported.metadata["build_id"].value)
    summary = {k: v.value for k, v in reported.metadata.items() if k not in ("build_id",
                                                                               "history")}
    history = reported.metadata["history"].value
    tracked.log_history(history)
    tracked.record_build(build, summary)
    return build, summary, history


def _train_here(context: dg.AssetExecutionContext, variant: str, config: TrainParams,
                store: ArtifactStore, payload: Payload, sequences: Build,
                min_alignment_cosine: float, tracked: TrackedRun, progress: Progress,
                recipe: dict[str, Any]) -> tuple[Build, dict[str, Any], list[dict]]:
    """Train in this process; (the build, its summary, the history), every epoch's figures
    logged in the tracked run as they come (and those of a resumed run's earlier epochs)."""
    build, result = train_variant(store, variant, config.size, payload, sequences,
                                  config.to_domain(), min_alignment_cosine,
                                  # Every call logged: the loop spaces its in-epoch reports
                                  # itself (IN_EPOCH_PROGRESS_S), and an epoch's figures must
                                  # never be thinned out.
                                  tee(progress, tracked.progress), recipe=recipe)
    tracked.log_history(result.history[:result.resumed_from_epoch])
    tracked.record_build(build, result.summary())
    return build, result.summary(), result.history


HISTORY_COLUMNS = ("train_loss", "val_loss", "val_cos", "val_mrr_at_10", "val_r_at_5", "lr")


def history_table(history: list[dict[str, Any]], best_epoch: int) -> dg.TableMetadataValue:
    """One row per epoch (counted from 1, as the run's log counts them), the kept one marked."""
    columns = [dg.TableColumn("epoch", "int"), dg.TableColumn("kept", "bool"),
               *(dg.TableColumn(c, "float") for c in HISTORY_COLUMNS)]
    rows = [dg.TableRecord({"epoch": r["epoch"] + 1, "kept": r["epoch"] == best_epoch,
                            **{c: round(float(r[c]), 4) for c in HISTORY_COLUMNS}})
            for r in history]
    return dg.MetadataValue.table(rows, dg.TableSchema(columns))


def _description(variant: str) -> str:
    return (f"The {variant} LVM ({preset(variant, 'paper').layout_text()} blocks at the paper "
            "size, fewer at the tiny one), trained on the train windows of "
            "aligned_training_sequences, early-stopped on the val windows' retrieval (MRR@10 "
            "against the whole payload), the best epoch kept: model.safetensors + "
            "checkpoint.json (config, lineage, per-epoch history). Its checks: finite weights, "
            "trained on the sequences it names, and a warning when it does not beat "
            "copy-last on val.")


def checkpoint_asset(variant: str) -> dg.AssetsDefinition:
    @dg.asset(name=variant, group_name="models", kinds={"pytorch", "safetensors"},
              ins={"sequences": dg.AssetIn("aligned_training_sequences")}, pool="training",
              code_version=code_version(variant), description=_description(variant),
              automation_condition=REBUILD_AFTER_CHECKED_UPSTREAM)
    def _checkpoint(context: dg.AssetExecutionContext, config: TrainParams, sequences: Build,
                    storage: StorageResource, embedder: EmbedderResource,
                    guards: GuardsResource, tracking: TrackingResource,
                    progress: ProgressResource,
                    pipes_subprocess_client: dg.PipesSubprocessClient) -> dg.Output:
        store = storage.store()
        recipe = step_recipe(context, config, {"sequences": sequences},
                             **execution_of(config.to_domain()),
                             **guard_settings(embedder, guards))
        if (reused := reused_output(context, store, kinds.checkpoint(variant), recipe,
                                    config.rebuild)):
            return reused
        # The payload these sequences index, by the id their manifest records (lineage).
        payload = payload_of(store, sequences)
        # Blocking checks gate only their own run: every guard of the inputs, again, here
        # (leakage into eval is the report's to refuse: eval is not an input of training).
        require_passed([*payload_guards(payload, embedder.load(), guards.config()),
                        *training_guards(payload, sequences, None, guards.config())])
        with tracking.start_run(context, store.root, tracked_params(variant, config, payload.dim),
                                {f"lvm.upstream.{kinds.PAYLOAD}": payload.build_id,
                                 f"lvm.upstream.{kinds.TRAIN_SEQUENCES}": sequences.build_id}
                                ) as tracked:
            if config.world_size > 1:
                build, summary, history = train_with_torchrun(
                    context, pipes_subprocess_client, variant, config, storage, sequences,
                    guards.config().min_alignment_cosine, tracked, recipe)
            else:
                build, summary, history = _train_here(
                    context, variant, config, store, payload, sequences,
                    guards.config().min_alignment_cosine, tracked,
                    progress.for_step(context, f"training {variant}", every_s=0.0,
                                      describe=progress_line), recipe)
        stopped = stop_summary(history, summary["best_epoch"], summary["stopped_early"],
                               config.to_domain(), summary["copy_last_val_mrr_at_10"])
        context.log.info(f"{variant}: {stopped}; scan backend {summary['scan_backend']} on "
                         f"{summary['device']}")
        return build_output(build, {"training": stopped,
                                    "history": history_table(history, summary["best_epoch"])},
                            **{k: round(v, 4) if isinstance(v, float) else v
                               for k, v in summary.items() if k != "best_epoch"},
                            # Counted from 1, as the history table and the log count epochs.
                            kept_epoch=summary["best_epoch"] + 1,
                            payload_build_id=payload.build_id,
                            sequences_build_id=sequences.build_id,
                            launcher="torchrun" if config.world_size > 1 else "in_process",
                            **tracked_metadata(tracked))

    return _checkpoint


mamba_s, mamba_h, mamba_xl, mamba_sandwich, mamba_gr = (checkpoint_asset(v) for v in VARIANTS)
