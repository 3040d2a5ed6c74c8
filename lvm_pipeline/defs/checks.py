"""Asset checks: the guards of :mod:`lvm_pipeline.guards` as Dagster checks.

Anything training or evaluation reads is ``blocking=True``: when the check fails, no
downstream asset materializes in that run. The consuming assets call the same guard suites
(``payload_guards``, ``training_guards``, ``evaluation_guards``) again, which protects runs that
did not include the check; a check and a consumer of the same content share one computation
(the suites memoise on build ids).

An input that cannot be loaded (a file whose sha256 no longer matches its manifest, sequences
built over another payload) fails the check with the loader's message instead of crashing
it, so ``lvm check`` and the UI show why.
"""

from collections.abc import Callable, Iterator
from typing import Any

import dagster as dg

from lvm_pipeline import guards as rules
from lvm_pipeline.defs.automation import CHECK_WITH_ITS_ASSET
from lvm_pipeline.defs.io_manager import OPTIONAL_INPUT
from lvm_pipeline.defs.promoted_models import promotion_lock, read_promotions, record_promotion
from lvm_pipeline.defs.resources import (
    EmbedderResource,
    GuardsResource,
    ProgressResource,
    PromotionResource,
    StorageResource,
)
from lvm_pipeline.models import VARIANTS
from lvm_pipeline.payload import load_payload, payload_of
from lvm_pipeline.report import (
    ORACLE_MIN_R_AT_1,
    PromotionConfig,
    gate_report,
    promoted_after,
    read_report,
    undecided,
    underpowered,
)
from lvm_pipeline.runtime import Progress
from lvm_pipeline.search import load_index
from lvm_pipeline.store import ArtifactError, ArtifactStore, Build, kinds

# The artifact kind behind each checked asset (``lvm check`` runs the checks of those present).
CHECKED_KINDS = {"payload": kinds.PAYLOAD, "aligned_training_sequences": kinds.TRAIN_SEQUENCES,
                 "aligned_eval": kinds.EVAL_SEQUENCES, "faiss_index": kinds.INDEX,
                 **{variant: kinds.checkpoint(variant) for variant in VARIANTS},
                 "retrieval_report": kinds.REPORT}
LOAD_RULE = "inputs load, match the sha256 of their manifests and index one payload"
# The other sequence asset, for the leakage between them: None when it was never built.
OTHER_SEQUENCES = {key: dg.AssetIn(key, input_manager_key=OPTIONAL_INPUT)
                   for key in ("aligned_eval", "aligned_training_sequences")}


# Decimals of a check's figures in the UI: thresholds are given to 2-4 decimals, and
# 0.9999999999999998 says nothing 1.0 does not.
DECIMALS = 4


def figures(measure: str, value: float | None, threshold: float | None) -> dict[str, float]:
    """A check's measured value under its own name, then its threshold, rounded: the first two
    numbers on the check's page (``lvm check`` reads them in that order)."""
    out = {} if value is None else {measure: round(float(value), DECIMALS)}
    if threshold is not None:
        out["threshold"] = round(float(threshold), DECIMALS) or 0.0  # not -0.0
    return out


def to_check_result(result: rules.GuardResult, **key: dg.AssetKey | str) -> dg.AssetCheckResult:
    """Observed figure, expected threshold, the rule and the first offending rows."""
    metadata: dict[str, Any] = {"rule": result.rule,
                                **figures(result.measure, result.figure, result.threshold)}
    if result.examples:
        metadata["examples"] = dg.MetadataValue.md("\n".join(f"- {e}" for e in result.examples))
    metadata["details"] = dg.MetadataValue.json(result.details)
    return dg.AssetCheckResult(passed=result.passed, description=result.full_message(),
                               metadata=metadata, **key)


def could_not_run(name: str, err: Exception, **key: dg.AssetKey | str) -> dg.AssetCheckResult:
    """A failed check that says why it could not judge (an input refused, or any other error),
    so the check's page shows the reason rather than "Execution failed"."""
    if isinstance(err, ArtifactError):
        message = f"INPUT REFUSED: {err}"
    else:
        message = f"CHECK COULD NOT RUN: {type(err).__name__}: {err}"
    return to_check_result(rules.GuardResult(name, False, LOAD_RULE, None, None, message), **key)


