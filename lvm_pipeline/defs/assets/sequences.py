"""The sequence assets: train/val and eval windows as row indices into their input payload."""

from dataclasses import asdict

import dagster as dg

from lvm_pipeline.defs.automation import REBUILD_AFTER_CHECKED_UPSTREAM
from lvm_pipeline.defs.code_versions import code_version
from lvm_pipeline.defs.metadata import build_output
from lvm_pipeline.defs.resources import (
    EmbedderResource,
    GuardsResource,
    SplitResource,
    StorageResource,
)
from lvm_pipeline.defs.reuse import guard_settings, reused_output, step_recipe
from lvm_pipeline.guards import payload_guards, require_passed
from lvm_pipeline.interop import import_training_npz
from lvm_pipeline.payload import load_payload
from lvm_pipeline.sequences import (
    article_splits,
    build_windows,
    native_info,
    publish_sequences,
    require_meaningful_split,
)
from lvm_pipeline.store import Build, kinds, sha256_file


class EvalSequencesParams(dg.Config):
    """``rebuild``: compute even when this recipe (code, split config, payload) made a build
    before."""

    rebuild: bool = False


class TrainingSequencesParams(EvalSequencesParams):
    """``import_npz``: build the training set from a reference-layout .npz (aligned to the
    payload by nearest neighbour, measured cosines kept) instead of from payload windows."""

    import_npz: str = ""


def _publish(context: dg.AssetExecutionContext, kind: str, config: EvalSequencesParams,
             payload_build: Build, storage: StorageResource, splits: SplitResource,
             embedder: EmbedderResource, guards: GuardsResource) -> dg.Output:
    store = storage.store()
    import_npz = getattr(config, "import_npz", "")
    inputs = {"payload": payload_build, **({"npz_sha256": sha256_file(import_npz)}
                                           if import_npz else {})}
    recipe = step_recipe(context, config, inputs, split=asdict(splits.config()),
                         **guard_settings(embedder, guards))
    if (reused := reused_output(context, store, kind, recipe, config.rebuild)):
        return reused
    payload = load_payload(payload_build)
    # The payload's blocking checks only gate their own run: verify it here too.
    require_passed(payload_guards(payload, embedder.load(), guards.config()))
    if import_npz:
        sets, info = import_training_npz(import_npz, payload, splits.config())
        info["split_config"] = native_info(splits.config())["split_config"]
    else:
        facts: dict = {}
        # Dropping near-duplicate windows never touches eval: the eval asset skips the search.
        sets = build_windows(payload, splits.config(), facts,
                             drop_near_duplicates=kind == kinds.TRAIN_SEQUENCES)
        require_meaningful_split(article_splits(payload, splits.config()), sets,
                                 splits.config())
        info = {**native_info(splits.config()), **facts}
    build = publish_sequences(store, kind, payload, sets, info, recipe)
    counts = {f"{split}_{what}": n for split, c in build.manifest["splits"].items()
              for what, n in c.items()}
    return build_output(
        build, payload_build_id=payload.build_id, **counts,
        source=dg.MetadataValue.json(build.manifest["source"]),
        split_config=dg.MetadataValue.json(build.manifest["split_config"]),
        near_duplicate_windows_dropped=dg.MetadataValue.json(
            build.manifest.get("near_duplicate_windows_dropped", {})))


@dg.asset(group_name="sequences", kinds={"numpy"},
          code_version=code_version("aligned_training_sequences"),
          automation_condition=REBUILD_AFTER_CHECKED_UPSTREAM)
def aligned_training_sequences(context: dg.AssetExecutionContext,
                               config: TrainingSequencesParams, payload: Build,
                               storage: StorageResource, splits: SplitResource,
                               embedder: EmbedderResource, guards: GuardsResource) -> dg.Output:
    """Train and val windows (5 context rows → target row) of the train/val articles, or an
    imported .npz aligned to the payload."""
    return _publish(context, kinds.TRAIN_SEQUENCES, config, payload, storage, splits, embedder,
                    guards)


@dg.asset(group_name="sequences", kinds={"numpy"}, code_version=code_version("aligned_eval"),
          automation_condition=REBUILD_AFTER_CHECKED_UPSTREAM)
def aligned_eval(context: dg.AssetExecutionContext, config: EvalSequencesParams, payload: Build,
                 storage: StorageResource, splits: SplitResource, embedder: EmbedderResource,
                 guards: GuardsResource) -> dg.Output:
    """Eval windows, from articles that no training or val window comes from."""
    return _publish(context, kinds.EVAL_SEQUENCES, config, payload, storage, splits, embedder,
                    guards)
