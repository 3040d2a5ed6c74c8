"""``lvm check``: run every asset check on the artifacts currently under the data dir."""

from __future__ import annotations

import argparse

from lvm_pipeline.cli.common import (
    CliError,
    add_command,
    exit_code,
    open_cli_store,
    resolve_data_dir,
    run_quietly,
)


def cmd_check(args: argparse.Namespace) -> int:
    import dagster as dg

    from lvm_pipeline.cli.events import print_check_table
    from lvm_pipeline.defs.checks import CHECKED_KINDS

    data_dir = resolve_data_dir(args.data_dir)
    store = open_cli_store(data_dir)
    assets = [asset for asset, kind in CHECKED_KINDS.items() if store.has_current(kind)]
    if not assets:
        raise CliError(f"no checked artifacts under {data_dir}: build them first (`lvm run`)")
    result = run_quietly(data_dir, dg.AssetSelection.checks_for_assets(*assets))
    return exit_code(print_check_table(result, f"lvm check: {data_dir} (run {result.run_id})",
                                       debug=args.debug))


def register(sub: argparse._SubParsersAction) -> None:
    check = add_command(sub, "check", "Run every asset check (payload integrity, embedder "
                                      "canary, alignment, truth keys, leakage, learnability, "
                                      "index, checkpoints, report lineage) on the current "
                                      "artifacts and "
                                      "print check / status / what it measures / value / "
                                      "threshold; exit 1 when a blocking check fails.")
    check.set_defaults(func=cmd_check)
