"""``lvm``: run the pipeline and read its results from a terminal.

Exit codes scripts can rely on: 0 success, 1 a check or a step failed (the reason is printed),
2 a usage error. Every command takes ``--data-dir`` (env ``LVM_DATA_DIR``, default ``./data``);
the Dagster instance lives in ``DAGSTER_HOME`` (default ``<data dir>/dagster_home``), so runs
started here show up in the UI.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Any

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2
PROJECT_ROOT = Path(__file__).resolve().parents[1]


class CliError(Exception):
    """A failure to report in one line (exit 1)."""


# --------------------------------------------------------------------------- environment


def resolve_data_dir(arg: str | None) -> Path:
    return Path(arg or os.environ.get("LVM_DATA_DIR") or "data").expanduser().resolve()


def prepare_environment(data_dir: Path) -> Path:
    """Point the definitions at ``data_dir`` and DAGSTER_HOME at its instance; return the home.

    Must run before ``lvm_pipeline.definitions`` is imported: resources read LVM_DATA_DIR then.
    """
    from lvm_pipeline.artifacts import ArtifactError, ArtifactStore

    try:
        ArtifactStore(data_dir).ensure_writable()
    except ArtifactError as err:
        raise CliError(str(err)) from None
    os.environ["LVM_DATA_DIR"] = str(data_dir)
    home = Path(os.environ.get("DAGSTER_HOME") or data_dir / "dagster_home").resolve()
    home.mkdir(parents=True, exist_ok=True)
    os.environ["DAGSTER_HOME"] = str(home)
    instance_yaml = home / "dagster.yaml"
    if not instance_yaml.exists():
        template = PROJECT_ROOT / "dagster.yaml"
        if not template.exists():
            raise CliError(f"{instance_yaml} is missing and no dagster.yaml template was found at "
                           f"{template}; install with `pip install -e .` from the checkout")
        shutil.copyfile(template, instance_yaml)
    return home


# --------------------------------------------------------------------------- run


def _failure_lines(result: Any) -> list[str]:
    """One line per failed step or failed check, with the reason."""
    lines = []
    for event in result.all_events:
        if event.event_type_value == "STEP_FAILURE":
            error = event.event_specific_data.error
            message = error.message.strip().splitlines()[-1] if error else "unknown error"
            if error and error.cause:
                message = error.cause.message.strip().splitlines()[-1]
            lines.append(f"step {event.step_key} failed: {message}")
        elif event.event_type_value == "ASSET_CHECK_EVALUATION":
            evaluation = event.event_specific_data
            if not evaluation.passed:
                lines.append(f"check {evaluation.check_name} on "
                             f"{evaluation.asset_key.to_user_string()} FAILED: "
                             f"{evaluation.description}")
    return lines


def cmd_run(args: argparse.Namespace) -> int:
    data_dir = resolve_data_dir(args.data_dir)
    home = prepare_environment(data_dir)
    from dagster import DagsterInstance

    from lvm_pipeline.definitions import defs
    from lvm_pipeline.defs.run_config import run_config

    corpus: dict[str, Any] = {}
    if args.max_chunks is not None:
        corpus["max_chunks"] = args.max_chunks
    if args.corpus:
        corpus.update(source=args.corpus_source, path=str(Path(args.corpus).resolve()))
    training: dict[str, Any] = {"size": args.preset}
    if args.epochs is not None:
        training["epochs"] = args.epochs
    if args.device:
        training["device"] = args.device
    config = run_config(corpus, training)
    config["loggers"] = {"console": {"config": {"log_level": args.log_level}}}
    print(f"lvm run: data dir {data_dir}, Dagster instance {home}", file=sys.stderr)
    start = time.perf_counter()
    job = defs.resolve_job_def("full_retrain")
    with DagsterInstance.get() as instance:
        result = job.execute_in_process(run_config=config, instance=instance,
                                        raise_on_error=False)
    elapsed = time.perf_counter() - start
    failures = _failure_lines(result)
    if not result.success or failures:
        print(f"\nlvm run FAILED after {elapsed:.0f} s (run {result.run_id}):", file=sys.stderr)
        for line in failures or ["the run did not succeed; see the run's logs in the UI"]:
            print(f"  - {line}", file=sys.stderr)
        print(f"Details: `lvm ui` and open run {result.run_id}.", file=sys.stderr)
        return EXIT_FAILED
    from lvm_pipeline.artifacts import ArtifactStore
    from lvm_pipeline.report import current_report, render_markdown

    print(render_markdown(current_report(ArtifactStore(data_dir))))
    print(f"lvm run: succeeded in {elapsed:.0f} s (run {result.run_id})", file=sys.stderr)
    return EXIT_OK


# --------------------------------------------------------------------------- report


def cmd_report(args: argparse.Namespace) -> int:
    import json

    from lvm_pipeline.artifacts import ArtifactError, ArtifactStore
    from lvm_pipeline.report import current_report, render_markdown

    try:
        report = current_report(ArtifactStore(resolve_data_dir(args.data_dir)))
    except ArtifactError as err:
        raise CliError(str(err)) from None
    print(json.dumps(report, indent=2, sort_keys=True) if args.json else render_markdown(report))
    return EXIT_OK


# --------------------------------------------------------------------------- parser


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="lvm", description="Train latent vector models on aligned, checked data.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def add(name: str, help_text: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help_text, description=help_text)
        p.add_argument("--data-dir", help="artifact root (env LVM_DATA_DIR; default ./data)")
        return p

    run = add("run", "Materialize the whole graph (corpus → payload → sequences → five models "
                     "→ index → report) and print the report table.")
    run.add_argument("--max-chunks", type=int,
                     help="stop reading the corpus after this many chunks (default 6000)")
    run.add_argument("--corpus", metavar="PATH",
                     help="read articles from PATH instead of the offline sample")
    run.add_argument("--corpus-source", choices=("wikipedia", "text_dir"), default="wikipedia",
                     help="format of --corpus: a parquet/JSONL dump or a folder of .txt files")
    run.add_argument("--preset", choices=("tiny", "paper"), default="tiny",
                     help="model sizes (default tiny)")
    run.add_argument("--epochs", type=int, help="training epochs per model (default 20)")
    run.add_argument("--device", choices=("cpu", "cuda", "auto"),
                     help="training device (default cpu)")
    run.add_argument("--log-level", default="INFO", choices=("DEBUG", "INFO", "WARNING"),
                     help="Dagster log level on the console (default INFO)")
    run.set_defaults(func=cmd_run)

    report = add("report", "Print the latest retrieval report as a table (or JSON).")
    report.add_argument("--json", action="store_true", help="print report.json")
    report.set_defaults(func=cmd_report)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exit_:  # argparse exits 2 on usage errors, 0 on --help
        return int(exit_.code or 0)
    try:
        return args.func(args)
    except CliError as err:
        print(f"lvm {args.command}: {err}", file=sys.stderr)
        return EXIT_FAILED
    except KeyboardInterrupt:
        print(f"lvm {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
