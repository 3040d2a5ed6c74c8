"""The ``retrieval_report`` asset: every model and baseline scored on the eval split."""

import dagster as dg

from lvm_pipeline.checkpoint import kind_for
from lvm_pipeline.defs.metadata import build_metadata, progress_for
from lvm_pipeline.defs.resources import EmbedderResource, GuardsResource, StorageResource
from lvm_pipeline.defs.schedules import REBUILD_AFTER_CHECKED_UPSTREAM
from lvm_pipeline.evaluation import EvalConfig
from lvm_pipeline.guards import evaluation_guards, payload_guards, require_passed
from lvm_pipeline.index import KIND as INDEX
from lvm_pipeline.index import load_index
from lvm_pipeline.models import VARIANTS
from lvm_pipeline.payload import current_payload
from lvm_pipeline.report import build_report, embedded_images_markdown, markdown_table, publish_report
from lvm_pipeline.sequences import EVAL_KIND, TRAIN_KIND, load_sets


class ReportParams(dg.Config):
    """``device``: where the exact search runs: ``cpu`` (FAISS + numpy) or ``cuda`` (torch
    GEMM + top-k over the payload on the GPU, lvm_pipeline/torch_search.py)."""

    device: str = EvalConfig.device


@dg.asset(group_name="evaluation", kinds={"json", "markdown"},
          deps=["payload", "aligned_training_sequences", "aligned_eval", "faiss_index", *VARIANTS],
          automation_condition=REBUILD_AFTER_CHECKED_UPSTREAM)
def retrieval_report(context: dg.AssetExecutionContext, config: ReportParams,
                     storage: StorageResource,
                     embedder: EmbedderResource, guards: GuardsResource) -> dg.MaterializeResult:
    """R@k, MRR, rank of truth, margins, contrastive accuracy, paraphrase ratio and latency for
    the five models and the baselines (copy-last, mean-of-context, ridge, oracle)."""
    store = storage.store()
    payload = current_payload(store)
    eval_build, train_build, index_build = (store.current(k) for k in (EVAL_KIND, TRAIN_KIND,
                                                                       INDEX))
    models = {v: store.current(kind_for(v)) for v in VARIANTS}
    # Leakage is judged against the training sets these models actually trained on.
    trained_on = [store.get(TRAIN_KIND, m.manifest["upstream"][TRAIN_KIND]) for m in models.values()]
    require_passed([*payload_guards(payload, embedder.load(), guards.config()),
                    *evaluation_guards(payload, eval_build, trained_on, guards.config())])
    eval_set = load_sets(eval_build)["eval"]
    report, results = build_report(
        payload, index_build, load_index(index_build, payload), eval_build, eval_set,
        train_build, load_sets(train_build), models, EvalConfig(device=config.device),
        progress_for(context, "evaluating"))
    build = publish_report(store, report, results, eval_set)
    return dg.MaterializeResult(metadata=build_metadata(
        build, payload_build_id=payload.build_id, n_queries=report["n_queries"],
        oracle_ok=report["oracle_ok"], table=dg.MetadataValue.md(markdown_table(report)),
        plots=dg.MetadataValue.md(embedded_images_markdown(build))))
