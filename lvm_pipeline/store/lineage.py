"""What one report may score together, and the lineage it records of what it scored.

A report compares models with baselines on one eval set through one index. The comparison
means something only when every part of it was made from the same payload, and every model
(and the ridge baseline) learned from the same training set: a model trained over another
payload retrieves from a vector space the index does not hold, and two training sets make the
models' differences a difference of data. Two overlapping runs once produced exactly that mix,
silently; :func:`report_lineage` refuses it with a line that names both builds.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from lvm_pipeline.store import kinds
from lvm_pipeline.store.artifacts import ArtifactError, ArtifactStore, Build


class LineageError(ArtifactError):
    """The inputs of one report were made from different payloads or training sets."""


def _trained_on(build: Build) -> str | None:
    return build.manifest.get("upstream", {}).get(kinds.TRAIN_SEQUENCES)


def report_lineage(index: Build, eval_set: Build, train: Build,
                   models: Mapping[str, Build]) -> dict[str, Any]:
    """The lineage of a report over these inputs; raises :class:`LineageError` naming the two
    builds of every disagreement.

    The payload is the index's: the vector space the report searches.
    """
    payload = index.manifest.get("payload_build_id")
    problems = []
    for what, build in ((kinds.EVAL_SEQUENCES, eval_set), (kinds.TRAIN_SEQUENCES, train)):
        if build.manifest.get("payload_build_id") != payload:
            problems.append(f"{what} {build.build_id[:12]} indexes payload "
                            f"{str(build.manifest.get('payload_build_id'))[:12]}, the index "
                            f"{index.build_id[:12]} payload {str(payload)[:12]}")
    for name, build in sorted(models.items()):
        if build.manifest.get("payload_build_id") != payload:
            problems.append(f"{name} {build.build_id[:12]} was trained over payload "
                            f"{str(build.manifest.get('payload_build_id'))[:12]}, the index "
                            f"{index.build_id[:12]} holds payload {str(payload)[:12]}")
        elif _trained_on(build) != train.build_id:
            problems.append(f"{name} {build.build_id[:12]} was trained on "
                            f"{kinds.TRAIN_SEQUENCES} {str(_trained_on(build))[:12]}, the "
                            "baselines on "
                            f"{train.build_id[:12]}")
    if problems:
        raise LineageError("the report's inputs disagree: " + "; ".join(problems)
                           + " (rebuild them together: `lvm run`)")
    return {kinds.PAYLOAD: payload, kinds.INDEX: index.build_id,
            kinds.EVAL_SEQUENCES: eval_set.build_id, kinds.TRAIN_SEQUENCES: train.build_id,
            "models": {name: build.build_id for name, build in sorted(models.items())}}


def as_upstream(lineage: Mapping[str, Any]) -> dict[str, str]:
    """A report's lineage as a build's ``upstream``: keyed by artifact kind, like every other
    build's, so lineage readers need no name mapping."""
    upstream = {kind: lineage[kind] for kind in (kinds.PAYLOAD, kinds.INDEX, kinds.EVAL_SEQUENCES,
                                                 kinds.TRAIN_SEQUENCES)}
    upstream.update({kinds.checkpoint(name): build_id
                     for name, build_id in lineage["models"].items()})
    return upstream


def recorded_inputs(store: ArtifactStore, lineage: Mapping[str, Any]) -> dict[str, Any]:
    """The builds a report's recorded lineage names, loaded (and so checked to exist)."""
    return {"index": store.get(kinds.INDEX, lineage[kinds.INDEX]),
            "eval_set": store.get(kinds.EVAL_SEQUENCES, lineage[kinds.EVAL_SEQUENCES]),
            "train": store.get(kinds.TRAIN_SEQUENCES, lineage[kinds.TRAIN_SEQUENCES]),
            "models": {name: store.get(kinds.checkpoint(name), build_id)
                       for name, build_id in lineage["models"].items()}}
