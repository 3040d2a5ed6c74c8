"""Which checkpoint of each variant is promoted, recorded in the Dagster instance: one external
asset per variant, ``promoted_models/<variant>``, whose latest materialization names it.

Why this shape:
- The instance is already the source of truth for what was built (the IO manager resolves every
  input from its materializations); which build is promoted is a fact of the same kind, so it
  lives there as well, and the UI shows it for free: the asset's page lists every promotion with
  who or what made it, and the gate's MRR@10 difference and interval are numeric metadata, so
  they plot across retrains.
- One asset per variant, not one for all five: a variant's history is its own asset's, the gate
  promoting four candidates while holding one back needs no merging, and two promotions of
  different variants never overwrite each other.
- Each event carries its variant's whole state (:class:`~lvm_pipeline.report.promotion.Promotion` as
  JSON, including the builds promoted before, for ``lvm rollback``), so reading the state is one
  query, the latest materialization. It also carries ``build_id``/``kind`` like every
  materialization of this project, so an asset could take a promoted model as an input through
  the IO manager.
- Events are reported with ``DagsterInstance.report_runless_asset_event``: by the gate check
  during its run (the record names the run), by ``lvm promote`` and ``lvm rollback`` outside any
  run. The assets are external (``AssetSpec``, no function): no job materializes them, so no
  asset selection can promote by accident.
- No file mirror in the artifact store: a second copy of the state could drift from the first.
  Readers outside Dagster use ``lvm models --promoted --json``.
"""

from __future__ import annotations

from typing import Any

import dagster as dg

from lvm_pipeline.defs.metadata import ARTIFACT_KIND, BUILD_ID
from lvm_pipeline.models import VARIANTS
from lvm_pipeline.report import Promotion
from lvm_pipeline.store import kinds

PROMOTED = "promoted_models"
RECORD = "promotion"


def promoted_key(variant: str) -> dg.AssetKey:
    return dg.AssetKey([PROMOTED, variant])


def read_promotion(instance: dg.DagsterInstance, variant: str) -> Promotion | None:
    """The variant's promoted state, or None when nothing was ever promoted."""
    entry = instance.get_latest_materialization_event(promoted_key(variant))
    if entry is None or entry.asset_materialization is None:
        return None
    return Promotion.from_record(entry.asset_materialization.metadata[RECORD].value)


def read_promotions(instance: dg.DagsterInstance) -> dict[str, Promotion]:
    """Every variant that has a promoted build → its state."""
    return {v: p for v in VARIANTS if (p := read_promotion(instance, v)) is not None}


def record_promotion(instance: dg.DagsterInstance, promotion: Promotion,
                     difference: dict[str, Any] | None = None) -> None:
    """Record ``promotion`` as the variant's new state; ``difference``: the gate's candidate −
    promoted MRR@10 interval, kept as numbers (the UI plots them)."""
    metadata: dict[str, Any] = {
        BUILD_ID: promotion.build_id, ARTIFACT_KIND: kinds.checkpoint(promotion.variant),
        "action": promotion.action, "by": promotion.by,
        RECORD: dg.MetadataValue.json(promotion.to_record())}
    if difference is not None:
        metadata.update({f"mrr_at_10_difference{suffix}": float(difference[key])
                         for suffix, key in (("", "value"), ("_low", "low"), ("_high", "high"))})
    instance.report_runless_asset_event(dg.AssetMaterialization(
        promoted_key(promotion.variant), description=promotion.reason, metadata=metadata))


@dg.definitions
def promoted_models() -> dg.Definitions:
    return dg.Definitions(assets=[
        # No deps on retrieval_report: an external asset downstream of it would join every
        # `.downstream()` selection, which Dagster then refuses (it cannot be materialized).
        dg.AssetSpec(promoted_key(variant), group_name="evaluation",
                     description=f"The promoted {variant} checkpoint: set by the promotion gate "
                                 "(check_candidates_not_worse on retrieval_report), `lvm "
                                 "promote` or `lvm rollback`; lvm_pipeline/report/promotion.py.")
        for variant in VARIANTS])
