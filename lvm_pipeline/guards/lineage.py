"""Lineage guards: a report's recorded lineage holds (:func:`check_report_lineage`, the
``check_report_lineage`` asset check), and, for readers outside a run, whether a build's
inputs are still the ``CURRENT`` builds of their kinds (:func:`check_lineage`, what `lvm report`
asks before printing a report as current)."""

from __future__ import annotations

import json

from lvm_pipeline.guards.result import GuardResult, verdict
from lvm_pipeline.store import (
    ArtifactError,
    ArtifactStore,
    Build,
    as_upstream,
    kinds,
    recorded_inputs,
    report_lineage,
)


def check_lineage(store: ArtifactStore, build: Build, name: str = "check_lineage") -> GuardResult:
    """Every build this one was made from is still the current build of its kind.

    A report over index I1 while the index is now I2 (or a checkpoint over sequences S1 while
    S2 is current) describes artifacts that are no longer the ones in use.
    """
    stale, checked = [], {}
    for kind, up_id in sorted(build.manifest.get("upstream", {}).items()):  # keyed by kind
        current = store.current(kind).build_id if store.has_current(kind) else None
        checked[kind] = {"built_from": up_id, "current": current}
        if current != up_id:
            stale.append(f"{build.kind} {build.build_id[:12]} was built from {kind} "
                         f"{up_id[:12]}, but the current {kind} is "
                         f"{current[:12] if current else 'missing'}")
    passed = not stale
    message = verdict(
        passed,
        f"{build.kind} {build.build_id[:12]} was built from the current "
        f"{', '.join(checked) or 'inputs'}",
        f"STALE LINEAGE: {len(stale)} of its inputs changed since {build.kind} "
        f"{build.build_id[:12]} was built (threshold 0); rebuild it (`lvm run`)")
    return GuardResult(name, passed, "every input of the build is the current build of its kind",
                       float(len(stale)), 0.0, message, stale, {"upstream": checked},
                       measure="stale_inputs")


def check_report_lineage(store: ArtifactStore, report: Build,
                         name: str = "check_report_lineage") -> GuardResult:
    """The lineage a report recorded holds: every build it names is in ``store`` with files
    matching their manifest, those builds agree (:func:`report_lineage`), and the report's
    upstream names the same builds."""
    rule = ("the report's index, eval set, baselines' training set and checkpoints are one "
            "payload's and one training set's, and all are intact")
    recorded = json.loads(report.file("report.json").read_text()).get("lineage")
    problems: list[str] = []
    if recorded is None:
        problems.append(f"report {report.build_id[:12]} records no lineage (an older report)")
    else:
        try:
            inputs = recorded_inputs(store, recorded)
            for build in [inputs["index"], inputs["eval_set"], inputs["train"],
                          *inputs["models"].values()]:
                build.verify()
            if report_lineage(**inputs) != recorded:
                problems.append("the builds it names no longer give the lineage it recorded")
        except ArtifactError as err:
            problems.append(str(err))
        upstream = dict(report.manifest.get("upstream", {}))
        named = as_upstream(recorded)
        if upstream != named:
            problems.append(f"the manifest's upstream {upstream} differs from the recorded "
                            f"lineage {named}")
    passed = not problems
    message = (f"report {report.build_id[:12]}: every input is payload "
               f"{str(recorded[kinds.PAYLOAD])[:12]}'s and intact" if passed else
               f"LINEAGE BROKEN in report {report.build_id[:12]}: {'; '.join(problems)}")
    return GuardResult(name, passed, rule, float(len(problems)), 0.0, message, problems,
                       {"lineage": recorded}, measure="inputs_out_of_lineage")
