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
    given = {"corpus": corpus, "payload": payload, "faiss_index": index,
             "aligned_training_sequences": sequences, "aligned_eval": eval_sequences,
             "retrieval_report": report, **{variant: training for variant in VARIANTS}}
    ops = {op: config for op, config in given.items()
           if config is not None and (only is None or op in only)}
    return dg.RunConfig(ops=ops, resources=dict(resources or {}))