def _guarded(name: str, compute: Callable[[], rules.GuardResult],
             **key: dg.AssetKey | str) -> dg.AssetCheckResult:
    """The guard's result, or a failed check carrying the reason it could not run."""
    try:
        return to_check_result(compute(), **key)
    except Exception as err:  # any error becomes the check's stated reason (could_not_run)
        return could_not_run(name, err, **key)


# Each check's result is picked from its suite by the guard function itself (a suite raises,
# naming what it ran, when asked for a guard it did not run).
Guard = Callable[..., rules.GuardResult]


def _payload_result(name: str, guard: Guard, payload: Build, embedder: EmbedderResource,
                    guards: GuardsResource) -> dg.AssetCheckResult:
    return _guarded(name, lambda: rules.payload_guards(
        load_payload(payload), embedder.load(), guards.config())[guard])


def _training_result(name: str, guard: Guard, train: Build, eval_build: Build | None,
                     storage: StorageResource, guards: GuardsResource,
                     **key: dg.AssetKey | str) -> dg.AssetCheckResult:
    def compute() -> rules.GuardResult:
        return rules.training_guards(payload_of(storage.store(), train), train, eval_build,
                                     guards.config())[guard]
    return _guarded(name, compute, **key)


def _eval_result(name: str, guard: Guard, eval_build: Build, train: Build | None,
                 storage: StorageResource, guards: GuardsResource,
                 **key: dg.AssetKey | str) -> dg.AssetCheckResult:
    def compute() -> rules.GuardResult:
        return rules.evaluation_guards(payload_of(storage.store(), eval_build), eval_build,
                                       [train] if train else [], guards.config())[guard]
    return _guarded(name, compute, **key)


# --------------------------------------------------------------------------- payload


@dg.asset_check(asset="payload", blocking=True, automation_condition=CHECK_WITH_ITS_ASSET)
def check_payload_integrity(payload: Build, embedder: EmbedderResource,
                            guards: GuardsResource) -> dg.AssetCheckResult:
    """Vectors finite, unit-norm, of the embedder's dim; keys, vectors, texts unique; no
    empty text."""
    return _payload_result("check_payload_integrity", rules.check_payload_integrity, payload,
                           embedder, guards)


@dg.asset_check(asset="payload", blocking=True, automation_condition=CHECK_WITH_ITS_ASSET)
def check_payload_embedder_canary(payload: Build, embedder: EmbedderResource,
                                  guards: GuardsResource) -> dg.AssetCheckResult:
    """Re-embedding a fixed sample of payload texts with the configured embedder gives back the
    stored vectors (catches "same name, different encoder")."""
    return _payload_result("check_payload_embedder_canary", rules.check_embedder_canary,
                           payload, embedder, guards)


# --------------------------------------------------------------------------- sequences


def _training_check(name: str, guard: Guard, description: str) -> dg.AssetChecksDefinition:
    """A blocking check on the training sequences that reports ``guard``'s result."""
    @dg.asset_check(asset="aligned_training_sequences", name=name, description=description,
                    blocking=True, automation_condition=CHECK_WITH_ITS_ASSET)
    def _check(aligned_training_sequences: Build, storage: StorageResource,
               guards: GuardsResource) -> dg.AssetCheckResult:
        return _training_result(name, guard, aligned_training_sequences, None, storage, guards)
    return _check


def _eval_check(name: str, guard: Guard, description: str) -> dg.AssetChecksDefinition:
    """A blocking check on the eval sequences that reports ``guard``'s result."""
    @dg.asset_check(asset="aligned_eval", name=name, description=description, blocking=True,
                    automation_condition=CHECK_WITH_ITS_ASSET)
    def _check(aligned_eval: Build, storage: StorageResource,
               guards: GuardsResource) -> dg.AssetCheckResult:
        return _eval_result(name, guard, aligned_eval, None, storage, guards)
    return _check


check_training_sequences_aligned = _training_check(
    "check_training_sequences_aligned", rules.check_alignment,
    "Train and val targets and contexts are the payload vectors their truth keys name.")
check_training_truth_keys = _training_check(
    "check_training_truth_keys", rules.check_truth_keys,
    "Train/val truth keys unique, naming their own target; windows 6 consecutive chunks.")
check_training_learnable = _training_check(
    "check_training_learnable", rules.check_learnability,
    "A closed-form ridge predictor fit on train retrieves val targets far above chance.")
check_eval_sequences_aligned = _eval_check(
    "check_eval_sequences_aligned", rules.check_alignment,
    "Eval targets and contexts are the payload vectors their truth keys name.")
