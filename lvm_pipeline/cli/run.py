"""``lvm run``: materialize the whole graph in the project's Dagster instance."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

from lvm_pipeline.cli.common import (
    EXIT_FAILED,
    EXIT_OK,
    add_command,
    prepare_environment,
    resolve_data_dir,
)


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
    payload = {"path": str(Path(args.payload).resolve())} if args.payload else None
    index = {"type": args.index} if args.index else None
    config = run_config(corpus, training, payload, index)
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


def register(sub: argparse._SubParsersAction) -> None:
    from lvm_pipeline.index import INDEX_TYPES

    run = add_command(sub, "run", "Materialize the whole graph (corpus → payload → sequences → "
                                  "five models → index → report) and print the report table.")
    run.add_argument("--max-chunks", type=int,
                     help="stop reading the corpus after this many chunks (default 6000)")
    run.add_argument("--corpus", metavar="PATH",
                     help="read articles from PATH instead of the offline sample")
    run.add_argument("--corpus-source", choices=("wikipedia", "text_dir"), default="wikipedia",
                     help="format of --corpus: a parquet/JSONL dump or a folder of .txt files")
    run.add_argument("--payload", metavar="PATH",
                     help="use this published payload (a data dir or a payload build folder, "
                          "e.g. the OUT of `lvm synth-payload`) instead of embedding the corpus")
    run.add_argument("--index", choices=INDEX_TYPES,
                     help="FAISS index type (default flat, exact; see lvm_pipeline/index.py)")
    run.add_argument("--preset", choices=("tiny", "paper"), default="tiny",
                     help="model sizes (default tiny)")
    run.add_argument("--epochs", type=int, help="training epochs per model (default 20)")
    run.add_argument("--device", choices=("cpu", "cuda", "auto"),
                     help="training device (default cpu)")
    run.add_argument("--log-level", default="INFO", choices=("DEBUG", "INFO", "WARNING"),
                     help="Dagster log level on the console (default INFO)")
    run.set_defaults(func=cmd_run)
