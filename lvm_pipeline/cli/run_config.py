"""Run config for the whole graph from a few settings (used by the CLI and the tests)."""

from collections.abc import Collection
from typing import Any

from lvm_pipeline.models import VARIANTS


def run_config(corpus: dict[str, Any] | None = None,
               training: dict[str, Any] | None = None,
               payload: dict[str, Any] | None = None,
               index: dict[str, Any] | None = None,
               only: Collection[str] | None = None) -> dict[str, Any]:
    """``corpus``, ``payload`` and ``index`` configure those assets; ``training`` every one of
    the five checkpoints.

    ``only``: keep the config of these ops alone (Dagster rejects config for ops outside a
    run's selection).
    """
    ops: dict[str, Any] = {}
    if corpus:
        ops["corpus"] = {"config": corpus}
    if payload:
        ops["payload"] = {"config": payload}
    if index:
        ops["faiss_index"] = {"config": index}
    if training:
        ops.update({variant: {"config": training} for variant in VARIANTS})
    if only is not None:
        ops = {op: config for op, config in ops.items() if op in only}
    return {"ops": ops}
