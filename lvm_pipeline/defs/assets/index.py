"""The ``faiss_index`` asset: exact inner-product search over the payload."""

import dagster as dg

from lvm_pipeline.defs.metadata import build_metadata, progress_for
from lvm_pipeline.defs.resources import EmbedderResource, GuardsResource, StorageResource
from lvm_pipeline.defs.schedules import REBUILD_AFTER_CHECKED_UPSTREAM
from lvm_pipeline.guards import payload_guards, require_passed
from lvm_pipeline.index import IndexConfig, publish_index
from lvm_pipeline.payload import current_payload


@dg.asset(group_name="evaluation", deps=["payload"], kinds={"faiss"},
          automation_condition=REBUILD_AFTER_CHECKED_UPSTREAM)
def faiss_index(context: dg.AssetExecutionContext, storage: StorageResource,
                embedder: EmbedderResource, guards: GuardsResource) -> dg.MaterializeResult:
    """IndexFlatIP over the payload's vectors, with self-retrieval recall measured on a sample."""
    store = storage.store()
    payload = current_payload(store)
    require_passed(payload_guards(payload, embedder.load(), guards.config()))
    build = publish_index(store, payload, IndexConfig(), progress_for(context, "indexing"))
    m = build.manifest
    return dg.MaterializeResult(metadata=build_metadata(
        build, payload_build_id=payload.build_id, index_type=m["index_type"], ntotal=m["ntotal"],
        dim=m["dim"], self_recall_at_1=m["self_recall_at_1"], build_seconds=m["build_seconds"]))
