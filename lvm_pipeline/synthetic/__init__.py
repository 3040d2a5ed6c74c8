"""A seeded synthetic payload at reference scale, calibrated to real neighbours.

The generator and its encoder (:mod:`.payload`), and the neighbour statistics it is calibrated
on (:mod:`.neighbour_stats`).
"""

from lvm_pipeline.synthetic.neighbour_stats import neighbour_statistics
from lvm_pipeline.synthetic.payload import (
    SPEC_PREFIX,
    SyntheticEncoder,
    SyntheticPayloadConfig,
    publish_synthetic_payload,
)

__all__ = [
    "SPEC_PREFIX",
    "SyntheticEncoder",
    "SyntheticPayloadConfig",
    "neighbour_statistics",
    "publish_synthetic_payload",
]
