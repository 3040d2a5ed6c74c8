"""The five checkpoint assets: one per LVM variant, all built by one factory."""

import dagster as dg

from lvm_pipeline.defs.metadata import build_metadata, progress_for
from lvm_pipeline.defs.resources import GuardsResource, StorageResource
from lvm_pipeline.defs.schedules import REBUILD_AFTER_CHECKED_UPSTREAM
from lvm_pipeline.models import SIZES, VARIANTS
from lvm_pipeline.payload import current_payload
from lvm_pipeline.sequences import TRAIN_KIND
from lvm_pipeline.training import LOSSES, TrainConfig, train_variant

_DEFAULT = TrainConfig()


class TrainParams(dg.Config):
    """How one variant trains; the defaults are the measured choice (docs/evaluation.md)."""

    size: str = "tiny"
    epochs: int = _DEFAULT.epochs
    batch_size: int = _DEFAULT.batch_size
    lr: float = _DEFAULT.lr
    loss: str = _DEFAULT.loss
    temperature: float = _DEFAULT.temperature
    seed: int = _DEFAULT.seed
    device: str = _DEFAULT.device

    def to_domain(self) -> TrainConfig:
        if self.size not in SIZES:
            raise ValueError(f"unknown size {self.size!r}; valid: {', '.join(SIZES)}")
        if self.loss not in LOSSES:
            raise ValueError(f"unknown loss {self.loss!r}; valid: {', '.join(LOSSES)}")
        return TrainConfig(epochs=self.epochs, batch_size=self.batch_size, lr=self.lr,
                           loss=self.loss, temperature=self.temperature, seed=self.seed,
                           device=self.device)


def checkpoint_asset(variant: str) -> dg.AssetsDefinition:
    @dg.asset(name=variant, group_name="models", kinds={"pytorch", "safetensors"},
              deps=["payload", "aligned_training_sequences"], pool="training",
              automation_condition=REBUILD_AFTER_CHECKED_UPSTREAM)
    def _checkpoint(context: dg.AssetExecutionContext, config: TrainParams,
                    storage: StorageResource, guards: GuardsResource) -> dg.MaterializeResult:
        store = storage.store()
        payload = current_payload(store)
        build, result = train_variant(
            store, variant, config.size, payload, store.current(TRAIN_KIND), config.to_domain(),
            guards.config().min_alignment_cosine, progress_for(context, f"training {variant}"))
        best = result.history[result.best_epoch]
        return dg.MaterializeResult(metadata=build_metadata(
            build, payload_build_id=payload.build_id, n_params=result.model.num_params(),
            device=result.device, epochs_run=len(result.history), best_epoch=result.best_epoch,
            stopped_early=result.stopped_early, best_val_loss=best["val_loss"],
            best_val_cos=best["val_cos"], train_seconds=result.seconds,
            history=dg.MetadataValue.json(result.history)))

    _checkpoint.__doc__ = (f"{variant}: the `{variant}` LVM trained on aligned_training_sequences "
                           "(val split for early stopping); safetensors + checkpoint.json.")
    return _checkpoint


mamba_s, mamba_h, mamba_xl, mamba_sandwich, mamba_gr = (checkpoint_asset(v) for v in VARIANTS)
