"""Jobs."""

import dagster as dg

full_retrain = dg.define_asset_job(
    "full_retrain",
    selection=dg.AssetSelection.all(),
    description="Rebuild everything: corpus → payload → sequences → five checkpoints → index → "
                "report, with every blocking check in between.",
)
