"""Asset checks: the guards of :mod:`lvm_pipeline.guards` as Dagster checks.

Anything training or evaluation reads is ``blocking=True``: when the check fails, no
downstream asset materializes in that run. The consuming assets call the same guards again,
which protects runs that did not include the check.
"""

import dagster as dg

from lvm_pipeline.defs.resources import GuardsResource, StorageResource
from lvm_pipeline.defs.schedules import CHECK_WITH_ITS_ASSET
from lvm_pipeline.guards import GuardResult, check_alignment
from lvm_pipeline.payload import current_payload
from lvm_pipeline.sequences import EVAL_KIND, TRAIN_KIND, load_sets, require_payload


def to_check_result(result: GuardResult) -> dg.AssetCheckResult:
    """Observed figure, expected threshold, the rule and the first offending rows."""
    metadata = {"rule": result.rule, "figure": result.figure, "threshold": result.threshold,
                "details": dg.MetadataValue.json(result.details)}
    if result.examples:
        metadata["examples"] = dg.MetadataValue.md("\n".join(f"- {e}" for e in result.examples))
    return dg.AssetCheckResult(passed=result.passed, description=result.full_message(),
                               metadata=metadata)


def _sequences_aligned(kind: str, storage: StorageResource,
                       guards: GuardsResource) -> dg.AssetCheckResult:
    store = storage.store()
    payload = current_payload(store)
    build = store.current(kind)
    require_payload(build, payload)
    return to_check_result(check_alignment(payload, load_sets(build),
                                           guards.config().min_alignment_cosine))


@dg.asset_check(asset="aligned_training_sequences", blocking=True,
                automation_condition=CHECK_WITH_ITS_ASSET)
def check_training_sequences_aligned(storage: StorageResource,
                                     guards: GuardsResource) -> dg.AssetCheckResult:
    """Train and val targets and contexts are the payload vectors their truth keys name."""
    return _sequences_aligned(TRAIN_KIND, storage, guards)


@dg.asset_check(asset="aligned_eval", blocking=True,
                automation_condition=CHECK_WITH_ITS_ASSET)
def check_eval_sequences_aligned(storage: StorageResource,
                                 guards: GuardsResource) -> dg.AssetCheckResult:
    """Eval targets and contexts are the payload vectors their truth keys name."""
    return _sequences_aligned(EVAL_KIND, storage, guards)
