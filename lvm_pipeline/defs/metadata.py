"""Materialization metadata shared by every asset: where the build is and what it hashes to."""

from typing import Any

import dagster as dg
import pandas as pd

from lvm_pipeline.artifacts import Build
from lvm_pipeline.progress import Progress, make_progress


def build_metadata(build: Build, **extra: Any) -> dict[str, Any]:
    """Path, build id, code version, upstream build ids and every file's sha256 and size."""
    meta: dict[str, Any] = {
        "path": dg.MetadataValue.path(str(build.path)),
        "build_id": build.build_id,
        "code_version": build.manifest["code_version"],
    }
    for name, build_id in build.manifest.get("upstream", {}).items():
        meta[f"upstream_{name.replace('/', '_')}_build_id"] = build_id
    for name, info in build.manifest["files"].items():
        key = name.replace("/", "_").replace(".", "_")
        meta[f"sha256_{key}"] = info["sha256"]
        meta[f"bytes_{key}"] = info["bytes"]
    meta.update(extra)
    return meta


def markdown_preview(frame: pd.DataFrame, rows: int = 5, width: int = 80) -> dg.MetadataValue:
    """The first rows as a Markdown table, long text cut to ``width`` characters."""
    head = frame.head(rows).copy()
    for column in head.columns:
        if head[column].dtype == object:
            head[column] = head[column].astype(str).str.slice(0, width)
    lines = ["| " + " | ".join(map(str, head.columns)) + " |",
             "|" + "---|" * len(head.columns)]
    lines += ["| " + " | ".join(str(v).replace("|", "\\|") for v in row) + " |"
              for row in head.itertuples(index=False)]
    return dg.MetadataValue.md("\n".join(lines))


def progress_for(context: dg.AssetExecutionContext, task: str) -> Progress:
    """Progress lines in the run's log (and a bar when the run is attached to a terminal)."""
    return make_progress(task, log=context.log.info)