check_eval_truth_keys = _eval_check(
    "check_eval_truth_keys", rules.check_truth_keys,
    "Eval truth keys unique, naming their own target; windows 6 consecutive chunks.")


@dg.multi_asset_check(
    specs=[dg.AssetCheckSpec("check_splits_disjoint", asset=asset, blocking=True,
                             automation_condition=CHECK_WITH_ITS_ASSET,
                             description="Train, val and eval share no article, chunk text or "
                                         "near-duplicate chunk.")
           for asset in OTHER_SEQUENCES],
    ins=OTHER_SEQUENCES,
    can_subset=True,
)
def check_splits_disjoint(context: dg.AssetCheckExecutionContext, storage: StorageResource,
                          guards: GuardsResource, aligned_eval: Build | None,
                          aligned_training_sequences: Build | None
                          ) -> Iterator[dg.AssetCheckResult]:
    """One computation over both sequence assets (each as this run made it, or as last
    materialized); it blocks what is downstream of either."""
    name = "check_splits_disjoint"
    for key in context.selected_asset_check_keys:
        # Either side's payload (each build names its own; a build of another one is left
        # out, as the trainers' and the evaluator's suites leave it out).
        checked = aligned_eval if key.asset_key == dg.AssetKey("aligned_eval") \
            else aligned_training_sequences

        def compute(checked: Build | None = checked) -> rules.GuardResult:
            return rules.split_leakage(payload_of(storage.store(), checked),
                                       aligned_training_sequences, aligned_eval,
                                       guards.config())
        yield _guarded(name, compute, asset_key=key.asset_key, check_name=key.name)


# --------------------------------------------------------------------------- index, report


@dg.asset_check(asset="faiss_index", blocking=True, automation_condition=CHECK_WITH_ITS_ASSET)
def check_index_matches_payload(faiss_index: Build, storage: StorageResource,
                                guards: GuardsResource) -> dg.AssetCheckResult:
    """The index was built over its payload and finds every sampled row itself."""
    def compute() -> rules.GuardResult:
        payload = payload_of(storage.store(), faiss_index)
        return rules.check_index(load_index(faiss_index, payload), payload, guards.config(),
                                 "check_index_matches_payload")
    return _guarded("check_index_matches_payload", compute)


@dg.asset_check(asset="retrieval_report", blocking=True, automation_condition=CHECK_WITH_ITS_ASSET)
def check_report_lineage(retrieval_report: Build, storage: StorageResource) -> dg.AssetCheckResult:
    """Everything the report scored is one payload's: its index, eval set, the baselines'
    training set and every checkpoint (each trained on that training set), and every build it
    names is in the store with files matching their sha256."""
    return _guarded("check_report_lineage", lambda: rules.check_report_lineage(
        storage.store(), retrieval_report, "check_report_lineage"))


@dg.asset_check(asset="retrieval_report", blocking=True, automation_condition=CHECK_WITH_ITS_ASSET)
def check_report_oracle(retrieval_report: Build) -> dg.AssetCheckResult:
    """Searching with the truth vectors themselves finds them at rank 1 (else the index or the
    truth keys are broken and no number in the report can be trusted)."""
    def compute() -> rules.GuardResult:
        report = read_report(retrieval_report)
        r_at_1 = report["baselines"]["oracle"]["r_at_1"]
        message = (report["warnings"][0] if report["warnings"] else
                   f"oracle R@1 {r_at_1:.3f} >= {ORACLE_MIN_R_AT_1}")
        return rules.GuardResult(
            "check_report_oracle", bool(report["oracle_ok"]),
            "the truth vector searched in the index comes back at rank 1", r_at_1,
            ORACLE_MIN_R_AT_1, message, measure="oracle_r_at_1")
    return _guarded("check_report_oracle", compute)


@dg.asset_check(asset="retrieval_report", blocking=True, automation_condition=CHECK_WITH_ITS_ASSET)
def check_candidates_not_worse(context: dg.AssetCheckExecutionContext, retrieval_report: Build,
                               storage: StorageResource,
                               promotion: PromotionResource,
                               progress: ProgressResource) -> dg.AssetCheckResult:
    """The promotion gate: each checkpoint the report scored replaces the promoted model of its
    variant unless the paired bootstrap on the report's queries shows it worse (by more than
    the margin); fails, naming each variant held back, its difference and interval, when one
    is. The promotions it makes are recorded in the instance (defs/promoted_models.py)."""
    try:
        return _gate(context, retrieval_report, storage.store(), promotion.config(),
                     progress.for_step(context, "scoring promoted models", "payload rows"))
    except Exception as err:  # the check's page says why it could not decide
        return could_not_run("check_candidates_not_worse", err)


