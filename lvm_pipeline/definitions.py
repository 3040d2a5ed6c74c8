"""The one ``Definitions``, built lazily from everything under ``defs/``.

``[tool.dg]`` in pyproject.toml names the defs module.

Built lazily (``@dg.definitions``): importing this module runs nothing, and nothing here reads
the environment, so the data dir (``LVM_DATA_DIR``) may be set or changed after import; the
storage resource resolves it when a step opens the store.
"""

from pathlib import Path

import dagster as dg


@dg.definitions
def defs() -> dg.Definitions:
    return dg.load_from_defs_folder(path_within_project=Path(__file__).parent)
