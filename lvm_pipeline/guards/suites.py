"""The guard suites: what each consumer of an artifact verifies before it reads it.

The consuming assets (sequence builders, index, trainers, evaluator) call
:func:`payload_guards`, :func:`training_guards` and :func:`evaluation_guards`, and the Dagster
checks call the same suites, because a blocking check only gates assets in its own run. A suite
returns a :class:`SuiteResult`: iterate it for every :class:`GuardResult` (what
:func:`require_passed` does), or index it by the guard function to get that guard's result
(``training_guards(...)[check_truth_keys]``), never by matching a name string.

Suites memoise per content: builds are content-addressed and the suites re-hash their files
before asking (the payload is re-hashed when it is loaded), so the five trainers of one run
need not re-embed the canary or re-run the searches five times.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from lvm_pipeline.guards.alignment import check_alignment
from lvm_pipeline.guards.canary import TextEncoder, check_embedder_canary
from lvm_pipeline.guards.config import GuardConfig
from lvm_pipeline.guards.leakage import check_split_leakage
from lvm_pipeline.guards.learnability import check_learnability
from lvm_pipeline.guards.payload_integrity import check_payload_integrity
from lvm_pipeline.guards.result import GuardError, GuardResult
from lvm_pipeline.guards.truth_keys import check_truth_keys
from lvm_pipeline.payload import Payload
from lvm_pipeline.sequences import SequenceSet, load_sets, require_payload
from lvm_pipeline.store import Build

Guard = Callable[..., GuardResult]


class GuardNotInSuite(KeyError):
    """A suite was asked for the result of a guard it did not run (or ran more than once)."""

    def __str__(self) -> str:  # KeyError's own str() would quote the message
        return str(self.args[0])


class SuiteResult:
    """The results of one suite, in the order the guards ran, each kept under its guard.

    ``suite[check_truth_keys]`` is that guard's result; iterating yields the results
    themselves, so ``require_passed(suite)`` and ``[*suite_a, *suite_b]`` work. (Not a
    ``Mapping``: a mapping iterates over its keys, and every consumer wants the results.)
    """

    def __init__(self, entries: Iterable[tuple[Guard, GuardResult]]) -> None:
        self._entries = tuple(entries)

    def __iter__(self) -> Iterator[GuardResult]:
        return (result for _, result in self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, guard: object) -> bool:
        return any(g is guard for g, _ in self._entries)

    def guards(self) -> tuple[Guard, ...]:
        """The guards that ran, each once, in order."""
        return tuple(dict.fromkeys(g for g, _ in self._entries))

    def results_of(self, guard: Guard) -> tuple[GuardResult, ...]:
        """Every result of ``guard`` (the evaluation suite runs the leakage guard once per
        training set); empty if it did not run."""
        return tuple(r for g, r in self._entries if g is guard)

    def __getitem__(self, guard: Guard) -> GuardResult:
        found = self.results_of(guard)
        if len(found) != 1:
            ran = ", ".join(g.__name__ for g in self.guards()) or "nothing"
            what = getattr(guard, "__name__", repr(guard))
            raise GuardNotInSuite(
                f"{what} did not run in this suite (it ran {ran})" if not found else
                f"{what} ran {len(found)} times in this suite (once per training set); ask "
                "results_of() for all of them")
        return found[0]

    def __repr__(self) -> str:
        return "SuiteResult(" + ", ".join(
            f"{g.__name__}: {'passed' if r.passed else 'FAILED'}" for g, r in self._entries) + ")"


def require_passed(results: Iterable[GuardResult]) -> list[GuardResult]:
    """Raise :class:`GuardError` naming every failed guard; return the results otherwise."""
    results = list(results)
    failed = [r for r in results if not r.passed]
    if failed:
        raise GuardError("\n".join(r.full_message() for r in failed))
    return results


_MEMO: OrderedDict[tuple, Any] = OrderedDict()
_MEMO_SIZE = 32


def _memo(key: tuple, compute: Callable[[], Any]) -> Any:
    """The value of ``compute`` per content key (see the module docstring), least recently
    used first out."""
    if key not in _MEMO:
        _MEMO[key] = compute()
        while len(_MEMO) > _MEMO_SIZE:
            _MEMO.popitem(last=False)
    _MEMO.move_to_end(key)
    return _MEMO[key]


def payload_guards(payload: Payload, embedder: TextEncoder,
                   config: GuardConfig = GuardConfig()) -> SuiteResult:
    """What every reader of a payload verifies: integrity and the embedder canary."""
    ident = embedder.identity()
    key = ("payload", payload.build_id, ident.get("id"), ident.get("weights_sha256"),
           ident.get("config_sha256"), embedder.dim, config)
    return _memo(key, lambda: SuiteResult([
        (check_payload_integrity,
         check_payload_integrity(payload, embedder.dim, config, "check_payload_integrity")),
        (check_embedder_canary,
         check_embedder_canary(payload, embedder, config, "check_payload_embedder_canary"))]))


def _verify(*builds: Build | None) -> None:
    """Re-hash every file of the builds (raises naming a tampered one): a memoised verdict
    must never stand in for files that changed since."""
    for build in builds:
        if build is not None:
            build.verify()


def _compatible(build: Build | None, payload: Payload) -> bool:
    return build is not None and build.manifest.get("payload_build_id") == payload.build_id


def _leakage(payload: Payload, train_build: Build | None, eval_build: Build | None,
             config: GuardConfig) -> GuardResult:
    """Leakage between the splits of two builds, once per content: the trainers' and the
    evaluator's suites and both sides of the Dagster check share it (the FAISS search is the
    costliest guard on a large corpus)."""
    key = ("leakage", payload.build_id, train_build.build_id if train_build else None,
           eval_build.build_id if eval_build else None, config.near_duplicate_cosine)

    def compute() -> GuardResult:
        sets = {**(load_sets(train_build) if train_build else {}),
                **(load_sets(eval_build) if eval_build else {})}
        return check_split_leakage(payload, sets, config.near_duplicate_cosine,
                                   "check_splits_disjoint")

    return _memo(key, compute)


def split_leakage(payload: Payload, train_build: Build | None, eval_build: Build | None,
                  config: GuardConfig = GuardConfig()) -> GuardResult:
    """Leakage between the splits of a training and an eval build (those of them that index
    ``payload``), re-hashed first; the same computation, memoised once, as the trainers' and
    the evaluator's suites run, without the rest of either suite (the training suite's
    learnability fit costs seconds)."""
    train = train_build if _compatible(train_build, payload) else None
    evaluated = eval_build if _compatible(eval_build, payload) else None
    _verify(train, evaluated)
    return _leakage(payload, train, evaluated, config)


def _set_guards(payload: Payload, sets: dict[str, SequenceSet], config: GuardConfig,
                stage: str) -> list[tuple[Guard, GuardResult]]:
    """Alignment and truth keys of one build's sets, named for the ``stage``'s Dagster checks."""
    return [(check_alignment, check_alignment(payload, sets, config.min_alignment_cosine,
                                              f"check_{stage}_sequences_aligned")),
            (check_truth_keys, check_truth_keys(payload, sets, f"check_{stage}_truth_keys"))]


def training_guards(payload: Payload, train_build: Build, eval_build: Build | None,
                    config: GuardConfig = GuardConfig()) -> SuiteResult:
    """What a trainer verifies before reading ``train_build``: lineage (raises), alignment,
    truth keys, leakage (against eval when ``eval_build`` indexes the same payload) and
    learnability."""
    require_payload(train_build, payload)
    eval_build = eval_build if _compatible(eval_build, payload) else None
    _verify(train_build, eval_build)
    key = ("training", payload.build_id, train_build.build_id,
           eval_build.build_id if eval_build else None, config)

    def compute() -> SuiteResult:
        sets = load_sets(train_build)
        return SuiteResult([
            *_set_guards(payload, sets, config, "training"),
            (check_split_leakage, _leakage(payload, train_build, eval_build, config)),
            (check_learnability, check_learnability(payload, sets["train"], sets["val"], config,
                                                    "check_training_learnable"))])

    return _memo(key, compute)


def evaluation_guards(payload: Payload, eval_build: Build, train_builds: list[Build],
                      config: GuardConfig = GuardConfig()) -> SuiteResult:
    """What the evaluator verifies before reading ``eval_build``: lineage (raises), alignment,
    truth keys, and leakage against every training set the evaluated models were trained on
    (those that index the same payload; a model of another payload is refused on its own).
    With several training sets ``check_split_leakage`` has one result each
    (:meth:`SuiteResult.results_of`)."""
    require_payload(eval_build, payload)
    trains = [b for _, b in sorted({b.build_id: b for b in train_builds
                                    if _compatible(b, payload)}.items())]
    _verify(eval_build, *trains)
    key = ("evaluation", payload.build_id, eval_build.build_id,
           tuple(b.build_id for b in trains), config)

    def compute() -> SuiteResult:
        return SuiteResult([
            *_set_guards(payload, load_sets(eval_build), config, "eval"),
            *[(check_split_leakage, _leakage(payload, train, eval_build, config))
              for train in trains or [None]]])

    return _memo(key, compute)
