"""What every asset returns: its build as the output value, the build id as its
``DataVersion``, and metadata a person can read in the UI.

Order matters in the UI's metadata panel: the asset's own figures come first (``first``, then
``extra``), the build's identity after them, and the per-file sha256s and sizes last, in one
JSON entry instead of two rows per file.
"""

import warnings
from typing import Any

import dagster as dg
import pandas as pd

from lvm_pipeline.runtime import TrackedRun
from lvm_pipeline.store import Build

# Metadata keys every materialization of this project records, and the IO manager reads back
# to find the build (lvm_pipeline/defs/io_manager.py).
BUILD_ID, ARTIFACT_KIND = "build_id", "kind"
# Whether the step computed its build or reused one its recipe made (lvm_pipeline/defs/reuse.py).
REUSE = "build"
BUILT = "built in this run"


def build_output(build: Build, first: dict[str, Any] | None = None, *,
                 with_upstream: bool = True, **extra: Any) -> dg.Output:
    """The Dagster output of an asset that published ``build``. ``with_upstream`` False leaves
    out the ``upstream`` JSON, for an asset whose own entries already show its lineage (the
    report's ``lineage``): one block, not the same ids twice."""
    meta: dict[str, Any] = {**(first or {}), **extra}
    meta.setdefault(REUSE, BUILT)
    meta.update({
        BUILD_ID: build.build_id,
        ARTIFACT_KIND: build.kind,
        "path": dg.MetadataValue.path(str(build.path)),
    })
    if with_upstream:
        meta["upstream"] = dg.MetadataValue.json(dict(build.manifest.get("upstream", {})))
    meta["files"] = dg.MetadataValue.json(dict(build.manifest["files"]))
    with warnings.catch_warnings():
        # Output's data_version is marked beta; it is how Dagster learns the build id is the
        # content's version, and the warning would print once per asset of every run.
        warnings.simplefilter("ignore", dg.BetaWarning)
        return dg.Output(build, data_version=dg.DataVersion(build.build_id), metadata=meta)


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


def tracked_metadata(run: TrackedRun) -> dict[str, Any]:
    """The MLflow run that recorded this materialization (nothing when tracking is off), so the
    UI leads from an asset to its run."""
    return {} if run.run_id is None else {"mlflow_run_id": run.run_id}


def materialization_of_build(instance: dg.DagsterInstance, key: dg.AssetKey,
                             build_id: str) -> dg.EventLogRecord | None:
    """The newest materialization of ``key`` that recorded ``build_id`` (paged: a long-lived
    instance holds many)."""
    cursor = None
    while True:
        page = instance.fetch_materializations(key, limit=50, cursor=cursor)
        for record in page.records:
            meta = record.asset_materialization.metadata if record.asset_materialization else {}
            if BUILD_ID in meta and meta[BUILD_ID].value == build_id:
                return record
        if not page.has_more:
            return None
        cursor = page.cursor
