"""``lvm run``: materialize the whole graph in the project's Dagster instance."""

from __future__ import annotations

import argparse

from lvm_pipeline.cli.common import (
    EXIT_OK,
    add_command,
    add_run_options,
    open_cli_store,
    resolve_data_dir,
    run_config_from_args,
    run_with_console,
)

EPILOG = """\
examples:
  lvm run                                  the offline sample, tiny presets (benchmarks/RESULTS.md)
  lvm run --max-chunks 500 --epochs 2      a quick smoke run
  lvm run --corpus enwiki.parquet --preset paper --device cuda
  lvm run --corpus notes/ --corpus-source text_dir --max-chunks-per-article 100
                                           a folder of .txt files (read whole unless a limit is set)

exit codes: 0 success, 1 a check or step failed (each reason printed, plus the run id to open
in `lvm ui`), 2 a usage error.
"""


def cmd_run(args: argparse.Namespace) -> int:
    data_dir = resolve_data_dir(args.data_dir)
    config = run_config_from_args(args)
    code, result = run_with_console("run", data_dir, config, args.log_level, job="full_retrain",
                                    debug=args.debug)
    if code != EXIT_OK:
        return code
    from lvm_pipeline.cli.events import materialized_build
    from lvm_pipeline.report import read_report, render_markdown
    from lvm_pipeline.store import kinds

    # The report this run produced, by the build id its materialization recorded (CURRENT
    # names whatever run finished last).
    build = open_cli_store(data_dir).get(kinds.REPORT, materialized_build(result, "retrieval_report"))
    print(render_markdown(read_report(build)))
    return EXIT_OK


def register(sub: argparse._SubParsersAction) -> None:
    run = add_command(
        sub, "run", "Materialize the whole graph and print the report table.",
        description="Materialize the whole graph (corpus → payload → sequences → five models → "
                    "index → report)\nwith every blocking check, in this process and recorded "
                    "in the Dagster instance\n(<data dir>/dagster_home), then print the report "
                    "table. Progress bars on a terminal.",
        epilog=EPILOG)
    add_run_options(run)
    run.set_defaults(func=cmd_run)
