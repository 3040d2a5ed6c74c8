"""What every ``lvm`` command shares: exit codes, one-line errors, the data dir and its Dagster
instance, the options that configure a run, and running (part of) the graph with a console.

Conventions every command module follows (so scripts can rely on them):
- exit 0 success, 1 a check or step failed or something is missing (:class:`CliError`),
  2 a usage error (:class:`UsageError`, or argparse's own);
- an error is one line on stderr, ``lvm COMMAND: what is wrong``, with ``; see WHERE`` when
  there is a place to look (a run in the UI, a file, a command);
- results go to stdout, progress and logs to stderr, so ``lvm report --json > r.json`` works;
- Dagster and torch are imported inside the command functions, never at module level, so
  ``lvm --help`` answers at once.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Collection
from pathlib import Path
from typing import Any

from lvm_pipeline.cli.events import failure_details, failure_lines, planned_steps, warning_lines

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


class CliError(Exception):
    """A failure to report in one line (exit 1); ``hint`` says where to look."""

    exit_code = EXIT_FAILED

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.hint = hint

    def line(self, command: str) -> str:
        """``lvm COMMAND: message; see hint`` on one line."""
        message = " ".join(str(self).split())  # never more than one line
        return f"lvm {command}: {message}" + (f"; see {self.hint}" if self.hint else "")


class UsageError(CliError):
    """The command line asks for something that cannot be (exit 2, like argparse's errors)."""

    exit_code = EXIT_USAGE


def add_command(sub: argparse._SubParsersAction, name: str, help_text: str,
                description: str | None = None, epilog: str | None = None
                ) -> argparse.ArgumentParser:
    """A subcommand with the options every command takes.

    ``help_text`` is the one line in ``lvm --help``; ``description`` (default: the same) and
    ``epilog`` (examples, exit codes) appear in ``lvm NAME --help`` with their line breaks kept.
    """
    parser = sub.add_parser(name, help=help_text, description=description or help_text,
                            epilog=epilog, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", help="artifact root (env LVM_DATA_DIR; default ./data)")
    # Also `lvm --debug COMMAND`; SUPPRESS keeps this default from hiding that one.
    parser.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                        help="print the traceback of a failure, not only its one line")
    return parser


def resolve_data_dir(arg: str | None) -> Path:
    """``--data-dir``, else ``LVM_DATA_DIR``, else ``./data``: absolute."""
    return Path(arg or os.environ.get("LVM_DATA_DIR") or "data").expanduser().resolve()


def instance_home(data_dir: Path) -> Path:
    """The Dagster instance of ``data_dir``: ``DAGSTER_HOME`` when the environment sets one
    (a deployment's shared instance), else ``<data dir>/dagster_home``, which travels with a copy
    of the data dir."""
    return Path(os.environ.get("DAGSTER_HOME") or data_dir / "dagster_home").resolve()


def prepare(data_dir: Path) -> Path:
    """Check that ``data_dir`` is writable (naming it, before any work starts) and return its
    instance's home."""
    from lvm_pipeline.store import ArtifactError, ArtifactStore

    try:
        ArtifactStore(data_dir).ensure_writable()
    except ArtifactError as err:
        raise CliError(str(err)) from None
    return instance_home(data_dir)


def open_data_dir_instance(data_dir: Path) -> Any:
    """The Dagster instance of ``data_dir`` (a ``DagsterInstance``; use it in a ``with``)."""
    from lvm_pipeline.cli.runner import open_instance

    return open_instance(prepare(data_dir))


def open_cli_store(data_dir: Path) -> Any:
    """The artifact store of ``data_dir`` as every run opens it: mirrored to
    ``LVM_ARTIFACT_MIRROR`` when the environment names one."""
    from lvm_pipeline.store import open_store

    return open_store(data_dir, os.environ.get("LVM_ARTIFACT_MIRROR", ""))


# ----------------------------------------------------------------------------- run options

def at_least_one(text: str) -> int:
    """An argparse type for counts that must be >= 1: refused while the command line is read
    (exit 2), not after the data half of a run has been built."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def add_run_options(parser: argparse.ArgumentParser) -> None:
    """Options that configure the corpus and the five trainings (``lvm run``, ``lvm
    materialize``); each maps onto one field of the assets' Dagster config."""
    from lvm_pipeline.search import INDEX_TYPES

    corpus = parser.add_argument_group("corpus (configures the `corpus` asset)")
    corpus.add_argument("--max-chunks", type=int, metavar="N",
                        help="stop reading at the end of the article that reaches N chunks; "
                             "0: no limit (default: 6000 for the offline sample, none for "
                             "--corpus)")
    corpus.add_argument("--max-chunks-per-article", type=int, metavar="N",
                        help="keep at most the first N chunks of each article; 0: no limit "
                             "(default: 40 for the offline sample, none for --corpus)")
    corpus.add_argument("--corpus", metavar="PATH",
                        help="read articles from PATH instead of the offline sample")
    corpus.add_argument("--corpus-source", choices=("wikipedia", "text_dir"),
                        default="wikipedia",
                        help="format of --corpus: a parquet/JSONL dump or a folder of .txt files")
    payload = parser.add_argument_group("payload and index (configure `payload`, `faiss_index`)")
    payload.add_argument("--payload", metavar="PATH",
                         help="use this published payload (a data dir or a payload build folder, "
                              "e.g. the OUT of `lvm synth-payload`) instead of embedding the "
                              "corpus")
    payload.add_argument("--payload-dtype", choices=("float32", "float16"),
                         help="storage of embedded vectors (default float32; float16 halves "
                              "the payload)")
    payload.add_argument("--index", choices=INDEX_TYPES,
                         help="FAISS index type (default flat, exact; see lvm_pipeline/search/index.py)")
    training = parser.add_argument_group("training (configures the five model assets)")
    training.add_argument("--preset", choices=("tiny", "paper"),
                          help="model sizes (default tiny)")
    training.add_argument("--epochs", type=at_least_one, metavar="N",
                          help="training epochs per model (default 20)")
    training.add_argument("--device", choices=("cpu", "cuda", "auto"),
                          help="device of the five trainings and of the embedder; auto: CUDA "
                               "when torch sees a GPU, else the CPU (default auto; the device "
                               "used is logged and recorded)")
    parser.add_argument("--rebuild", action="store_true",
                        help="compute every selected step even when a build of the same code, "
                             "config and inputs exists (default: reuse it; the corpus always "
                             "reads its source)")
    parser.add_argument("--no-tracking", action="store_true",
                        help="record no MLflow runs of the trainings and the report (env "
                             "LVM_TRACKING=off; default: <data dir>/mlflow/mlflow.db, or "
                             "MLFLOW_TRACKING_URI)")
    parser.add_argument("--log-level", default="INFO", choices=("DEBUG", "INFO", "WARNING"),
                        help="what the console shows besides step results and progress: "
                             "INFO adds the assets' log lines, DEBUG every Dagster event "
                             "(default INFO)")


def run_config_from_args(args: argparse.Namespace, ops: Collection[str] | None = None,
                         selection_label: str = "the selection") -> Any:
    """The ``dg.RunConfig`` of the ops in ``ops`` (default: all) from the options of
    :func:`add_run_options`; an option for an op outside ``ops`` is a usage error, because
    silently ignoring ``--epochs`` on a selection without models would surprise."""
    from lvm_pipeline.cli.run_config import (
        CorpusParams,
        EvalSequencesParams,
        IndexParams,
        PayloadParams,
        ReportParams,
        TrainingSequencesParams,
        TrainParams,
        run_config,
    )
    from lvm_pipeline.defs.resources import EmbedderResource, TrackingResource
    from lvm_pipeline.models import VARIANTS

    corpus: dict[str, Any] = {}
    for option in ("max_chunks", "max_chunks_per_article"):
        if getattr(args, option) is not None:
            if getattr(args, option) < 0:
                raise UsageError(f"--{option.replace('_', '-')} must be >= 0 (0: no limit)")
            corpus[option] = getattr(args, option)
    if args.corpus:
        corpus.update(source=args.corpus_source, path=str(Path(args.corpus).resolve()))
    payload: dict[str, Any] = {}
    if args.payload:
        payload["path"] = str(Path(args.payload).resolve())
    if args.payload_dtype:
        payload["dtype"] = args.payload_dtype
    index = {"type": args.index} if args.index else {}
    training: dict[str, Any] = {}
    for option, field in (("preset", "size"), ("epochs", "epochs")):
        if getattr(args, option) is not None:
            training[field] = getattr(args, option)
    selected = set(VARIANTS if ops is None else ops)
    if ops is not None:
        _refuse_options_outside(args, ops, selected, selection_label,
                                corpus=corpus, payload=payload, index=index, training=training)
    if args.device and set(VARIANTS) & selected:
        training["device"] = args.device
    rebuild = {"rebuild": True} if args.rebuild else {}
    embedder = embedder_for_payload(args.payload) if args.payload else {}
    if args.device:
        embedder["device"] = args.device
    resources: dict[str, Any] = {}
    if embedder:
        resources["embedder"] = EmbedderResource(**embedder)
    if args.no_tracking:
        resources["tracking"] = TrackingResource(enabled=False)
    return run_config(corpus=CorpusParams(**corpus) if corpus else None,
                      payload=PayloadParams(**payload, **rebuild) if payload or rebuild else None,
                      index=IndexParams(**index, **rebuild) if index or rebuild else None,
                      training=TrainParams(**training, **rebuild) if training or rebuild else None,
                      sequences=TrainingSequencesParams(**rebuild) if rebuild else None,
                      eval_sequences=EvalSequencesParams(**rebuild) if rebuild else None,
                      report=ReportParams(**rebuild) if rebuild else None,
                      resources=resources, only=ops)


def _refuse_options_outside(args: argparse.Namespace, ops: Collection[str], selected: set[str],
                            selection_label: str, **given: dict[str, Any]) -> None:
    """A usage error for an option that configures an asset the selection leaves out."""
    from lvm_pipeline.models import VARIANTS

    if given["corpus"] and "corpus" not in ops:
        raise UsageError(f"--max-chunks/--max-chunks-per-article/--corpus configure "
                         f"`corpus`, which {selection_label} does not include")
    if given["payload"] and "payload" not in ops:
        raise UsageError(f"--payload/--payload-dtype configure `payload`, which "
                         f"{selection_label} does not include")
    if given["index"] and "faiss_index" not in ops:
        raise UsageError(f"--index configures `faiss_index`, which {selection_label} does "
                         "not include")
    if given["training"] and not set(VARIANTS) & selected:
        raise UsageError(f"--preset/--epochs configure the models, which "
                         f"{selection_label} does not include")
    if args.device and not {"payload", *VARIANTS} & selected:
        raise UsageError(f"--device configures the embedder (`payload`, and the canary "
                         f"of the models' guards) and the models, which {selection_label} "
                         "does not include")


def embedder_for_payload(path: str) -> dict[str, Any]:
    """Embedder config that points the embedder (and so the canary) at a synthetic payload's
    generator; nothing for a real payload, whose encoder the user configures."""
    from lvm_pipeline.payload import find_payload_build
    from lvm_pipeline.store import ArtifactError

    try:
        recorded = find_payload_build(path).manifest.get("embedder", {})
    except ArtifactError as err:
        raise UsageError(str(err)) from None
    if not recorded.get("synthetic"):
        return {}
    return {"model": recorded["id"]}


# ----------------------------------------------------------------------------- execution

def run_with_console(command: str, data_dir: Path, run_config: Any, log_level: str, *,
                     job: str | None = None, selection: Any = None,
                     tags: dict[str, str] | None = None, debug: bool = False) -> tuple[int, Any]:
    """Run ``job`` (or the asset ``selection``, checks included) in this process, recorded in
    the data dir's instance so the UI shows it; print step results and progress to stderr and,
    on failure, one line per reason (``debug``: then each failed step's traceback) and where to
    look. Returns ``(exit code, result)``."""
    from lvm_pipeline.cli.runner import Console, execute, open_instance

    home = prepare(data_dir)
    print(f"lvm {command}: data dir {data_dir}, Dagster instance {home}", file=sys.stderr)
    start = time.perf_counter()
    with open_instance(home) as instance:
        result = execute(data_dir, instance, job=job, selection=selection,
                         run_config=run_config, tags=tags,
                         console=Console(log_level, bars=sys.stderr.isatty()))
    elapsed = time.perf_counter() - start
    failures = failure_lines(result.all_events, planned_steps(result))
    if not result.success or failures:
        print(f"\nlvm {command} FAILED after {elapsed:.0f} s (run {result.run_id}):",
              file=sys.stderr)
        for line in failures or ["the run did not succeed; see the run's logs in the UI"]:
            print(f"  - {line}", file=sys.stderr)
        if debug:
            for detail in failure_details(result.all_events):
                print(f"\n{detail}", file=sys.stderr)
        print(f"Details: `lvm ui --data-dir {data_dir}`, then Runs → {result.run_id}",
              file=sys.stderr)
        return EXIT_FAILED, result
    warnings = warning_lines(result.all_events)
    print(f"lvm {command}: succeeded in {elapsed:.0f} s (run {result.run_id})"
          + (", with warnings:" if warnings else ""), file=sys.stderr)
    for line in warnings:
        print(f"  - {line}", file=sys.stderr)
    return EXIT_OK, result


def run_quietly(data_dir: Path, selection: Any, run_config: Any = None,
                resources: dict[str, Any] | None = None) -> Any:
    """Run the assets and checks of ``selection`` against ``data_dir``, recorded in its
    instance, without a console: the caller prints a table of what was checked (Dagster's own
    console lines, stack traces of the blocked steps included, would bury it; the full log stays
    in the instance for the UI). Never raises on a failed step."""
    import dagster as dg

    from lvm_pipeline.cli.runner import execute, open_instance

    config = run_config or dg.RunConfig()
    quiet = dg.RunConfig(ops=config.ops, resources=config.resources,
                         loggers={"console": {"config": {"log_level": "CRITICAL"}}})
    with open_instance(prepare(data_dir)) as instance:
        return execute(data_dir, instance, selection=selection, run_config=quiet,
                       resources=resources)


def exit_code(blocked: bool) -> int:
    return EXIT_FAILED if blocked else EXIT_OK
