"""``lvm report`` and ``lvm diagnose``: read the latest retrieval report (``--compare``: its
change since an earlier one)."""

from __future__ import annotations

import argparse
import json
import sys

from lvm_pipeline.cli.common import (
    EXIT_OK,
    CliError,
    add_command,
    open_cli_store,
    open_data_dir_instance,
    resolve_data_dir,
)
from lvm_pipeline.store import kinds

# ``--compare`` without a build: the report materialized before the current one.
PREVIOUS = "previous"


def cmd_report(args: argparse.Namespace) -> int:
    from lvm_pipeline.guards import check_lineage
    from lvm_pipeline.report import read_report, render_markdown
    from lvm_pipeline.store import ArtifactError

    store = open_cli_store(resolve_data_dir(args.data_dir))
    try:
        build = store.current(kinds.REPORT)
        report = read_report(build)
        verify_scored_checkpoints(store, build)
        # A report over an index, eval set or checkpoints that are no longer current describes
        # artifacts that are not the ones in use: say so instead of printing it as current.
        lineage = check_lineage(store, build, "report lineage")
    except ArtifactError as err:
        raise CliError(str(err)) from None
    if not lineage.passed:
        if not args.allow_stale:
            raise CliError(f"{lineage.message}: {'; '.join(lineage.examples)} "
                           "(--allow-stale prints it anyway)")
        print(f"lvm report: WARNING {lineage.message}", file=sys.stderr)
    if args.compare is not None:
        from lvm_pipeline.report import compare_reports
        from lvm_pipeline.report import comparison_markdown as markdown

        current = store.current(kinds.REPORT)
        previous = (_previous_report(args, current.build_id) if args.compare == PREVIOUS
                    else _named_report(store, args.compare))
        comparison = compare_reports(current, previous)
        print(json.dumps(comparison, indent=2) if args.json else markdown(comparison))
        return EXIT_OK
    print(json.dumps(report, indent=2, sort_keys=True) if args.json else render_markdown(report))
    return EXIT_OK


def verify_scored_checkpoints(store, report) -> None:
    """Re-hash every file of each checkpoint ``report`` scored (its upstream names them): a
    report is printed only about models that are still there as they were scored. Raises an
    ArtifactError naming the checkpoint and the file."""
    from lvm_pipeline.store import ArtifactError

    for kind, build_id in sorted(report.manifest.get("upstream", {}).items()):
        if kind.startswith(kinds.checkpoint("")):
            try:
                store.get(kind, build_id).verify()
            except ArtifactError as err:
                raise ArtifactError(f"report {report.build_id[:12]} scored {kind} "
                                    f"{build_id[:12]}, which no longer verifies: {err}") from None


def _named_report(store, build: str):
    from lvm_pipeline.store import ArtifactError

    try:
        return store.find(kinds.REPORT, build)
    except ArtifactError as err:
        raise CliError(str(err)) from None


def _previous_report(args: argparse.Namespace, current: str):
    """The report materialized before ``current`` (another build), from the instance's
    history of ``retrieval_report``: what the UI's plots show as the point before."""
    import dagster as dg

    from lvm_pipeline.defs.io_manager import BUILD_ID

    data_dir = resolve_data_dir(args.data_dir)
    seen_current, cursor = False, None
    with open_data_dir_instance(data_dir) as instance:
        while True:
            page = instance.fetch_materializations(dg.AssetKey("retrieval_report"), limit=100,
                                                   cursor=cursor)
            for record in page.records:
                build_id = record.asset_materialization.metadata[BUILD_ID].value
                if build_id == current:
                    seen_current = True
                elif seen_current:
                    return open_cli_store(data_dir).get(kinds.REPORT, build_id)
            if not page.has_more:
                break
            cursor = page.cursor
    where = ("no report was materialized before it" if seen_current else
             "the Dagster instance has no materialization of it")
    raise CliError(f"nothing to compare report {current[:12]} with: {where}",
                   hint="`lvm report --compare BUILD` to name one")


def cmd_diagnose(args: argparse.Namespace) -> int:
    from lvm_pipeline.report import diagnose
    from lvm_pipeline.store import ArtifactError

    try:
        print(diagnose(open_cli_store(resolve_data_dir(args.data_dir)), args.model, args.examples))
    except ArtifactError as err:
        raise CliError(str(err)) from None
    return EXIT_OK


def register(sub: argparse._SubParsersAction) -> None:
    report = add_command(sub, "report", "Print the latest retrieval report as a table (or JSON).",
                         description="Print the latest retrieval report as a table (or JSON). "
                                     "Every checkpoint it scored is re-hashed first: exit 1, "
                                     "naming the file, when one was truncated or edited.")
    report.add_argument("--json", action="store_true", help="print report.json")
    report.add_argument("--allow-stale", action="store_true",
                        help="print the report even when its payload, index, eval set or "
                             "checkpoints are no longer the current ones (with a warning)")
    report.add_argument("--compare", nargs="?", const=PREVIOUS, metavar="BUILD",
                        help="print each headline figure's change against the report "
                             "materialized before this one (or report build BUILD), with "
                             "intervals (lvm_pipeline/report/trends.py)")
    report.set_defaults(func=cmd_report)
    diagnose = add_command(sub, "diagnose", "Show what one model (or baseline) retrieves: rank of "
                                            "truth, margins, impostors and example queries with "
                                            "their texts.")
    diagnose.add_argument("model", help="a model (mamba_s, …) or baseline (copy_last_context, …)")
    diagnose.add_argument("--examples", type=int, default=3,
                          help="example queries to print, from best to worst rank (default 3)")
    diagnose.set_defaults(func=cmd_diagnose)
