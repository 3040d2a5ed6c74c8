"""The ``retrieval_report`` asset: every model and baseline scored on the eval split."""

from dataclasses import asdict

import dagster as dg

from lvm_pipeline.defs.automation import REBUILD_AFTER_CHECKED_UPSTREAM
from lvm_pipeline.defs.code_versions import code_version
from lvm_pipeline.defs.metadata import build_output, tracked_metadata
from lvm_pipeline.defs.resources import (
    EmbedderResource,
    GuardsResource,
    ProgressResource,
    StorageResource,
    TrackingResource,
)
from lvm_pipeline.evaluation import EvalConfig, confidence_markdown, sequence_use_markdown
from lvm_pipeline.guards import evaluation_guards, payload_guards, require_passed
from lvm_pipeline.models import VARIANTS
from lvm_pipeline.payload import payload_of
from lvm_pipeline.report import (
    HEADLINE_METRICS,
    ReportInputs,
    build_report,
    embedded_images_markdown,
    fit_report_baselines,
    markdown_table,
    publish_report,
)
from lvm_pipeline.search import load_index
from lvm_pipeline.sequences import load_sets
from lvm_pipeline.store import Build, report_lineage

INPUTS = {"eval_build": dg.AssetIn("aligned_eval"), "index_build": dg.AssetIn("faiss_index"),
          "train_build": dg.AssetIn("aligned_training_sequences"),
          **{variant: dg.AssetIn(variant) for variant in VARIANTS}}


class ReportParams(dg.Config):
    """``device``: where the exact search runs: ``cpu`` (FAISS + numpy) or ``cuda`` (torch
    GEMM + top-k over the payload on the GPU, lvm_pipeline/search/torch_search.py).
    ``sample_queries``: score a seeded sample (``sample_seed``) of this many eval windows
    instead of all (None); fewer queries are faster and resolve only larger differences."""

    device: str = EvalConfig.device
    sample_queries: int | None = EvalConfig.sample_queries
    sample_seed: int = EvalConfig.sample_seed
    # Compute even when this recipe (code, config, inputs) made a build before.
    rebuild: bool = False


@dg.asset(group_name="evaluation", kinds={"json", "markdown"}, ins=INPUTS,
          code_version=code_version("retrieval_report"),
          automation_condition=REBUILD_AFTER_CHECKED_UPSTREAM)
def retrieval_report(context: dg.AssetExecutionContext, config: ReportParams,
                     eval_build: Build, index_build: Build, train_build: Build,
                     storage: StorageResource, embedder: EmbedderResource,
                     guards: GuardsResource, tracking: TrackingResource,
                     progress: ProgressResource,
                     **models: Build) -> dg.Output:
    """R@k, MRR, rank of truth, margins, contrastive accuracy, paraphrase ratio and latency for
    the five models and the baselines (copy-last, mean-of-context, ridge, learned blend, linear
    InfoNCE map, oracle)."""
    store = storage.store()
    # Refuses, naming both builds, inputs of different payloads or training sets; from here
    # on every model was trained on train_build, over the payload the index holds.
    report_lineage(index_build, eval_build, train_build, models)
    payload = payload_of(store, index_build)
    require_passed([*payload_guards(payload, embedder.load(), guards.config()),
                    *evaluation_guards(payload, eval_build, [train_build], guards.config())])
    eval_set = load_sets(eval_build)["eval"]
    eval_config = EvalConfig(device=config.device, sample_queries=config.sample_queries,
                             sample_seed=config.sample_seed)
    with tracking.start_run(context, store.root, {"eval": asdict(eval_config)}) as tracked:
        inputs = ReportInputs(payload, index_build, load_index(index_build, payload), eval_build,
                              eval_set, train_build, load_sets(train_build), models)
        report, results = build_report(inputs, fit_report_baselines(inputs), eval_config,
                                       progress.for_step(context, "evaluating", "payload rows"))
        build = publish_report(store, report, results, eval_set)
        headline = {f"{name}/{metric}": float(figures[metric])
                    for group in ("models", "baselines")
                    for name, figures in report[group].items() for metric in HEADLINE_METRICS}
        tracked.record_build(build, {"n_queries": report["n_queries"], **headline})
        tracked.log_build_files(build, sorted(n for n in build.manifest["files"]
                                              if n.startswith("plots/") or n.endswith(".md")))
    return build_output(
        build, {"table": dg.MetadataValue.md(markdown_table(report)), **headline},
        payload_build_id=payload.build_id, n_queries=report["n_queries"],
        oracle_ok=report["oracle_ok"], lineage=dg.MetadataValue.json(report["lineage"]),
        confidence=dg.MetadataValue.md(confidence_markdown(report["confidence"])),
        sequence_use=dg.MetadataValue.md(sequence_use_markdown(report["sequence_use"])),
        plots=dg.MetadataValue.md(embedded_images_markdown(build)), **tracked_metadata(tracked))
