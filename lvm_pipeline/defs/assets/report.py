"""The ``retrieval_report`` asset: every model and baseline scored on the eval split."""

from dataclasses import asdict
from typing import Any

import dagster as dg

from lvm_pipeline.defs.automation import REBUILD_AFTER_CHECKED_UPSTREAM
from lvm_pipeline.defs.code_versions import code_version, trained_baselines_code_version
from lvm_pipeline.defs.metadata import build_output, tracked_metadata
from lvm_pipeline.defs.resources import (
    EmbedderResource,
    GuardsResource,
    ProgressResource,
    StorageResource,
    TrackingResource,
)
from lvm_pipeline.defs.reuse import guard_settings, reused_output, step_recipe
from lvm_pipeline.evaluation import (
    EvalConfig,
    confidence_markdown,
    forward_signal_text,
    sequence_use_markdown,
)
from lvm_pipeline.guards import evaluation_guards, payload_guards, require_passed
from lvm_pipeline.models import VARIANTS
from lvm_pipeline.payload import payload_of
from lvm_pipeline.report import (
    HEADLINE_METRICS,
    RESULT_COLUMNS,
    ReportInputs,
    ReportPredictors,
    TrainedBaseline,
    build_report,
    embedded_images_markdown,
    fit_report_baselines,
    lineage_markdown,
    load_trained_baselines,
    publish_report,
    publish_trained_baselines,
    report_baseline_recipe,
    report_latency,
    report_predictors,
    results_rows,
    trend_figures,
)
from lvm_pipeline.search import load_index
from lvm_pipeline.sequences import load_sets
from lvm_pipeline.store import ArtifactStore, Build, kinds, recipe_key, report_lineage

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
    """R@k, MRR, rank of truth, margins, contrastive accuracy, paraphrase ratio for the five
    models and the baselines (copy-last, mean-of-context, ridge, learned blend, linear InfoNCE
    map, oracle), the payload's forward signal, and each predictor's latency (metadata only:
    the report's files hold no timing, so identical inputs rebuild the identical report)."""
    store = storage.store()
    # Refuses, naming both builds, inputs of different payloads or training sets; from here
    # on every model was trained on train_build, over the payload the index holds.
    report_lineage(index_build, eval_build, train_build, models)
    recipe = step_recipe(context, config, {"eval": eval_build, "index": index_build,
                                           "train": train_build, **models},
                         **guard_settings(embedder, guards))
    if (reused := reused_output(context, store, kinds.REPORT, recipe, config.rebuild)):
        return reused
    payload = payload_of(store, index_build)
    require_passed([*payload_guards(payload, embedder.load(), guards.config()),
                    *evaluation_guards(payload, eval_build, [train_build], guards.config())])
    eval_set = load_sets(eval_build)["eval"]
    eval_config = EvalConfig(device=config.device, sample_queries=config.sample_queries,
                             sample_seed=config.sample_seed)
    with tracking.start_run(context, store.root, {"eval": asdict(eval_config)}) as tracked:
        inputs = ReportInputs(payload, index_build, load_index(index_build, payload), eval_build,
                              eval_set, train_build, load_sets(train_build), models)
        predictors = report_predictors(
            inputs, _trained_baselines(context, store, inputs, config.rebuild))
        report, results = build_report(inputs, predictors, eval_config,
                                       progress.for_step(context, "evaluating", "payload rows"))
        build = publish_report(store, report, results, eval_set, recipe)
        latency = report_latency(inputs, predictors, eval_config)
        headline = {f"{name}/{metric}": float(figures[metric])
                    for group in ("models", "baselines")
                    for name, figures in report[group].items() for metric in HEADLINE_METRICS}
        tracked.record_build(build, {"n_queries": report["n_queries"], **headline})
        tracked.log_build_files(build, sorted(n for n in build.manifest["files"]
                                              if n.startswith("plots/") or n.endswith(".md")))
    # The page opens on the results, then one lineage block and the plots; the figures worth
    # plotting across retrains (numbers: the Plots tab draws them) and the long tables after.
    return build_output(
        build, _first_entries(report, latency, build), with_upstream=False,
        **trend_figures(report),
        confidence=dg.MetadataValue.md(confidence_markdown(report["confidence"])),
        sequence_use=dg.MetadataValue.md(sequence_use_markdown(report["sequence_use"])),
        n_queries=dg.MetadataValue.text(_queries_text(report)), oracle_ok=report["oracle_ok"],
        payload_build_id=payload.build_id,
        baseline_train_seconds=dg.MetadataValue.json(_train_seconds(predictors)),
        **tracked_metadata(tracked))


def _trained_baselines(context: dg.AssetExecutionContext, store: ArtifactStore,
                       inputs: ReportInputs, rebuild: bool) -> dict[str, TrainedBaseline]:
    """The report's two trained baselines: the build their recipe (the code that trains them,
    the models' recipe, the training set and its payload) made before, or trained now and
    kept. They depend on none of the report's own code, so a report whose rendering changed
    scores the baselines it trained before instead of training them again."""
    recipe = {"asset": "retrieval_report/trained_baselines",
              "code_version": trained_baselines_code_version(),
              "config": asdict(report_baseline_recipe(inputs)),
              "inputs": {"payload": inputs.payload.build_id,
                         "train": inputs.train_build.build_id}}
    if not rebuild and (build := store.build_for_recipe(kinds.TRAINED_BASELINES,
                                                        recipe_key(recipe))) is not None:
        context.log.info(f"trained baselines: reused {build.kind} {build.build_id[:12]} (same "
                         "training code, recipe and training set)")
        return load_trained_baselines(build)
    trained = fit_report_baselines(inputs)
    build = publish_trained_baselines(store, trained, {
        kinds.PAYLOAD: inputs.payload.build_id,
        kinds.TRAIN_SEQUENCES: inputs.train_build.build_id}, recipe)
    context.log.info(f"trained baselines: built {build.kind} {build.build_id[:12]}")
    return trained


def _first_entries(report: dict[str, Any], latency: dict[str, dict[str, float]], build: Build
                   ) -> dict[str, Any]:
    """What the report's page shows first: the results table (a table entry, which the UI
    draws inline; Markdown over 1,000 characters hides behind a link), the forward signal's
    line, the lineage and the plots."""
    schema = dg.TableSchema(columns=[dg.TableColumn(name, kind, description)
                                     for name, kind, description in RESULT_COLUMNS])
    records = [dg.TableRecord(row) for row in results_rows(report, latency)]
    return {"results": dg.MetadataValue.table(records, schema),
            "forward_signal": dg.MetadataValue.md(forward_signal_text(report["forward_signal"])),
            "lineage": dg.MetadataValue.md(lineage_markdown(report)),
            "plots": dg.MetadataValue.md(embedded_images_markdown(build))}


def _queries_text(report: dict[str, Any]) -> str:
    """How many eval queries the report scored, and of what: a count, not a trend to plot."""
    sample = report["query_sample"]
    if sample["windows"] is None:
        return f"{report['n_queries']} (every eval window)"
    return (f"{report['n_queries']} (a sample, seed {sample['seed']}, of "
            f"{sample['n_eval_windows']} eval windows)")


def _train_seconds(predictors: ReportPredictors) -> dict[str, float]:
    """Seconds each trained baseline took to train, a timing kept out of report.json."""
    return {name: round(fit.result.seconds, 1) for name, fit in predictors.trained.items()}
