"""The one ``Definitions`` object: everything under ``lvm_pipeline/defs``, loaded automatically
(``[tool.dg]`` in pyproject.toml names the defs module)."""

from pathlib import Path

import dagster as dg

defs: dg.Definitions = dg.load_from_defs_folder(path_within_project=Path(__file__).parent)
