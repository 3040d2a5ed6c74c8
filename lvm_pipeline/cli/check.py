"""``lvm check``: run every asset check on the artifacts currently under the data dir."""

from __future__ import annotations

import argparse

from lvm_pipeline.cli.common import CliError, add_command, resolve_data_dir


def cmd_check(args: argparse.Namespace) -> int:
    import dagster as dg

    from lvm_pipeline.cli.guarded import report, run_selection
    from lvm_pipeline.defs.checks import CHECKED_KINDS
    from lvm_pipeline.store import ArtifactStore

    data_dir = resolve_data_dir(args.data_dir)
    store = ArtifactStore(data_dir)
    assets = [asset for asset, kind in CHECKED_KINDS.items() if store.has_current(kind)]
    if not assets:
        raise CliError(f"no checked artifacts under {data_dir}: build them first (`lvm run`)")
    result = run_selection(data_dir, dg.AssetSelection.checks_for_assets(*assets))
    return report(result, f"lvm check: {data_dir} (run {result.run_id})")


def register(sub: argparse._SubParsersAction) -> None:
    check = add_command(sub, "check", "Run every asset check (payload integrity, embedder "
                                      "canary, alignment, truth keys, leakage, learnability, "
                                      "index, report lineage) on the current artifacts and "
                                      "print check / status / figure / threshold; exit 1 when "
                                      "a blocking check fails.")
    check.set_defaults(func=cmd_check)
