"""``lvm report`` and ``lvm diagnose``: read the latest retrieval report."""

from __future__ import annotations

import argparse
import json
import sys

from lvm_pipeline.cli.common import EXIT_OK, CliError, add_command, resolve_data_dir


def cmd_report(args: argparse.Namespace) -> int:
    from lvm_pipeline.artifacts import ArtifactError, ArtifactStore
    from lvm_pipeline.guards import check_lineage
    from lvm_pipeline.report import KIND, current_report
    from lvm_pipeline.report_render import render_markdown

    store = ArtifactStore(resolve_data_dir(args.data_dir))
    try:
        report = current_report(store)
        # A report over an index, eval set or checkpoints that are no longer current describes
        # artifacts that are not the ones in use: say so instead of printing it as current.
        lineage = check_lineage(store, store.current(KIND), "report lineage")
    except ArtifactError as err:
        raise CliError(str(err)) from None
    if not lineage.passed:
        if not args.allow_stale:
            raise CliError(f"{lineage.message}: {'; '.join(lineage.examples)} "
                           "(--allow-stale prints it anyway)")
        print(f"lvm report: WARNING {lineage.message}", file=sys.stderr)
    print(json.dumps(report, indent=2, sort_keys=True) if args.json else render_markdown(report))
    return EXIT_OK


def cmd_diagnose(args: argparse.Namespace) -> int:
    from lvm_pipeline.artifacts import ArtifactError, ArtifactStore
    from lvm_pipeline.diagnosis import diagnose

    try:
        print(diagnose(ArtifactStore(resolve_data_dir(args.data_dir)), args.model, args.examples))
    except ArtifactError as err:
        raise CliError(str(err)) from None
    return EXIT_OK


def register(sub: argparse._SubParsersAction) -> None:
    report = add_command(sub, "report", "Print the latest retrieval report as a table (or JSON).")
    report.add_argument("--json", action="store_true", help="print report.json")
    report.add_argument("--allow-stale", action="store_true",
                        help="print the report even when its payload, index, eval set or "
                             "checkpoints are no longer the current ones (with a warning)")
    report.set_defaults(func=cmd_report)
    diagnose = add_command(sub, "diagnose", "Show what one model (or baseline) retrieves: rank of "
                                            "truth, margins, impostors and example queries with "
                                            "their texts.")
    diagnose.add_argument("model", help="a model (mamba_s, …) or baseline (copy_last_context, …)")
    diagnose.add_argument("--examples", type=int, default=3,
                          help="example queries to print, from best to worst rank (default 3)")
    diagnose.set_defaults(func=cmd_diagnose)
