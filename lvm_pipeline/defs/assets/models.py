"""The five checkpoint assets: one per LVM variant, all built by one factory."""

import dagster as dg

from lvm_pipeline.defs.metadata import build_metadata, progress_for
from lvm_pipeline.defs.resources import EmbedderResource, GuardsResource, StorageResource
from lvm_pipeline.guards import payload_guards, require_passed, training_guards
from lvm_pipeline.models import SIZES, VARIANTS
from lvm_pipeline.payload import current_payload
from lvm_pipeline.sequences import EVAL_KIND, TRAIN_KIND
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
              deps=["payload", "aligned_training_sequences"], pool="training")
    def _checkpoint(context: dg.AssetExecutionContext, config: TrainParams,
                    storage: StorageResource, embedder: EmbedderResource,
                    guards: GuardsResource) -> dg.MaterializeResult:
        store = storage.store()
        payload, sequences = current_payload(store), store.current(TRAIN_KIND)
        # Blocking checks gate only their own run: every guard of the inputs, again, here.
        eval_build = store.current(EVAL_KIND) if store.has_current(EVAL_KIND) else None
        require_passed([*payload_guards(payload, embedder.load(), guards.config()),
                        *training_guards(payload, sequences, eval_build, guards.config())])
        build, result = train_variant(
            store, variant, config.size, payload, sequences, config.to_domain(),
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
