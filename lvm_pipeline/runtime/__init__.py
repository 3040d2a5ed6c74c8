"""How long work runs and reports, the same from an asset, a notebook or a ``torchrun`` worker:
progress callbacks (:mod:`.progress`), the explicit torch device (:mod:`.device`) and MLflow
runs (:mod:`.tracking`).
"""

from lvm_pipeline.runtime.device import pick_device
from lvm_pipeline.runtime.progress import (
    Progress,
    is_progress_line,
    make_progress,
    silent,
    tee,
)
from lvm_pipeline.runtime.tracking import DEFAULT_EXPERIMENT, TrackedRun, TrackingConfig, start_run

__all__ = [
    "DEFAULT_EXPERIMENT",
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
