"""Progress callbacks, the torch device and MLflow runs, the same from any caller.

An asset, a notebook and a ``torchrun`` worker report progress through the same callback
(:mod:`.progress`), choose the device explicitly (:mod:`.device`) and record MLflow runs
(:mod:`.tracking`).
"""

from lvm_pipeline.runtime.device import pick_device
from lvm_pipeline.runtime.progress import Describe, Progress, is_progress_line, make_progress, silent, tee
from lvm_pipeline.runtime.tracking import DEFAULT_EXPERIMENT, TrackedRun, TrackingConfig, start_run

__all__ = [
    "DEFAULT_EXPERIMENT",
    "Describe",
    "Progress",
    "TrackedRun",
    "TrackingConfig",
    "is_progress_line",
    "make_progress",
    "pick_device",
    "silent",
    "start_run",
    "tee",
]
