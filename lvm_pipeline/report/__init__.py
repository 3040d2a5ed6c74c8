"""Stage 5: the retrieval report, its rendering, diagnosis, trends, promotion rule.

What the report contains (:mod:`.build`) and how it reads (:mod:`.render`), the two baselines it
trains with the models' loop (:mod:`.trained_baselines`), one predictor up close
(:mod:`.diagnosis`), change across retrains (:mod:`.trends`) and the promotion gate's rule
(:mod:`.promotion`).
"""

from lvm_pipeline.report.build import (
    HEADLINE_METRICS,
    ORACLE_MIN_R_AT_1,
    ReportInputs,
    ReportPredictors,
    build_report,
    current_report,
    fit_report_baselines,
    model_predictor,
    publish_report,
    read_report,
    report_baseline_recipe,
    report_latency,
    report_predictors,
)
from lvm_pipeline.report.diagnosis import diagnose
from lvm_pipeline.report.promotion import (
    Promotion,
    PromotionConfig,
    gate_report,
    promoted_after,
    undecided,
    underpowered,
)
from lvm_pipeline.report.render import (
    RESULT_COLUMNS,
    embedded_images_markdown,
    lineage_markdown,
    markdown_table,
    render_markdown,
    results_rows,
    trend_figures,
)
from lvm_pipeline.report.trained_baselines import (
    TrainedBaseline,
    fit_trained_baselines,
    load_trained_baselines,
    publish_trained_baselines,
)
from lvm_pipeline.report.trends import compare_reports, comparison_markdown

__all__ = [
    "HEADLINE_METRICS",
    "ORACLE_MIN_R_AT_1",
    "RESULT_COLUMNS",
    "Promotion",
    "PromotionConfig",
    "ReportInputs",
    "ReportPredictors",
    "TrainedBaseline",
    "build_report",
    "compare_reports",
    "comparison_markdown",
    "current_report",
    "diagnose",
    "embedded_images_markdown",
    "fit_report_baselines",
    "fit_trained_baselines",
    "gate_report",
    "lineage_markdown",
    "load_trained_baselines",
    "markdown_table",
    "model_predictor",
    "promoted_after",
    "publish_report",
    "publish_trained_baselines",
    "read_report",
    "render_markdown",
    "report_baseline_recipe",
    "report_latency",
    "report_predictors",
    "results_rows",
    "trend_figures",
    "undecided",
    "underpowered",
]
