"""Stage 4: the training loop and its parts, the checkpoint, the torchrun worker.

The config (:mod:`.config`), the loop (:mod:`.loop`) and its parts (:mod:`.losses`,
:mod:`.lr_schedule`, :mod:`.batching`, :mod:`.validation`, :mod:`.resume`,
:mod:`.distributed`), the published checkpoint (:mod:`.checkpoint`) and the ``torchrun`` worker
(:mod:`.worker`).
"""

from lvm_pipeline.training.checkpoint import checkpoint_info, load_checkpoint
from lvm_pipeline.training.config import TrainConfig
from lvm_pipeline.training.loop import (
    TrainResult,
    execution_of,
    progress_line,
    stop_summary,
    train,
    train_variant,
)
from lvm_pipeline.training.validation import copy_last_val, evaluate_val
from lvm_pipeline.training.worker import extras_for

__all__ = [
    "TrainConfig",
    "TrainResult",
    "checkpoint_info",
    "copy_last_val",
    "evaluate_val",
    "execution_of",
    "extras_for",
    "load_checkpoint",
    "progress_line",
    "stop_summary",
    "train",
    "train_variant",
]
