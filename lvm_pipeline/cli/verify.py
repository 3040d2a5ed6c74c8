"""``lvm verify``: re-hash every artifact under the data dir against its manifest."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from lvm_pipeline.cli.common import (
    EXIT_FAILED,
    EXIT_OK,
    CliError,
    add_command,
    open_cli_store,
    resolve_data_dir,
)


def cmd_verify(args: argparse.Namespace) -> int:
    from lvm_pipeline.store import CURRENT, restore_hint, verify_store

    data_dir = resolve_data_dir(args.data_dir)
    if not data_dir.is_dir():
        raise CliError(f"data dir {data_dir} does not exist")
    outcomes = verify_store(open_cli_store(data_dir), quarantine=not args.keep)
    if not outcomes:
        raise CliError(f"no artifacts under {data_dir}: build them first (`lvm run`)")

    def shown(path: Path) -> Path:
        return path.relative_to(data_dir) if path.is_relative_to(data_dir) else path

    for o in outcomes:
        tag = " (current)" if o.current else ""
        if o.error is None:
            print(f"ok      {shown(o.folder)}{tag}: {o.files} files, {o.bytes / 1e6:.1f} MB")
            if o.unlisted:
                print(f"        note: files not in the manifest: {', '.join(o.unlisted)}")
            continue
        print(f"FAILED  {shown(o.folder)}{tag}: {o.error}", file=sys.stderr)
        if o.quarantined is not None:
            print(f"        quarantined to {shown(o.quarantined)} (restore: "
                  f"{restore_hint(o.quarantined)})", file=sys.stderr)
    # A CURRENT that names no sound build is listed with the builds but is not one.
    pointers = [o for o in outcomes if o.folder.name == CURRENT]
    builds = [o for o in outcomes if o.folder.name != CURRENT]
    bad = [o for o in builds if o.error]
    bad_pointers = [o for o in pointers if o.error]
    print(f"\nlvm verify: {len(builds) - len(bad)} of {len(builds)} builds match their "
          "manifests" + (f"; {len(bad)} do not (see above)" if bad else "")
          + (f"; {len(bad_pointers)} CURRENT "
             + ("pointer names" if len(bad_pointers) == 1 else "pointers name")
             + " no sound build (see above)" if bad_pointers else ""),
          file=sys.stderr if bad or bad_pointers else sys.stdout)
    if any(o.quarantined for o in bad + bad_pointers):
        print("The next `lvm run` (or `lvm materialize <asset>`) builds each quarantined build "
              "anew; nothing was deleted.", file=sys.stderr)
    return EXIT_FAILED if bad or bad_pointers else EXIT_OK


def register(sub: argparse._SubParsersAction) -> None:
    verify = add_command(sub, "verify", "Re-hash every file of every artifact build against "
                                        "the sha256 in its manifest (and every CURRENT "
                                        "pointer); exit 1 naming each file that was truncated "
                                        "or edited, and move each failing build aside "
                                        "into <kind>/.quarantine/ (nothing is deleted).")
    verify.add_argument("--keep", action="store_true",
                        help="leave failing builds where they are (by default they are moved "
                             "into <kind>/.quarantine/, so the next run builds them anew)")
    verify.set_defaults(func=cmd_verify)
