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

import dagster as dg

from lvm_pipeline import guards as rules
from lvm_pipeline.artifacts import ArtifactError, ArtifactStore, Build
from lvm_pipeline.defs.resources import EmbedderResource, GuardsResource, StorageResource
from lvm_pipeline.defs.schedules import CHECK_WITH_ITS_ASSET
from lvm_pipeline.index import KIND as INDEX_KIND
from lvm_pipeline.index import load_index
from lvm_pipeline.payload import KIND as PAYLOAD_KIND
from lvm_pipeline.payload import current_payload
from lvm_pipeline.report import KIND as REPORT_KIND
from lvm_pipeline.report import ORACLE_MIN_R_AT_1, current_report
from lvm_pipeline.sequences import EVAL_KIND, TRAIN_KIND

# The artifact kind behind each checked asset (``lvm check`` runs the checks of those present).
CHECKED_KINDS = {"payload": PAYLOAD_KIND, "aligned_training_sequences": TRAIN_KIND,
                 "aligned_eval": EVAL_KIND, "faiss_index": INDEX_KIND,
                 "retrieval_report": REPORT_KIND}
LOAD_RULE = "inputs load, match the sha256 of their manifests and index the current payload"


def to_check_result(result: rules.GuardResult, **key: dg.AssetKey | str) -> dg.AssetCheckResult:
    """Observed figure, expected threshold, the rule and the first offending rows."""
    metadata = {"rule": result.rule, "details": dg.MetadataValue.json(result.details)}
    if result.figure is not None:
        metadata["figure"] = float(result.figure)
    if result.threshold is not None:
        metadata["threshold"] = float(result.threshold)
    if result.examples:
        metadata["examples"] = dg.MetadataValue.md("\n".join(f"- {e}" for e in result.examples))
    return dg.AssetCheckResult(passed=result.passed, description=result.full_message(),
                               metadata=metadata, **key)


def _guarded(name: str, compute: Callable[[], rules.GuardResult],
             **key: dg.AssetKey | str) -> dg.AssetCheckResult:
    """The guard's result, or a failed check carrying the loader's message."""
    try:
        return to_check_result(compute(), **key)
    except ArtifactError as err:
        return to_check_result(rules.GuardResult(name, False, LOAD_RULE, None, None,
                                                 f"INPUT REFUSED: {err}"), **key)


def _pick(results: list[rules.GuardResult], name: str) -> rules.GuardResult:
    return next(r for r in results if r.name == name)


def _current(store: ArtifactStore, kind: str) -> Build | None:
    return store.current(kind) if store.has_current(kind) else None


def _payload_result(name: str, storage: StorageResource, embedder: EmbedderResource,
                    guards: GuardsResource) -> dg.AssetCheckResult:
    return _guarded(name, lambda: _pick(rules.payload_guards(
        current_payload(storage.store()), embedder.load(), guards.config()), name))


def _training_result(name: str, storage: StorageResource, guards: GuardsResource,
                     **key: dg.AssetKey | str) -> dg.AssetCheckResult:
    def compute() -> rules.GuardResult:
        store = storage.store()
        return _pick(rules.training_guards(current_payload(store), store.current(TRAIN_KIND),
                                           _current(store, EVAL_KIND), guards.config()), name)
    return _guarded(name, compute, **key)


def _eval_result(name: str, storage: StorageResource, guards: GuardsResource,
                 **key: dg.AssetKey | str) -> dg.AssetCheckResult:
    def compute() -> rules.GuardResult:
        store = storage.store()
        train = _current(store, TRAIN_KIND)
        return _pick(rules.evaluation_guards(current_payload(store), store.current(EVAL_KIND),
                                             [train] if train else [], guards.config()), name)
    return _guarded(name, compute, **key)


# --------------------------------------------------------------------------- payload


@dg.asset_check(asset="payload", blocking=True, automation_condition=CHECK_WITH_ITS_ASSET)
def check_payload_integrity(storage: StorageResource, embedder: EmbedderResource,
                            guards: GuardsResource) -> dg.AssetCheckResult:
    """Vectors finite, unit-norm, of the embedder's dim; keys, vectors, texts unique; no
    empty text."""
    return _payload_result("check_payload_integrity", storage, embedder, guards)


@dg.asset_check(asset="payload", blocking=True, automation_condition=CHECK_WITH_ITS_ASSET)
def check_payload_embedder_canary(storage: StorageResource, embedder: EmbedderResource,
                                  guards: GuardsResource) -> dg.AssetCheckResult:
    """Re-embedding a fixed sample of payload texts with the configured embedder gives back the
    stored vectors (catches "same name, different encoder")."""
    return _payload_result("check_payload_embedder_canary", storage, embedder, guards)


# --------------------------------------------------------------------------- sequences


