"""The ``payload`` asset: every chunk embedded, the vectors everything else points into."""

import dagster as dg

from lvm_pipeline.corpus import KIND as CORPUS
from lvm_pipeline.defs.metadata import build_metadata, markdown_preview, progress_for
from lvm_pipeline.defs.resources import EmbedderResource, StorageResource
from lvm_pipeline.payload import build_payload, load_payload


@dg.asset(group_name="data", deps=["corpus"], kinds={"numpy", "parquet"})
def payload(context: dg.AssetExecutionContext, storage: StorageResource,
            embedder: EmbedderResource) -> dg.MaterializeResult:
    """One L2-normalised vector per chunk (vectors.npy) and the table naming each row."""
    store = storage.store()
    model = embedder.load()
    context.log.info(f"embedding with {model.config.model} on {model.device} "
                     f"(weights sha256 {model.fingerprint['weights_sha256'][:12]})")
    build = build_payload(store, store.current(CORPUS), model, progress_for(context, "embedding"))
    loaded = load_payload(build)
    m = build.manifest
    return dg.MaterializeResult(metadata=build_metadata(
        build, payload_build_id=build.build_id, n_rows=m["n_rows"], dim=m["dim"],
        n_articles=m["n_articles"], embedder_id=m["embedder"]["id"],
        embedder_weights_sha256=m["embedder"]["weights_sha256"],
        embedder_device=m["embedder"]["device"],
        adjacent_cosine_mean=m["adjacent_cosine_mean"],
        preview=markdown_preview(loaded.chunks[["row", "article_id", "chunk_index", "text"]])))
