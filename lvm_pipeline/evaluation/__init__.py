"""How predictions are judged: metrics, baselines, bootstrap, sequence use.

Retrieval metrics (:mod:`.metrics`), the untrained baselines and ridge (:mod:`.baselines`,
:mod:`.ridge`), the payload's forward signal beside them (:mod:`.forward_signal`), paired
bootstrap intervals (:mod:`.bootstrap`) and whether a model uses its sequence
(:mod:`.sequence_use`).
"""

from lvm_pipeline.evaluation.baselines import (
    Predictor,
    baseline_predictors,
    copy_last_context,
    mean_of_context,
    oracle,
)
from lvm_pipeline.evaluation.bootstrap import (
    METRICS,
    BootstrapConfig,
    confidence,
    confidence_markdown,
    paired_differences,
    verdict,
)
from lvm_pipeline.evaluation.forward_signal import (
    forward_signal_per_window,
    forward_signal_text,
    measure_forward_signal,
)
from lvm_pipeline.evaluation.metrics import (
    CONTAIN_K,
    EvalConfig,
    QuerySetResult,
    evaluate,
    latency_ms,
    mrr_at_k,
    predict,
    ranks_only,
)
from lvm_pipeline.evaluation.ridge import PENALTIES, copy_last_prior, normal_equations, solve_ridge
from lvm_pipeline.evaluation.sequence_use import (
    describe_sequence_use,
    measure_sequence_use,
    model_parts,
    sequence_use_markdown,
)

__all__ = [
    "CONTAIN_K",
    "METRICS",
    "PENALTIES",
    "BootstrapConfig",
    "EvalConfig",
    "Predictor",
    "QuerySetResult",
    "baseline_predictors",
    "confidence",
    "confidence_markdown",
    "copy_last_context",
    "copy_last_prior",
    "describe_sequence_use",
    "evaluate",
    "forward_signal_per_window",
    "forward_signal_text",
    "latency_ms",
    "mean_of_context",
    "measure_forward_signal",
    "measure_sequence_use",
    "model_parts",
    "mrr_at_k",
    "normal_equations",
    "oracle",
    "paired_differences",
    "predict",
    "ranks_only",
    "sequence_use_markdown",
    "solve_ridge",
    "verdict",
]
