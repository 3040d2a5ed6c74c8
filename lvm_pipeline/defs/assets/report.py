"""The ``retrieval_report`` asset: every model and baseline scored on the eval split."""

import dagster as dg

from lvm_pipeline.checkpoint import kind_for
from lvm_pipeline.defs.metadata import build_metadata, progress_for
from lvm_pipeline.defs.resources import GuardsResource, StorageResource
from lvm_pipeline.defs.schedules import REBUILD_AFTER_CHECKED_UPSTREAM
from lvm_pipeline.guards import check_alignment
from lvm_pipeline.index import KIND as INDEX
from lvm_pipeline.index import load_index
from lvm_pipeline.models import VARIANTS
from lvm_pipeline.payload import current_payload
from lvm_pipeline.report import build_report, markdown_table, publish_report
from lvm_pipeline.sequences import EVAL_KIND, load_sets, require_payload


@dg.asset(group_name="evaluation", kinds={"json", "markdown"},
          deps=["payload", "aligned_eval", "faiss_index", *VARIANTS],
          automation_condition=REBUILD_AFTER_CHECKED_UPSTREAM)
def retrieval_report(context: dg.AssetExecutionContext, storage: StorageResource,
                     guards: GuardsResource) -> dg.MaterializeResult:
    """R@1/5/10, Contain@50, MRR and median rank of truth for the five models and the
    copy-last-context baseline, searching the whole payload."""
    store = storage.store()
    payload = current_payload(store)
    eval_build, index_build = store.current(EVAL_KIND), store.current(INDEX)
    require_payload(eval_build, payload)
    eval_sets = load_sets(eval_build)
    check_alignment(payload, eval_sets, guards.config().min_alignment_cosine).raise_if_failed()
    report = build_report(payload, index_build, load_index(index_build, payload), eval_build,
                          eval_sets["eval"], {v: store.current(kind_for(v)) for v in VARIANTS},
                          progress=progress_for(context, "evaluating"))
    build = publish_report(store, report)
    return dg.MaterializeResult(metadata=build_metadata(
        build, payload_build_id=payload.build_id, n_queries=report["n_queries"],
        table=dg.MetadataValue.md(markdown_table(report))))
