"""The ``faiss_index`` asset: inner-product search over the payload (exact by default)."""

import dagster as dg

from lvm_pipeline.defs.metadata import build_metadata, progress_for
from lvm_pipeline.defs.resources import EmbedderResource, GuardsResource, StorageResource
from lvm_pipeline.defs.schedules import REBUILD_AFTER_CHECKED_UPSTREAM
from lvm_pipeline.guards import payload_guards, require_passed
from lvm_pipeline.index import IndexConfig, publish_index
from lvm_pipeline.payload import current_payload

_DEFAULT = IndexConfig()


class IndexParams(dg.Config):
    """``type``: flat (exact, default), ivf_flat, sq8 or fp16; ``nlist`` / ``nprobe`` for
    ivf_flat (lvm_pipeline/index.py says how the defaults were measured)."""

    type: str = _DEFAULT.type
    nlist: int = _DEFAULT.nlist
    nprobe: int = _DEFAULT.nprobe

    def to_domain(self) -> IndexConfig:
        return IndexConfig(type=self.type, nlist=self.nlist, nprobe=self.nprobe)


@dg.asset(group_name="evaluation", deps=["payload"], kinds={"faiss"},
          automation_condition=REBUILD_AFTER_CHECKED_UPSTREAM)
def faiss_index(context: dg.AssetExecutionContext, config: IndexParams, storage: StorageResource,
                embedder: EmbedderResource, guards: GuardsResource) -> dg.MaterializeResult:
    """The payload's vectors in a FAISS index, with self-retrieval recall measured on a sample."""
    store = storage.store()
    payload = current_payload(store)
    require_passed(payload_guards(payload, embedder.load(), guards.config()))
    build = publish_index(store, payload, config.to_domain(), progress_for(context, "indexing"))
    m = build.manifest
    return dg.MaterializeResult(metadata=build_metadata(
        build, payload_build_id=payload.build_id, index_type=m["index_type"],
        index_params=dg.MetadataValue.json(m["params"]), exact=m["exact"], ntotal=m["ntotal"],
        dim=m["dim"], self_recall_at_1=m["self_recall_at_1"], build_seconds=m["build_seconds"]))
