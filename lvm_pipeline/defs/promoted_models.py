"""Which checkpoint of each variant is promoted, recorded in the Dagster instance: one external
asset per variant, ``promoted_<variant>`` in the group ``promotion``, whose newest valid event
names it.

Why this shape:
- The instance is already the source of truth for what was built (the IO manager resolves every
  input from its materializations); which build is promoted is a fact of the same kind, so it
  lives there as well, and the UI shows it for free: the asset's page lists every promotion with
  who or what made it, a link to the checkpoint it names, and the gate's MRR@10 difference and
  interval, numeric so they plot across retrains.
- One asset per variant, not one for all five: a variant's history is its own asset's, the gate
  promoting four candidates while holding one back needs no merging, and two promotions of
  different variants never overwrite each other. Each depends on its variant's checkpoint, so
  the graph draws where a promotion comes from.
- Each event carries its variant's whole state (:class:`~lvm_pipeline.report.Promotion` as
  JSON, including the builds promoted before, for ``lvm rollback``), so reading the state is one
  query. It also carries ``build_id``/``kind`` like every materialization of this project.
- The UI can record an event on any asset (*Report materialization event*), with any metadata
  or none. Such an event is not a promotion: readers take the newest event whose record is
  valid, and say which events they skipped and why (:func:`read_promotion`).
- Every change of the state (the gate, ``lvm promote``, ``lvm rollback``) reads, decides and
  writes under one lock (:func:`promotion_lock`), so two changes at the same instant both land,
  in order, and a rollback made while the gate scores is never overwritten by the gate.
- Events are reported with ``DagsterInstance.report_runless_asset_event``: by the gate check
  during its run (the record names the run), by ``lvm promote`` and ``lvm rollback`` outside any
  run. The assets are external (``AssetSpec``, no function): no job materializes them.
- No file mirror in the artifact store: a second copy of the state could drift from the first.
  Readers outside Dagster use ``lvm models --promoted --json``.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import dagster as dg

from lvm_pipeline.defs.metadata import ARTIFACT_KIND, BUILD_ID, materialization_of_build
from lvm_pipeline.models import VARIANTS
from lvm_pipeline.report import Promotion
from lvm_pipeline.store import kinds

GROUP = "promotion"
RECORD = "promotion"
# Where earlier versions recorded the state; still read, so an upgrade keeps every promotion
# (and every demoted build) made before it.
LEGACY_PREFIX = "promoted_models"
_PAGE = 50
Warn = Callable[[str], None]


def promoted_key(variant: str) -> dg.AssetKey:
    return dg.AssetKey(f"promoted_{variant}")


def _legacy_key(variant: str) -> dg.AssetKey:
    return dg.AssetKey([LEGACY_PREFIX, variant])


@contextlib.contextmanager
def promotion_lock(instance: dg.DagsterInstance) -> Iterator[None]:
    """Held while the promotion state is read, decided on and written. A file lock in the
    instance's folder: every writer on this machine (runs, `lvm`, the UI's runs) shares it;
    writers on several machines sharing one Postgres instance share its folder only if the
    deployment mounts it (docs/deploy.md)."""
    folder = Path(instance.root_directory)
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / ".lvm-promotion.lock", "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        yield


def _events(instance: dg.DagsterInstance, key: dg.AssetKey) -> Iterator[dg.EventLogRecord]:
    """Materializations of ``key``, newest first."""
    cursor = None
    while True:
        page = instance.fetch_materializations(key, limit=_PAGE, cursor=cursor)
        yield from page.records
        if not page.has_more:
            return
        cursor = page.cursor


def read_promotion(instance: dg.DagsterInstance, variant: str, warn: Warn) -> Promotion | None:
    """The variant's promoted state: the record of its newest valid promotion event, or None
    when nothing was ever promoted. Each newer event without a valid record (one reported by
    hand in the UI, say) is skipped, and ``warn`` says which and why."""
    for key in (promoted_key(variant), _legacy_key(variant)):
        for record in _events(instance, key):
            materialization = record.asset_materialization
            entry = materialization.metadata.get(RECORD) if materialization else None
            try:
                if entry is None:
                    raise ValueError(f"it has no {RECORD!r} metadata entry")
                promotion = Promotion.from_record(entry.value)
                if promotion.variant != variant:
                    raise ValueError(f"it names variant {promotion.variant!r}")
                return promotion
            except ValueError as err:
                when = dt.datetime.fromtimestamp(record.timestamp, dt.UTC)
                # The description is what a person typed into the UI's dialog: how they
                # recognise their event.
                described = (f", description {materialization.description!r}"
                             if materialization and materialization.description else "")
                warn(f"skipped the event on {key.to_user_string()} of {when:%Y-%m-%d %H:%M:%S} "
                     f"UTC (run {record.run_id or 'none'}, storage id {record.storage_id}"
                     f"{described}): not a promotion ({err}); the state is the newest valid "
                     "event's")
    return None


def read_promotions(instance: dg.DagsterInstance, warn: Warn) -> dict[str, Promotion]:
    """Every variant that has a promoted build → its state."""
    return {v: p for v in VARIANTS if (p := read_promotion(instance, v, warn)) is not None}


def checkpoint_url(instance: dg.DagsterInstance, variant: str, build_id: str) -> str:
    """The UI's page of the materialization that produced ``build_id`` (its event selected on
    the checkpoint's Events tab), or the checkpoint's page when none is recorded here (a build
    promoted by hand from another instance)."""
    record = materialization_of_build(instance, dg.AssetKey(variant), build_id)
    if record is None:
        return f"/assets/{variant}"
    return f"/assets/{variant}?view=events&time={int(record.timestamp * 1000)}"


def record_promotion(instance: dg.DagsterInstance, promotion: Promotion,
                     difference: dict[str, Any] | None = None) -> None:
    """Record ``promotion`` as the variant's new state (call under :func:`promotion_lock`);
    ``difference``: the gate's candidate − promoted MRR@10 interval, kept as numbers (the UI
    plots them)."""
    variant = promotion.variant
    metadata: dict[str, Any] = {
        "checkpoint": dg.MetadataValue.url(checkpoint_url(instance, variant, promotion.build_id)),
        BUILD_ID: promotion.build_id, ARTIFACT_KIND: kinds.checkpoint(variant),
        "action": promotion.action, "by": promotion.by, "reason": promotion.reason}
    if difference is not None:
        metadata.update({f"mrr_at_10_difference{suffix}": round(float(difference[key]), 4)
                         for suffix, key in (("", "value"), ("_low", "low"), ("_high", "high"))})
    metadata[RECORD] = dg.MetadataValue.json(promotion.to_record())
    instance.report_runless_asset_event(dg.AssetMaterialization(
        promoted_key(variant), description=promotion.reason, metadata=metadata))


@dg.definitions
def promoted_models() -> dg.Definitions:
    return dg.Definitions(assets=[
        dg.AssetSpec(promoted_key(variant), deps=[variant], group_name=GROUP,
                     kinds={"promotion"},
                     description=f"Which {variant} checkpoint is promoted (not a checkpoint "
                                 f"itself): set by the promotion gate (check_candidates_not_worse "
                                 "on retrieval_report), `lvm promote` or `lvm rollback`. Each "
                                 "promotion names the build (`build_id`), links to the "
                                 "materialization that produced it and, from the gate, states its MRR@10 "
                                 "difference and interval. An event reported here by hand "
                                 "(*Report materialization event*) is not a promotion: this "
                                 "page then shows its empty metadata, but the promoted build "
                                 "stays that of the newest event with a `promotion` entry "
                                 "(the Events tab; `lvm models --promoted`).")
        for variant in VARIANTS])
