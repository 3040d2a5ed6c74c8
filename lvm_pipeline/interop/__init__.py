"""The reference project's formats: its training .npz and its pickled payload.

Its training ``.npz`` imported by nearest neighbour and exported (:mod:`.reference_npz`), and its
pickled payload converted on explicit opt-in (:mod:`.reference_payload`).
"""

from lvm_pipeline.interop.reference_npz import export_training_npz, import_training_npz
from lvm_pipeline.interop.reference_payload import import_reference_payload

__all__ = [
    "export_training_npz", "import_reference_payload", "import_training_npz",
]
