"""``lvm promote`` and ``lvm rollback``: set a variant's promoted checkpoint by hand, recorded in
the Dagster instance like the gate's promotions (lvm_pipeline/defs/promoted_models.py); and the
``lvm models --promoted`` table."""

from __future__ import annotations

import argparse
import getpass
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from lvm_pipeline.cli.common import (
    EXIT_OK,
    CliError,
    UsageError,
    add_command,
    open_cli_store,
    open_data_dir_instance,
    resolve_data_dir,
)
from lvm_pipeline.store import kinds

HINT = "`lvm models --promoted`"


def _warn(command: str) -> Callable[[str], None]:
    """A warning of ``lvm COMMAND`` on one line of stderr (the result stays on stdout)."""
    return lambda message: print(f"lvm {command}: warning: {message}", file=sys.stderr)


def _checkpoint(data_dir: Path, variant: str, build: str) -> Any:
    """The ``variant`` checkpoint build ``build`` (a prefix of its id), its files verified; a
    build of another variant is a usage error that says which variant it is."""
    from lvm_pipeline.models import VARIANTS
    from lvm_pipeline.store import ArtifactError

    store = open_cli_store(data_dir)
    try:
        found = store.find(kinds.checkpoint(variant), build)
    except ArtifactError as err:
        for other in VARIANTS:
            try:
                elsewhere = store.find(kinds.checkpoint(other), build)
            except ArtifactError:
                continue
            raise UsageError(f"build {build} is a {other} checkpoint ({elsewhere.path}), not a "
                             f"{variant} one") from None
        raise CliError(str(err), hint=f"the builds under {store.root / kinds.checkpoint(variant)}"
                       ) from None
    try:
        found.verify()
    except ArtifactError as err:
        raise CliError(f"{variant} build {found.build_id[:12]} is damaged: {err}") from None
    return found


def cmd_promote(args: argparse.Namespace) -> int:
    from lvm_pipeline.defs.promoted_models import promotion_lock, read_promotion, record_promotion
    from lvm_pipeline.report import Promotion

    data_dir = resolve_data_dir(args.data_dir)
    build = _checkpoint(data_dir, args.variant, args.build)
    by, reason = f"{getpass.getuser()} (lvm promote)", args.reason or "promoted by hand"
    with open_data_dir_instance(data_dir) as instance, promotion_lock(instance):
        current = read_promotion(instance, args.variant, _warn("promote"))
        if current is not None and current.build_id == build.build_id:
            print(f"{args.variant}: {build.build_id[:12]} is already the promoted build")
            return EXIT_OK
        new = (Promotion(args.variant, build.build_id, "manual", by, reason) if current is None
               else current.succeeded_by(build.build_id, "manual", by, reason))
        record_promotion(instance, new)
    was = f" (was {current.build_id[:12]})" if current else ""
    print(f"{args.variant}: promoted {build.build_id[:12]}{was}")
    return EXIT_OK


def cmd_rollback(args: argparse.Namespace) -> int:
    from lvm_pipeline.defs.promoted_models import promotion_lock, read_promotion, record_promotion

    data_dir = resolve_data_dir(args.data_dir)
    with open_data_dir_instance(data_dir) as instance, promotion_lock(instance):
        current = read_promotion(instance, args.variant, _warn("rollback"))
        if current is None:
            raise CliError(f"{args.variant} was never promoted, so there is nothing to roll "
                           "back", hint=HINT)
        try:
            new = current.rolled_back(f"{getpass.getuser()} (lvm rollback)")
        except ValueError as err:
            raise CliError(str(err), hint=HINT) from None
        _checkpoint(data_dir, args.variant, new.build_id)  # still there and intact
        record_promotion(instance, new)
    print(f"{args.variant}: rolled back from {current.build_id[:12]} to {new.build_id[:12]}")
    return EXIT_OK


def promoted_table(data_dir: Path, as_json: bool) -> str:
    """Each variant → its promoted build, when, how (gate, manual, rollback), by whom, why."""
    from lvm_pipeline.defs.promoted_models import read_promotions
    from lvm_pipeline.models import VARIANTS

    with open_data_dir_instance(data_dir) as instance:
        promoted = read_promotions(instance, _warn("models"))
    if as_json:
        return json.dumps({v: promoted[v].to_record() if v in promoted else None
                           for v in VARIANTS}, indent=2)
    lines = [f"{'variant':<15} {'build':<12}  {'promoted at (UTC)':<20} {'how':<8} by / why"]
    for variant in VARIANTS:
        p = promoted.get(variant)
        lines.append(f"{variant:<15} never promoted" if p is None else
                     f"{variant:<15} {p.build_id[:12]}  {p.at[:19]:<20} {p.action:<8} "
                     f"{p.by}: {p.reason}")
    return "\n".join(lines)


def register(sub: argparse._SubParsersAction) -> None:
    from lvm_pipeline.models import VARIANTS

    promote = add_command(sub, "promote", "Promote an existing checkpoint build of a variant by "
                                          "hand (recorded in the Dagster instance).",
                          epilog="example: lvm promote mamba_s 3f9a1c0d2b4e")
    promote.add_argument("variant", choices=VARIANTS)
    promote.add_argument("build", help="the checkpoint's build id or its first characters (>= 6)")
    promote.add_argument("--reason", help="why, recorded with the promotion")
    promote.set_defaults(func=cmd_promote)
    rollback = add_command(sub, "rollback", "Make the previously promoted build of a variant "
                                            "the promoted one again (recorded in the instance).")
    rollback.add_argument("variant", choices=VARIANTS)
    rollback.set_defaults(func=cmd_rollback)
