"""Lineage guard: every build a build was made from is still the current build of its kind."""

from __future__ import annotations

from lvm_pipeline.artifacts import ArtifactStore, Build
from lvm_pipeline.guards.result import GuardResult, verdict

# Upstream names in manifests that are not artifact kinds.
UPSTREAM_KINDS = {"eval": "sequences/eval"}


def check_lineage(store: ArtifactStore, build: Build, name: str = "check_lineage") -> GuardResult:
    """Every build this one was made from is still the current build of its kind.

    A report over index I1 while the index is now I2 (or a checkpoint over sequences S1 while
    S2 is current) describes artifacts that are no longer the ones in use.
    """
    stale, checked = [], {}
    for up_name, up_id in sorted(build.manifest.get("upstream", {}).items()):
        kind = UPSTREAM_KINDS.get(up_name, up_name)
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
                       float(len(stale)), 0.0, message, stale, {"upstream": checked})
