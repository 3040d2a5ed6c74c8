"""The guard suites: results indexed by guard object, require_passed, and the thresholds'
Dagster resource."""

from __future__ import annotations

import dataclasses

import pytest

from lvm_pipeline.guards import (
    GuardConfig,
    GuardError,
    GuardNotInSuite,
    check_alignment,
    check_embedder_canary,
    check_index,
    check_learnability,
    check_split_leakage,
    check_truth_keys,
    evaluation_guards,
    require_passed,
    training_guards,
)
from lvm_pipeline.sequences.windows import (
    SequenceSet,
    SplitConfig,
    build_windows,
    native_info,
    publish_sequences,
)
from lvm_pipeline.store import kinds
from lvm_pipeline_tests.guard_cases import train_windows


def test_require_passed_raises_with_every_failed_guard(synthetic_payload):
    s = train_windows(synthetic_payload)
    keys = s.truth_keys.copy()
    keys[:, 0] += 1
    bad = {"train": SequenceSet("train", s.context_rows, s.target_row, keys)}
    with pytest.raises(GuardError, match=r"(?s)MISALIGNED.*TRUTH KEYS BROKEN"):
        require_passed([check_alignment(synthetic_payload, bad),
                        check_truth_keys(synthetic_payload, bad)])


def test_guard_resource_exposes_every_guard_threshold():
    from lvm_pipeline.defs.resources import GuardsResource

    assert GuardsResource().config() == GuardConfig()
    assert set(GuardsResource.model_fields) == {f.name for f in dataclasses.fields(GuardConfig)}


def _published(store, payload):
    """The payload's native train (train + val) and eval builds, and a second train build
    without its first window."""
    sets = build_windows(payload, SplitConfig())
    info = native_info(SplitConfig())
    train = publish_sequences(store, kinds.TRAIN_SEQUENCES, payload, sets, info)
    ev = publish_sequences(store, kinds.EVAL_SEQUENCES, payload, sets, info)
    t = sets["train"]
    fewer = {**sets, "train": SequenceSet("train", t.context_rows[1:], t.target_row[1:],
                                          t.truth_keys[1:])}
    return train, ev, publish_sequences(store, kinds.TRAIN_SEQUENCES, payload, fewer, info)


def test_a_suite_result_is_indexed_by_the_guard_function(store, synthetic_payload):
    train, ev, _ = _published(store, synthetic_payload)
    suite = training_guards(synthetic_payload, train, ev)
    assert suite.guards() == (check_alignment, check_truth_keys, check_split_leakage,
                              check_learnability)
    assert suite[check_truth_keys].name == "check_training_truth_keys"
    assert suite[check_alignment].name == "check_training_sequences_aligned"
    assert suite[check_learnability].name == "check_training_learnable"
    assert suite[check_split_leakage].name == "check_splits_disjoint"
    assert check_truth_keys in suite and check_embedder_canary not in suite
    assert require_passed(suite) == list(suite) and len(suite) == 4
    assert [*suite, *suite] == list(suite) * 2  # what the consuming assets concatenate
    evaluation = evaluation_guards(synthetic_payload, ev, [train])
    assert evaluation[check_truth_keys].name == "check_eval_truth_keys"
    # One leakage computation for both suites (and both sides of the Dagster check).
    assert evaluation[check_split_leakage] is suite[check_split_leakage]


def test_asking_a_suite_for_a_guard_it_did_not_run_names_the_guards_it_ran(store,
                                                                            synthetic_payload):
    train, ev, _ = _published(store, synthetic_payload)
    suite = training_guards(synthetic_payload, train, ev)
    with pytest.raises(GuardNotInSuite, match=(
            r"^check_embedder_canary did not run in this suite \(it ran check_alignment, "
            r"check_truth_keys, check_split_leakage, check_learnability\)$")):
        suite[check_embedder_canary]
    with pytest.raises(KeyError):  # a GuardNotInSuite is a KeyError
        suite[check_index]


def test_leakage_against_two_training_sets_is_not_one_result(store, synthetic_payload):
    train, ev, other = _published(store, synthetic_payload)
    evaluation = evaluation_guards(synthetic_payload, ev, [train, other])
    assert len(evaluation.results_of(check_split_leakage)) == 2 and len(evaluation) == 4
    with pytest.raises(GuardNotInSuite, match=r"check_split_leakage ran 2 times .* results_of"):
        evaluation[check_split_leakage]
