"""The promotion gate: a retrain's checkpoints are candidates, and each replaces the promoted
model of its variant only if it is not significantly worse on the same eval queries.

First, when a candidate is to be decided on (:func:`undecided`: one that is neither promoted
nor demoted), the eval set must be able to see a loss (:func:`underpowered`): when the report's
widest paired 95 % MRR@10 interval is wider than ``resolution`` either side, no candidate is
promoted and the check warns, saying what the eval set resolves and how many eval articles
would resolve enough. On a handful of eval queries every interval spans everything, so the rule
below would promote any candidate however bad, in a run that looks green.

Then the rule, per variant (:func:`gate_report`, run by the blocking check on the report):

- no promoted model yet: the candidate is promoted (the first retrain promotes);
- the candidate is the promoted build: nothing changes;
- the candidate is a build a rollback demoted: held (only ``lvm promote`` brings it back; a
  re-run of the check on an old report must not undo a rollback);
- the promoted model reads another embedding space (its payload's embedder differs from the
  report's): the two cannot be scored on one index, so the candidate is promoted, saying why;
- otherwise the promoted checkpoint is scored on the report's queries, through its index
  (:func:`lvm_pipeline.report.rescore`), and the candidate is promoted when the upper end of the
  paired bootstrap interval of candidate − promoted MRR@10 is ≥ −``margin``
  (:func:`lvm_pipeline.evaluation.bootstrap.paired_differences`). Margin 0: promoted unless the eval set
  shows it worse; a positive margin tolerates a loss up to that size.

A promoted model trained over an older payload may have seen some of this eval set's articles
in training; that can only flatter it, so the gate errs toward keeping it, never toward
promoting a worse candidate.

:class:`Promotion` is one variant's state as the Dagster instance records it
(lvm_pipeline/defs/promoted_models.py):
the build, how and when it got there, and the builds before it, so ``lvm rollback`` can step
back without searching the history.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import MISSING, asdict, dataclass, field, fields
from typing import Any

from lvm_pipeline.evaluation import BootstrapConfig, paired_differences
from lvm_pipeline.report.build import query_ranks, read_report, rescore
from lvm_pipeline.runtime import Progress, silent
from lvm_pipeline.store import ArtifactStore, Build, kinds, utc_now

# How a build became the promoted one: by the gate on a report, by `lvm promote`, by
# `lvm rollback`.
ACTIONS = ("gate", "manual", "rollback")
METRIC = "mrr_at_10"


@dataclass(frozen=True)
class PromotionConfig:
    # The MRR@10 a candidate may lose against the promoted model and still be promoted; 0
    # holds back only candidates the eval set resolves as worse.
    margin: float = 0.0
    # The widest half-width of the report's paired MRR@10 intervals at which the gate decides:
    # an eval set that cannot see a loss of 0.05 MRR@10 (a loss anyone would act on) cannot
    # protect the promoted model.
    resolution: float = 0.05
    bootstrap: BootstrapConfig = field(default_factory=BootstrapConfig)

    def __post_init__(self) -> None:
        if self.margin < 0:
            raise ValueError(f"promotion margin must be >= 0 (a loss tolerated), got {self.margin}")
        if not self.resolution > 0:
            raise ValueError(f"promotion resolution must be > 0, got {self.resolution}")


@dataclass(frozen=True)
class Promotion:
    """One variant's promoted checkpoint. ``by``: the gate's run, or the user; ``earlier``:
    the builds promoted before it, oldest first (what a rollback returns to); ``demoted``:
    builds a rollback took away, which the gate never promotes again."""

    variant: str
    build_id: str
    action: str
    by: str
    reason: str
    at: str = field(default_factory=utc_now)
    report: str | None = None
    earlier: tuple[str, ...] = ()
    demoted: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.action not in ACTIONS:
            raise ValueError(f"promotion action {self.action!r}; valid: {', '.join(ACTIONS)}")

    def succeeded_by(self, build_id: str, action: str, by: str, reason: str,
                     report: str | None = None) -> Promotion:
        """The state after promoting ``build_id`` over this one."""
        return Promotion(self.variant, build_id, action, by, reason, report=report,
                         earlier=(*self.earlier, self.build_id),
                         demoted=tuple(b for b in self.demoted if b != build_id))

    def rolled_back(self, by: str) -> Promotion:
        """The state after ``lvm rollback``: the build promoted before this one, this one
        demoted. Raises ValueError when there is none."""
        if not self.earlier:
            raise ValueError(f"{self.variant}: no earlier promoted build to roll back to "
                             f"({self.build_id[:12]} is the first promoted)")
        return Promotion(self.variant, self.earlier[-1], "rollback", by,
                         f"rolled back from {self.build_id[:12]}", earlier=self.earlier[:-1],
                         demoted=(*self.demoted, self.build_id))

    def to_record(self) -> dict[str, Any]:
        return {**asdict(self), "earlier": list(self.earlier), "demoted": list(self.demoted)}

    @classmethod
    def from_record(cls, record: Any) -> Promotion:
        """The state a :meth:`to_record` dict holds; ValueError naming what is wrong with
        anything else (an event recorded by hand holds no record, or a partial one)."""
        if not isinstance(record, Mapping):
            raise ValueError(f"a promotion record is a JSON object, got {type(record).__name__}")
        known = {f.name: f for f in fields(cls)}
        missing = sorted(n for n, f in known.items() if f.default is MISSING
                         and f.default_factory is MISSING and n not in record)
        unknown = sorted(set(record) - set(known))
        if missing or unknown:
            raise ValueError(f"promotion record lacks {missing} / has unknown {unknown}")
        texts = [n for n in ("variant", "build_id", "action", "by", "reason", "at")
                 if n in record and not isinstance(record[n], str)]
        lists = [n for n in ("earlier", "demoted") if n in record and not (
            isinstance(record[n], list) and all(isinstance(b, str) for b in record[n]))]
        if texts or lists:
            raise ValueError(f"promotion record fields of the wrong type: {texts + lists}")
        return cls(**{**record, "earlier": tuple(record.get("earlier", ())),
                      "demoted": tuple(record.get("demoted", ()))})


@dataclass(frozen=True)
class Decision:
    """What the gate decided for one variant. ``difference``: candidate − promoted MRR@10
    ``{"value", "low", "high", "verdict"}`` when the two were compared."""

    variant: str
    candidate: str
    promoted: str | None
    promote: bool
    reason: str
    difference: dict[str, Any] | None = None

    @property
    def held(self) -> bool:
        """A candidate that differs from the promoted build and was not promoted."""
        return not self.promote and self.candidate != self.promoted

    def line(self) -> str:
        verb = ("promoted" if self.promote else "HELD BACK" if self.held else "unchanged")
        return f"{self.variant}: candidate {self.candidate[:12]} {verb}: {self.reason}"


def _interval(d: dict[str, Any]) -> str:
    return f"MRR@10 {d['value']:+.4f} [{d['low']:+.4f}, {d['high']:+.4f}]"


def compare(variant: str, candidate: str, promoted: str, candidate_ranks, promoted_ranks,
            config: PromotionConfig) -> Decision:
    """The gate's verdict from the two checkpoints' ranks (Q,) of the same queries."""
    d = paired_differences(candidate_ranks, promoted_ranks, config.bootstrap)[METRIC]
    level = f"{config.bootstrap.level:.0%}"
    what = (f"{_interval(d)} against promoted {promoted[:12]} ({level} paired bootstrap over "
            f"{len(candidate_ranks)} queries; promoted when the upper end >= "
            f"{-config.margin:+.4f})")
    if d["high"] >= -config.margin:
        return Decision(variant, candidate, promoted, True, what, d)
    return Decision(variant, candidate, promoted, False,
                    f"worse by {-d['value']:.4f} MRR@10: {what}; {promoted[:12]} stays promoted",
                    d)


def undecided(report_build: Build, promoted: Mapping[str, Promotion]) -> list[str]:
    """The variants whose scored checkpoint is neither the promoted build nor one a rollback
    demoted: what the gate has to decide on this report."""
    return [variant for variant, candidate in sorted(read_report(report_build)["lineage"][
                "models"].items())
            if (current := promoted.get(variant)) is None
            or candidate not in (current.build_id, *current.demoted)]


def underpowered(store: ArtifactStore, report_build: Build,
                 config: PromotionConfig) -> tuple[float, str] | None:
    """``(resolution, why)`` when the report's eval set is too small for the gate to decide
    (module docstring), else None. The half-width of a bootstrap interval shrinks as one over
    the square root of the queries, so the articles needed scale with its square."""
    report = read_report(report_build)
    resolution = report["confidence"].get("mrr_at_10_resolution")
    if resolution is None or resolution <= config.resolution:
        return None
    eval_build = store.get(kinds.EVAL_SEQUENCES, report["lineage"][kinds.EVAL_SEQUENCES])
    articles = int(eval_build.manifest["splits"]["eval"]["articles"])
    need = math.ceil(articles * (resolution / config.resolution) ** 2)
    sampled = report["query_sample"]["windows"] is not None
    return resolution, (
        f"NOTHING PROMOTED: this eval set ({report['n_queries']} queries"
        f"{' sampled' if sampled else ''} from {articles} eval article"
        f"{'s' * (articles != 1)}) resolves MRR@10 differences of ±{resolution:.3f} (the widest "
        f"paired 95 % interval of the report); the gate needs ±{config.resolution:.3f} to see a "
        f"loss worth acting on. About {need} eval articles would resolve it"
        f"{' (or score every eval window: sample_queries)' if sampled else ''}; the promoted "
        "models stay as they are (`lvm promote` decides by hand; the resource promotion's "
        "resolution sets what the gate requires)")


def _embedder(store: ArtifactStore, checkpoint: Build) -> Any:
    return store.get(kinds.PAYLOAD, checkpoint.manifest["payload_build_id"]).manifest.get("embedder")


def gate_report(store: ArtifactStore, report_build: Build, promoted: Mapping[str, Promotion],
                config: PromotionConfig | None = None, progress: Progress = silent
                ) -> list[Decision]:
    """One :class:`Decision` per model the report scored (module docstring for the rule)."""
    config = config or PromotionConfig()
    report = read_report(report_build)
    candidates = report["lineage"]["models"]
    report_embedder = store.get(kinds.PAYLOAD, report["lineage"]["payload"]).manifest.get("embedder")
    decisions: dict[str, Decision] = {}
    to_score: dict[str, Build] = {}
    for variant, candidate in sorted(candidates.items()):
        current = promoted.get(variant)
        if current is None:
            decisions[variant] = Decision(variant, candidate, None, True,
                                          f"first promotion of {variant}")
        elif current.build_id == candidate:
            decisions[variant] = Decision(variant, candidate, candidate, False,
                                          "it is the promoted build")
        elif candidate in current.demoted:
            decisions[variant] = Decision(variant, candidate, current.build_id, False,
                                          f"a rollback demoted it; `lvm promote {variant} "
                                          f"{candidate[:12]}` brings it back")
        else:
            build = store.get(kinds.checkpoint(variant), current.build_id)
            if _embedder(store, build) != report_embedder:
                decisions[variant] = Decision(
                    variant, candidate, current.build_id, True,
                    f"promoted {current.build_id[:12]} reads another embedding space "
                    f"({json.dumps(_embedder(store, build))}), not comparable on this index")
            else:
                to_score[variant] = build
    if to_score:
        ranks = query_ranks(report_build)
        promoted_ranks = rescore(store, report_build, to_score, progress)
        for variant, build in to_score.items():
            decisions[variant] = compare(variant, candidates[variant], build.build_id,
                                         ranks[variant], promoted_ranks[variant], config)
    return [decisions[v] for v in sorted(decisions)]


def promoted_after(decision: Decision, current: Promotion | None, by: str,
                   report: str) -> Promotion:
    """The state a promoting decision leads to."""
    if current is None:
        return Promotion(decision.variant, decision.candidate, "gate", by, decision.reason,
                         report=report)
    return current.succeeded_by(decision.candidate, "gate", by, decision.reason, report)

