"""``lvm materialize SELECTION``: rebuild part of the graph, in the same instance as ``lvm run``."""

from __future__ import annotations

import argparse
import sys

from lvm_pipeline.cli.common import (
    UsageError,
    add_command,
    add_run_options,
    resolve_data_dir,
    run_config_from_args,
    run_with_console,
)

EPILOG = """\
SELECTION is Dagster's asset selection syntax:
  mamba_s                   one asset (with its checks)
  'payload*'                payload and everything downstream of it (quoted: a shell
                            expands a bare *)
  '*faiss_index'            faiss_index and everything upstream of it
  payload+                  payload and the assets that read it directly (one level; payload++
                            two levels)
  group:models              the five checkpoints (groups: data, sequences, models, evaluation)
  "key:mamba_s or key:mamba_h"   expressions (and, or, not) need the key: prefix; quote them

An asset outside the selection is read as the Dagster instance last recorded it (its latest
materialization, resolved when the reading step starts); an asset inside it, as this run built
it. A missing input, or inputs of different payloads, fail with the reason.

exit codes: 0 success, 1 a check or step failed, 2 a usage error (e.g. an unknown asset).
"""


def resolve_selection(selection: str) -> list:
    """The asset keys ``selection`` names; a usage error listing valid names otherwise."""
    import dagster as dg

    from lvm_pipeline.cli.runner import definitions

    graph = definitions().resolve_asset_graph()
    valid = sorted(k.to_user_string() for k in graph.materializable_asset_keys)
    try:
        # Only what a run can build: not the promoted_models records (defs/promotion.py).
        keys = dg.AssetSelection.from_string(selection).resolve(graph) & set(
            graph.materializable_asset_keys)
    except Exception as err:  # Dagster raises several types for a bad string or unknown key
        reason = " ".join(str(err).split())[:200]
        raise UsageError(f"cannot select {selection!r} ({reason}); assets: {', '.join(valid)}"
                         ) from None
    if not keys:
        raise UsageError(f"{selection!r} selects no asset; assets: {', '.join(valid)}")
    return sorted(keys)


def cmd_materialize(args: argparse.Namespace) -> int:
    import dagster as dg

    data_dir = resolve_data_dir(args.data_dir)
    keys = resolve_selection(args.selection)
    names = [k.to_user_string() for k in keys]
    config = run_config_from_args(args, ops=names, selection_label=repr(args.selection))
    print(f"lvm materialize: {', '.join(names)}", file=sys.stderr)
    code, result = run_with_console("materialize", data_dir, config, args.log_level,
                                    selection=dg.AssetSelection.assets(*keys),
                                    tags={"lvm/selection": args.selection},
                                    debug=args.debug)
    # stdout: what was built, one line per asset, for scripts.
    for event in result.get_asset_materialization_events():
        materialization = event.event_specific_data.materialization
        meta = materialization.metadata
        build = meta["build_id"].value[:12] if "build_id" in meta else "-"
        path = meta["path"].value if "path" in meta else ""
        print(f"{materialization.asset_key.to_user_string()}\t{build}\t{path}")
    return code


def register(sub: argparse._SubParsersAction) -> None:
    materialize = add_command(
        sub, "materialize", "Materialize a selection of assets (e.g. `payload*`, `mamba_s`).",
        description="Materialize the assets SELECTION names, with their checks, in this process "
                    "and recorded\nin the Dagster instance (<data dir>/dagster_home), like "
                    "`lvm run` but for part of the graph.",
        epilog=EPILOG)
    materialize.add_argument("selection", metavar="SELECTION",
                             help="which assets (see below)")
    add_run_options(materialize)
    materialize.set_defaults(func=cmd_materialize)
