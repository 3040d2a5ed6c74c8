"""LVM architectures: one config dataclass, five named variants, two preset sizes.

The model (:mod:`.lvm`) of Mamba blocks (:mod:`.mamba`, with its scan backends in :mod:`.scan`
and :mod:`.scan_triton`), local attention (:mod:`.attention`) and a GRU gate (:mod:`.gru_gate`),
configured by :mod:`.config`.
"""

from lvm_pipeline.models.config import PRESETS, SIZES, VARIANTS, LVMConfig, layout_text, preset
from lvm_pipeline.models.lvm import LVM

__all__ = ["LVM", "PRESETS", "SIZES", "VARIANTS", "LVMConfig", "layout_text", "preset"]