@dg.asset_check(asset="aligned_training_sequences", blocking=True,
                automation_condition=CHECK_WITH_ITS_ASSET)
def check_training_sequences_aligned(storage: StorageResource,
                                     guards: GuardsResource) -> dg.AssetCheckResult:
    """Train and val targets and contexts are the payload vectors their truth keys name."""
    return _training_result("check_training_sequences_aligned", storage, guards)


@dg.asset_check(asset="aligned_training_sequences", blocking=True, automation_condition=CHECK_WITH_ITS_ASSET)
def check_training_truth_keys(storage: StorageResource,
                              guards: GuardsResource) -> dg.AssetCheckResult:
    """Train/val truth keys unique, naming their own target; windows 6 consecutive chunks."""
    return _training_result("check_training_truth_keys", storage, guards)


@dg.asset_check(asset="aligned_training_sequences", blocking=True, automation_condition=CHECK_WITH_ITS_ASSET)
def check_training_learnable(storage: StorageResource,
                             guards: GuardsResource) -> dg.AssetCheckResult:
    """A closed-form ridge predictor fit on train retrieves val targets far above chance."""
    return _training_result("check_training_learnable", storage, guards)


@dg.asset_check(asset="aligned_eval", blocking=True,
                automation_condition=CHECK_WITH_ITS_ASSET)
def check_eval_sequences_aligned(storage: StorageResource,
                                 guards: GuardsResource) -> dg.AssetCheckResult:
    """Eval targets and contexts are the payload vectors their truth keys name."""
    return _eval_result("check_eval_sequences_aligned", storage, guards)


@dg.asset_check(asset="aligned_eval", blocking=True, automation_condition=CHECK_WITH_ITS_ASSET)
def check_eval_truth_keys(storage: StorageResource,
                          guards: GuardsResource) -> dg.AssetCheckResult:
    """Eval truth keys unique, naming their own target; windows 6 consecutive chunks."""
    return _eval_result("check_eval_truth_keys", storage, guards)


@dg.multi_asset_check(
    specs=[dg.AssetCheckSpec("check_splits_disjoint", asset=asset, blocking=True,
                             automation_condition=CHECK_WITH_ITS_ASSET,
                             description="Train, val and eval share no article, chunk text or "
                                         "near-duplicate chunk.")
           for asset in ("aligned_training_sequences", "aligned_eval")],
    can_subset=True,
)
def check_splits_disjoint(context: dg.AssetCheckExecutionContext, storage: StorageResource,
                          guards: GuardsResource) -> Iterator[dg.AssetCheckResult]:
    """One computation over both sequence assets; it blocks what is downstream of either."""
    name = "check_splits_disjoint"
    for key in context.selected_asset_check_keys:
        where = {"asset_key": key.asset_key, "check_name": key.name}
        if key.asset_key == dg.AssetKey("aligned_eval"):
            yield _eval_result(name, storage, guards, **where)
        else:
            yield _training_result(name, storage, guards, **where)


# --------------------------------------------------------------------------- index, report


@dg.asset_check(asset="faiss_index", blocking=True, automation_condition=CHECK_WITH_ITS_ASSET)
def check_index_matches_payload(storage: StorageResource,
                                guards: GuardsResource) -> dg.AssetCheckResult:
    """The index was built over the current payload and finds every sampled row itself."""
    def compute() -> rules.GuardResult:
        store = storage.store()
        payload = current_payload(store)
        return rules.check_index(load_index(store.current(INDEX_KIND), payload), payload,
                                 guards.config(), "check_index_matches_payload")
    return _guarded("check_index_matches_payload", compute)


@dg.asset_check(asset="retrieval_report", blocking=True, automation_condition=CHECK_WITH_ITS_ASSET)
def check_report_lineage(storage: StorageResource) -> dg.AssetCheckResult:
    """The report describes the current payload, index, eval set and checkpoints."""
    store = storage.store()
    return _guarded("check_report_lineage", lambda: rules.check_lineage(
        store, store.current(REPORT_KIND), "check_report_lineage"))


@dg.asset_check(asset="retrieval_report", blocking=True, automation_condition=CHECK_WITH_ITS_ASSET)
def check_report_oracle(storage: StorageResource) -> dg.AssetCheckResult:
    """Searching with the truth vectors themselves finds them at rank 1 (else the index or the
    truth keys are broken and no number in the report can be trusted)."""
    report = current_report(storage.store())
    oracle = report["baselines"]["oracle"]
    return dg.AssetCheckResult(
        passed=bool(report["oracle_ok"]),
        description=report["warnings"][0] if report["warnings"] else
        f"oracle R@1 {oracle['r_at_1']:.3f} >= {ORACLE_MIN_R_AT_1}",
        metadata={"figure": oracle["r_at_1"], "threshold": ORACLE_MIN_R_AT_1,
                  "rule": "the truth vector searched in the index comes back at rank 1"})
