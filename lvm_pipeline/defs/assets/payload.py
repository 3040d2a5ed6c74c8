"""The ``payload`` asset: every chunk embedded, the vectors everything else points into."""

import dagster as dg

from lvm_pipeline.corpus import KIND as CORPUS
from lvm_pipeline.defs.metadata import build_metadata, markdown_preview, progress_for
from lvm_pipeline.defs.resources import EmbedderResource, StorageResource
from lvm_pipeline.payload import build_payload, import_reference_payload, load_payload


class PayloadParams(dg.Config):
    """``import_npy``: convert the reference project's pickled payload instead of embedding the
    corpus. Unpickling runs code from the file, so it also needs ``allow_pickle: true``;
    ``normalise`` L2-normalises the imported vectors (otherwise the integrity check judges)."""

    import_npy: str = ""
    allow_pickle: bool = False
    normalise: bool = False


@dg.asset(group_name="data", deps=["corpus"], kinds={"numpy", "parquet"})
def payload(context: dg.AssetExecutionContext, config: PayloadParams, storage: StorageResource,
            embedder: EmbedderResource) -> dg.MaterializeResult:
    """One L2-normalised vector per chunk (vectors.npy) and the table naming each row."""
    store = storage.store()
    if config.import_npy:
        context.log.warning(f"importing the reference payload {config.import_npy}: "
                            f"allow_pickle={config.allow_pickle} (unpickling executes its code)")
        build = import_reference_payload(store, config.import_npy, config.allow_pickle,
                                         config.normalise)
    else:
        model = embedder.load()
        context.log.info(f"embedding with {model.config.model} on {model.device} "
                         f"(weights sha256 {model.fingerprint['weights_sha256'][:12]})")
        build = build_payload(store, store.current(CORPUS), model,
                              progress_for(context, "embedding"))
    loaded = load_payload(build)
    m = build.manifest
    return dg.MaterializeResult(metadata=build_metadata(
        build, payload_build_id=build.build_id, n_rows=m["n_rows"], dim=m["dim"],
        n_articles=m["n_articles"], embedder_id=m["embedder"]["id"],
        embedder_weights_sha256=m["embedder"].get("weights_sha256", "unknown"),
        embedder_device=m["embedder"].get("device", "unknown"),
        adjacent_cosine_mean=m["adjacent_cosine_mean"],
        preview=markdown_preview(loaded.chunks[["row", "article_id", "chunk_index", "text"]])))
