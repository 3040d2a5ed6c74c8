"""``lvm report``: print the latest retrieval report."""

from __future__ import annotations

import argparse
import json

from lvm_pipeline.cli.common import EXIT_OK, CliError, add_command, resolve_data_dir


def cmd_report(args: argparse.Namespace) -> int:
    from lvm_pipeline.artifacts import ArtifactError, ArtifactStore
    from lvm_pipeline.report import current_report, render_markdown

    try:
        report = current_report(ArtifactStore(resolve_data_dir(args.data_dir)))
    except ArtifactError as err:
        raise CliError(str(err)) from None
    print(json.dumps(report, indent=2, sort_keys=True) if args.json else render_markdown(report))
    return EXIT_OK


def register(sub: argparse._SubParsersAction) -> None:
    report = add_command(sub, "report", "Print the latest retrieval report as a table (or JSON).")
    report.add_argument("--json", action="store_true", help="print report.json")
    report.set_defaults(func=cmd_report)
