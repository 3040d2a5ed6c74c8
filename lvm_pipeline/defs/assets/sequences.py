"""The sequence assets: train/val and eval windows as row indices into the current payload."""

import dagster as dg

from lvm_pipeline.alignment import import_training_npz
from lvm_pipeline.defs.metadata import build_metadata
from lvm_pipeline.defs.resources import SplitResource, StorageResource
from lvm_pipeline.defs.schedules import REBUILD_AFTER_CHECKED_UPSTREAM
from lvm_pipeline.payload import current_payload
from lvm_pipeline.sequences import (
    EVAL_KIND,
    TRAIN_KIND,
    build_windows,
    native_info,
    publish_sequences,
)


class TrainingSequencesParams(dg.Config):
    """``import_npz``: build the training set from a reference-layout .npz (aligned to the
    payload by nearest neighbour, measured cosines kept) instead of from payload windows."""

    import_npz: str = ""


def _publish(kind: str, storage: StorageResource, splits: SplitResource,
             import_npz: str = "") -> dg.MaterializeResult:
    store = storage.store()
    payload = current_payload(store)
    if import_npz:
        sets, info = import_training_npz(import_npz, payload, splits.config())
        info["split_config"] = native_info(splits.config())["split_config"]
    else:
        sets, info = build_windows(payload, splits.config()), native_info(splits.config())
    build = publish_sequences(store, kind, payload, sets, info)
    counts = {f"{split}_{what}": n for split, c in build.manifest["splits"].items()
              for what, n in c.items()}
    return dg.MaterializeResult(metadata=build_metadata(
        build, payload_build_id=payload.build_id, **counts,
        source=dg.MetadataValue.json(build.manifest["source"]),
        split_config=dg.MetadataValue.json(build.manifest["split_config"])))


@dg.asset(group_name="sequences", deps=["payload"], kinds={"numpy"},
          automation_condition=REBUILD_AFTER_CHECKED_UPSTREAM)
def aligned_training_sequences(config: TrainingSequencesParams, storage: StorageResource,
                               splits: SplitResource) -> dg.MaterializeResult:
    """Train and val windows (5 context rows → target row) of the train/val articles, or an
    imported .npz aligned to the payload."""
    return _publish(TRAIN_KIND, storage, splits, config.import_npz)


@dg.asset(group_name="sequences", deps=["payload"], kinds={"numpy"},
          automation_condition=REBUILD_AFTER_CHECKED_UPSTREAM)
def aligned_eval(storage: StorageResource, splits: SplitResource) -> dg.MaterializeResult:
    """Eval windows, from articles that no training or val window comes from."""
    return _publish(EVAL_KIND, storage, splits)
