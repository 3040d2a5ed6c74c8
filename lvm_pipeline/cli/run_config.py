"""Run config for the graph, built from the assets' own typed config classes (``dg.RunConfig``):
what the command line and the tests pass to the runner."""

from collections.abc import Collection, Mapping

import dagster as dg

from lvm_pipeline.defs.assets.corpus import CorpusParams
from lvm_pipeline.defs.assets.index import IndexParams
from lvm_pipeline.defs.assets.models import TrainParams
from lvm_pipeline.defs.assets.payload import PayloadParams
from lvm_pipeline.defs.assets.report import ReportParams
from lvm_pipeline.defs.assets.sequences import EvalSequencesParams, TrainingSequencesParams
from lvm_pipeline.models import VARIANTS

__all__ = ["CorpusParams", "EvalSequencesParams", "IndexParams", "PayloadParams", "ReportParams",
           "TrainParams", "TrainingSequencesParams", "run_config"]


def run_config(corpus: CorpusParams | None = None, payload: PayloadParams | None = None,
               index: IndexParams | None = None, training: TrainParams | None = None,
               sequences: TrainingSequencesParams | None = None,
               eval_sequences: EvalSequencesParams | None = None,
               report: ReportParams | None = None,
               resources: Mapping[str, dg.ConfigurableResource] | None = None,
               only: Collection[str] | None = None) -> dg.RunConfig:
    """``corpus``, ``payload``, ``index``, ``sequences`` (the training set), ``eval_sequences``
    and ``report`` configure those assets, ``training`` every one of the five checkpoints;
    ``resources`` override the definitions' for this run (recorded in the run's config, as a
    launch from the UI records them).

    ``only``: keep the config of these assets alone (Dagster rejects config for ops outside a
    run's selection).
    """
    ops: dict[str, dg.Config] = {}
    if corpus is not None:
        ops["corpus"] = corpus
    if payload is not None:
        ops["payload"] = payload
    if index is not None:
        ops["faiss_index"] = index
    if sequences is not None:
        ops["aligned_training_sequences"] = sequences
    if eval_sequences is not None:
        ops["aligned_eval"] = eval_sequences
    if report is not None:
        ops["retrieval_report"] = report
    if training is not None:
        ops.update({variant: training for variant in VARIANTS})
    if only is not None:
        ops = {op: config for op, config in ops.items() if op in only}
    return dg.RunConfig(ops=ops, resources=dict(resources or {}))
