"""``lvm verify``: re-hash every artifact under the data dir against its manifest."""

from __future__ import annotations

import argparse
import sys

from lvm_pipeline.cli.common import (
    EXIT_FAILED,
    EXIT_OK,
    CliError,
    add_command,
    open_cli_store,
    resolve_data_dir,
)


def cmd_verify(args: argparse.Namespace) -> int:
    from lvm_pipeline.store import verify_store

    data_dir = resolve_data_dir(args.data_dir)
    if not data_dir.is_dir():
        raise CliError(f"data dir {data_dir} does not exist")
    outcomes = verify_store(open_cli_store(data_dir))
    if not outcomes:
        raise CliError(f"no artifacts under {data_dir}: build them first (`lvm run`)")
    for o in outcomes:
        where = o.folder.relative_to(data_dir) if o.folder.is_relative_to(data_dir) else o.folder
        tag = " (current)" if o.current else ""
        if o.error is None:
            print(f"ok      {where}{tag}: {o.files} files, {o.bytes / 1e6:.1f} MB")
            if o.unlisted:
                print(f"        note: files not in the manifest: {', '.join(o.unlisted)}")
        else:
            print(f"FAILED  {where}{tag}: {o.error}", file=sys.stderr)
    bad = [o for o in outcomes if o.error]
    print(f"\nlvm verify: {len(outcomes) - len(bad)} of {len(outcomes)} builds match their "
          "manifests" + (f"; {len(bad)} do not (see above)" if bad else ""),
          file=sys.stderr if bad else sys.stdout)
    return EXIT_FAILED if bad else EXIT_OK


def register(sub: argparse._SubParsersAction) -> None:
    verify = add_command(sub, "verify", "Re-hash every file of every artifact build against "
                                        "the sha256 in its manifest (and every CURRENT "
                                        "pointer); exit 1 naming each file that was truncated "
                                        "or edited.")
    verify.set_defaults(func=cmd_verify)
