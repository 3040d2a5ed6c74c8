"""LVM architectures: one config dataclass, five named variants, two preset sizes."""

from lvm_pipeline.models.config import PRESETS, SIZES, VARIANTS, LVMConfig, preset
from lvm_pipeline.models.lvm import LVM

__all__ = ["LVM", "PRESETS", "SIZES", "VARIANTS", "LVMConfig", "preset"]