def _gate(context: dg.AssetCheckExecutionContext, report: Build, store: ArtifactStore,
          config: PromotionConfig, progress: Progress) -> dg.AssetCheckResult:
    """The gate's decisions on ``report``, the promotions recorded, and the check's result."""
    # Read, score and write under one lock: a rollback or a manual promotion made meanwhile
    # waits, and is never overwritten by a state read before it.
    with promotion_lock(context.instance):
        promoted = read_promotions(context.instance, context.log.warning)
        # The eval set's power matters only when there is something to decide.
        if undecided(report, promoted) and (
                too_coarse := underpowered(store, report, config)) is not None:
            resolution, why = too_coarse
            context.log.warning(why)
            return dg.AssetCheckResult(
                passed=False, severity=dg.AssetCheckSeverity.WARN, description=why,
                metadata=figures("mrr_at_10_resolution", resolution, config.resolution))
        decisions = gate_report(store, report, promoted, config, progress)
        by = f"gate (run {context.run.run_id})"
        for decision in decisions:
            if decision.promote:
                record_promotion(context.instance, promoted_after(
                    decision, promoted.get(decision.variant), by, report.build_id),
                    decision.difference)
    held = [d for d in decisions if d.held]
    compared = [d.difference["high"] for d in decisions if d.difference is not None]
    metadata: dict[str, Any] = {
        "rule": "promoted unless the upper end of the 95 % paired interval of candidate − "
                "promoted MRR@10 is below −margin",
        # The worst upper end is what the threshold (−margin) is held to.
        **figures("worst_upper_end_of_mrr_at_10_difference", min(compared, default=None),
                  -config.margin),
        "decisions": dg.MetadataValue.md("\n".join(f"- {d.line()}" for d in decisions))}
    for d in decisions:
        if d.difference is not None:
            metadata[f"{d.variant}/mrr_at_10_difference"] = round(float(d.difference["value"]),
                                                                 DECIMALS)
    lines = [d.line() for d in held] + [d.line() for d in decisions if d.promote]
    return dg.AssetCheckResult(
        passed=not held, metadata=metadata,
        description="; ".join(lines) or "every candidate is the promoted build of its variant")


# --------------------------------------------------------------------------- checkpoints


def checkpoint_checks(variant: str) -> list[dg.AssetChecksDefinition]:
    """Each checkpoint's checks: finite weights and its lineage block the report (which also
    refuses such a checkpoint on its own); not beating copy-last on val only warns."""
    @dg.asset_check(asset=variant, name="check_weights_finite", blocking=True,
                    automation_condition=CHECK_WITH_ITS_ASSET,
                    description="Every weight of the checkpoint is a finite number.")
    def _finite(checkpoint: Build) -> dg.AssetCheckResult:
        return _guarded("check_weights_finite", lambda: rules.check_weights_finite(checkpoint))

    @dg.asset_check(asset=variant, name="check_trained_on_its_sequences", blocking=True,
                    automation_condition=CHECK_WITH_ITS_ASSET,
                    description="The training set the checkpoint names is in the store, intact, "
                                "over the payload it names.")
    def _lineage(checkpoint: Build, storage: StorageResource) -> dg.AssetCheckResult:
        return _guarded("check_trained_on_its_sequences",
                        lambda: rules.check_trained_on_named_sequences(storage.store(),
                                                                       checkpoint))

    @dg.asset_check(asset=variant, name="check_beats_copy_last_on_val", blocking=False,
                    automation_condition=CHECK_WITH_ITS_ASSET,
                    description="A warning when the kept epoch's val MRR@10 is not above "
                                "copy-last's on the same val windows.")
    def _bar(checkpoint: Build) -> dg.AssetCheckResult:
        result = _guarded("check_beats_copy_last_on_val",
                          lambda: rules.check_beats_copy_last_on_val(checkpoint))
        return dg.AssetCheckResult(passed=result.passed, metadata=result.metadata,
                                   description=result.description,
                                   severity=dg.AssetCheckSeverity.WARN)

    return [_finite, _lineage, _bar]


CHECKPOINT_CHECKS = [check for variant in VARIANTS for check in checkpoint_checks(variant)]
