"""The retrieval report: every model and baseline, scored the same way on the eval split.

Files of a ``report`` build: ``report.json`` (schema below) and ``report.md`` (the table).

``report.json``::

    {"payload_build_id", "index_id", "eval_id", "n_queries", "exclude_context",
     "models": {variant: {metric: value, ..., "checkpoint_id", "best_epoch", "val_cos"}},
     "baselines": {name: {metric: value, ...}}}

Metric keys: r_at_1, r_at_5, r_at_10, r_at_50, contain_at_50, mrr, mrr_at_10, median_rank,
n_queries.
"""

from __future__ import annotations

import json
from typing import Any

from lvm_pipeline.artifacts import ArtifactError, ArtifactStore, Build
from lvm_pipeline.checkpoint import load_checkpoint
from lvm_pipeline.evaluation import EvalConfig, copy_last_context, evaluate, predict
from lvm_pipeline.payload import Payload
from lvm_pipeline.progress import Progress, silent
from lvm_pipeline.sequences import SequenceSet

KIND = "report"
TABLE_METRICS = ("r_at_1", "r_at_5", "r_at_10", "contain_at_50", "mrr", "median_rank")


def build_report(
    payload: Payload,
    index_build: Build,
    index,
    eval_build: Build,
    eval_set: SequenceSet,
    model_builds: dict[str, Build],
    config: EvalConfig | None = None,
    progress: Progress = silent,
) -> dict[str, Any]:
    """Score every model checkpoint and the baselines on ``eval_set``; return report.json."""
    config = config or EvalConfig()
    predictions, model_info = {}, {}
    for name, build in model_builds.items():
        model, info = load_checkpoint(build)
        trained_on = info.get("payload_build_id")
        if trained_on != payload.build_id:
            raise ArtifactError(
                f"{build.path}: checkpoint {name} was trained on payload "
                f"{str(trained_on)[:12]}, but the report evaluates payload "
                f"{payload.build_id[:12]}; retrain it"
            )
        predictions[name] = predict(model, payload.vectors, eval_set, config.batch_size)
        model_info[name] = {"checkpoint_id": build.build_id, "best_epoch": info["best_epoch"],
                            "val_cos": info["history"][info["best_epoch"]]["val_cos"]}
    baselines = {"copy_last_context": copy_last_context(payload.vectors, eval_set)}
    metrics = evaluate({**predictions, **baselines}, payload.vectors, index, eval_set, config,
                       progress)
    return {
        "payload_build_id": payload.build_id,
        "index_id": index_build.build_id,
        "eval_id": eval_build.build_id,
        "n_queries": len(eval_set),
        "exclude_context": config.exclude_context,
        "models": {name: {**metrics[name], **model_info[name]} for name in predictions},
        "baselines": {name: metrics[name] for name in baselines},
    }


def markdown_table(report: dict[str, Any]) -> str:
    header = "| | " + " | ".join(TABLE_METRICS) + " |"
    lines = [header, "|" + "---|" * (len(TABLE_METRICS) + 1)]
    for group in ("models", "baselines"):
        for name, m in report[group].items():
            label = name if group == "models" else f"*{name}* (baseline)"
            cells = [f"{m[k]:.0f}" if k == "median_rank" else f"{m[k]:.3f}" for k in TABLE_METRICS]
            lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def render_markdown(report: dict[str, Any]) -> str:
    return (
        "# Retrieval report\n\n"
        f"{report['n_queries']} eval queries; payload `{report['payload_build_id'][:12]}`, "
        f"index `{report['index_id'][:12]}`, eval set `{report['eval_id'][:12]}`; "
        f"context rows {'excluded from' if report['exclude_context'] else 'kept in'} the "
        "candidates.\n\n" + markdown_table(report) + "\n"
    )


def publish_report(store: ArtifactStore, report: dict[str, Any]) -> Build:
    upstream = {"payload": report["payload_build_id"], "index": report["index_id"],
                "eval": report["eval_id"],
                **{f"models/{n}": m["checkpoint_id"] for n, m in report["models"].items()}}
    with store.stage(KIND) as staged:
        (staged / "report.json").write_text(json.dumps(report, indent=2, sort_keys=True) + "\n")
        (staged / "report.md").write_text(render_markdown(report))
        return store.publish(KIND, staged, {"n_queries": report["n_queries"]}, upstream)


def current_report(store: ArtifactStore) -> dict[str, Any]:
    return json.loads(store.current(KIND).file("report.json").read_text())
