"""The ``faiss_index`` asset: inner-product search over the payload (exact by default)."""

import dagster as dg

from lvm_pipeline.defs.automation import REBUILD_AFTER_CHECKED_UPSTREAM
from lvm_pipeline.defs.code_versions import code_version
from lvm_pipeline.defs.metadata import build_output
from lvm_pipeline.defs.resources import (
    EmbedderResource,
    GuardsResource,
    ProgressResource,
    StorageResource,
)
from lvm_pipeline.defs.reuse import guard_settings, reused_output, step_recipe
from lvm_pipeline.guards import payload_guards, require_passed
from lvm_pipeline.payload import load_payload
from lvm_pipeline.search import IndexConfig, publish_index
from lvm_pipeline.store import Build, kinds

_DEFAULT = IndexConfig()


class IndexParams(dg.Config):
    """``type``: flat (exact, default), ivf_flat, sq8 or fp16; ``nlist`` / ``nprobe`` for
    ivf_flat (lvm_pipeline/search/index.py says how the defaults were measured)."""

    type: str = _DEFAULT.type
    nlist: int = _DEFAULT.nlist
    nprobe: int = _DEFAULT.nprobe
    # Compute even when this recipe (code, config, payload) made a build before.
    rebuild: bool = False

    def to_domain(self) -> IndexConfig:
        return IndexConfig(type=self.type, nlist=self.nlist, nprobe=self.nprobe)


@dg.asset(group_name="evaluation", kinds={"faiss"}, code_version=code_version("faiss_index"),
          automation_condition=REBUILD_AFTER_CHECKED_UPSTREAM)
def faiss_index(context: dg.AssetExecutionContext, config: IndexParams, payload: Build,
                storage: StorageResource, embedder: EmbedderResource,
                guards: GuardsResource, progress: ProgressResource) -> dg.Output:
    """The payload's vectors in a FAISS index, with self-retrieval recall measured on a sample."""
    store = storage.store()
    recipe = step_recipe(context, config, {"payload": payload},
                         **guard_settings(embedder, guards))
    if (reused := reused_output(context, store, kinds.INDEX, recipe, config.rebuild)):
        return reused
    vectors = load_payload(payload)
    require_passed(payload_guards(vectors, embedder.load(), guards.config()))
    build = publish_index(store, vectors, config.to_domain(),
                          progress.for_step(context, "indexing", "rows"), recipe)
    m = build.manifest
    return build_output(
        build, payload_build_id=payload.build_id, index_type=m["index_type"],
        index_params=dg.MetadataValue.json(m["params"]), exact=m["exact"], ntotal=m["ntotal"],
        dim=m["dim"], self_recall_at_1=m["self_recall_at_1"], build_seconds=m["run"]["build_seconds"])
