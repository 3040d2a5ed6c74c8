"""One guard per rule: plain functions that decide whether data is fit to train on.

Each guard returns a :class:`GuardResult` with the rule in plain words, the measured figure, the
threshold and the first offending rows. The Dagster layer turns them into blocking asset
checks, and the consuming assets (sequence builders, index, trainers, evaluator) call the same
functions again through the suites (:mod:`lvm_pipeline.guards.suites`), because a blocking
check only gates assets in its own run. Every figure is measured on the artifact as training
reads it (:func:`lvm_pipeline.payload.gather`), never taken from a manifest.

One guard per module, one per way the reference project's data went wrong (docs/guards.md has
the table): alignment of targets and contexts (:mod:`.alignment`), truth keys
(:mod:`.truth_keys`), leakage between splits (:mod:`.leakage`), payload integrity
(:mod:`.payload_integrity`), the embedder canary (:mod:`.canary`), the learnability smoke test
that catches misalignment of a kind nobody wrote a rule for (:mod:`.learnability`), the index
(:mod:`.index`), lineage (:mod:`.lineage`) and the checkpoints the report scores
(:mod:`.checkpoint`). Thresholds live in :mod:`.config`.
"""

from lvm_pipeline.guards.alignment import check_alignment
from lvm_pipeline.guards.canary import TextEncoder, check_embedder_canary
from lvm_pipeline.guards.checkpoint import (
    check_beats_copy_last_on_val,
    check_trained_on_named_sequences,
    check_weights_finite,
)
from lvm_pipeline.guards.config import GuardConfig
from lvm_pipeline.guards.index import check_index
from lvm_pipeline.guards.leakage import check_split_leakage
from lvm_pipeline.guards.learnability import check_learnability, learnability_k
from lvm_pipeline.guards.lineage import check_lineage, check_report_lineage
from lvm_pipeline.guards.payload_integrity import check_payload_integrity
from lvm_pipeline.guards.result import GuardError, GuardResult
from lvm_pipeline.guards.suites import (
    GuardNotInSuite,
    SuiteResult,
    evaluation_guards,
    payload_guards,
    require_passed,
    split_leakage,
    training_guards,
)
from lvm_pipeline.guards.truth_keys import check_truth_keys

__all__ = [
    "GuardConfig", "GuardError", "GuardNotInSuite", "GuardResult", "SuiteResult", "TextEncoder",
    "check_alignment", "check_beats_copy_last_on_val", "check_embedder_canary", "check_index",
    "check_learnability", "check_lineage", "check_payload_integrity", "check_report_lineage",
    "check_split_leakage", "check_trained_on_named_sequences", "check_truth_keys",
    "check_weights_finite", "evaluation_guards", "learnability_k", "payload_guards",
    "require_passed", "split_leakage", "training_guards",
]
