"""What every ``lvm`` command shares: exit codes, one-line errors, the data dir, the Dagster
instance, the options that configure a run, and running (part of) the graph in-process.

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
import contextlib
import os
import shutil
import sys
import time
from collections.abc import Collection, Iterator, Sequence
from pathlib import Path
from typing import Any

from lvm_pipeline.cli.events import failure_lines
from lvm_pipeline.runtime import BARS_ENV

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2
PROJECT_ROOT = Path(__file__).resolve().parents[2]
# The instance template copied into a new DAGSTER_HOME (shipped inside the package, so an
# installed wheel has it too; not in the repository root, where `dagster dev` would warn that
# a dagster.yaml in the current folder is not used).
INSTANCE_TEMPLATE = PROJECT_ROOT / "dagster.yaml"


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
    return parser


def resolve_data_dir(arg: str | None) -> Path:
    return Path(arg or os.environ.get("LVM_DATA_DIR") or "data").expanduser().resolve()


def prepare_environment(data_dir: Path) -> Path:
    """Point the definitions at ``data_dir`` and DAGSTER_HOME at its instance; return the home.

    The storage resource reads LVM_DATA_DIR when a step opens the store (runs started here pass
    the data dir explicitly as well; the UI's code server inherits the variable). An existing
    ``dagster.yaml`` in the home is kept (that is where a Postgres instance is configured,
    docs/deploy.md); a missing one is copied from the package's template.
    """
    from lvm_pipeline.store import ArtifactError, ArtifactStore

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
        shutil.copyfile(INSTANCE_TEMPLATE, instance_yaml)
    return home


@contextlib.contextmanager
def open_instance_lock(home: Path) -> Iterator[None]:
    """Hold while opening the instance at ``home``. Opening a fresh SQLite instance creates its
    tables, and two ``lvm`` processes doing that at once fail with "table … already exists"
    (seen with two parallel first runs); once created, opening is cheap and runs proceed in
    parallel."""
    import fcntl

    with open(home / ".lvm-instance.lock", "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        yield


def open_instance(home: Path) -> Any:
    """The Dagster instance at ``home`` (a ``DagsterInstance``; use it in a ``with``)."""
    import dagster as dg

    with open_instance_lock(home):
        return dg.DagsterInstance.from_config(str(home))


# ----------------------------------------------------------------------------- run options

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
    training.add_argument("--epochs", type=int, metavar="N",
                          help="training epochs per model (default 20)")
    training.add_argument("--device", choices=("cpu", "cuda", "auto"),
                          help="device of the five trainings and of the embedder; auto: CUDA "
                               "when torch sees a GPU, else the CPU (default auto; the device "
                               "used is logged and recorded)")
    parser.add_argument("--no-tracking", action="store_true",
                        help="record no MLflow runs of the trainings and the report (env "
                             "LVM_TRACKING=off; default: <data dir>/mlflow/mlflow.db, or "
                             "MLFLOW_TRACKING_URI)")
    parser.add_argument("--log-level", default="INFO", choices=("DEBUG", "INFO", "WARNING"),
                        help="what the console shows besides step results and progress: "
                             "INFO adds the assets' log lines, DEBUG every Dagster event "
                             "(default INFO)")


def run_config_from_args(args: argparse.Namespace, ops: Collection[str] | None = None,
                         selection_label: str = "the selection") -> dict[str, Any]:
    """Run config for the ops in ``ops`` (default: all) from the options of
    :func:`add_run_options`; an option for an op outside ``ops`` is a usage error, because
    silently ignoring ``--epochs`` on a selection without models would surprise."""
    from lvm_pipeline.cli.run_config import run_config
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
        if corpus and "corpus" not in ops:
            raise UsageError(f"--max-chunks/--max-chunks-per-article/--corpus configure "
                             f"`corpus`, which {selection_label} does not include")
        if payload and "payload" not in ops:
            raise UsageError(f"--payload/--payload-dtype configure `payload`, which "
                             f"{selection_label} does not include")
        if index and "faiss_index" not in ops:
            raise UsageError(f"--index configures `faiss_index`, which {selection_label} does "
                             "not include")
        if training and not set(VARIANTS) & selected:
            raise UsageError(f"--preset/--epochs configure the models, which "
                             f"{selection_label} does not include")
        if args.device and not {"payload", *VARIANTS} & selected:
            raise UsageError(f"--device configures the embedder (`payload`, and the canary "
                             f"of the models' guards) and the models, which {selection_label} "
                             "does not include")
    if args.device and set(VARIANTS) & selected:
        training["device"] = args.device
    config = run_config(corpus, training, payload, index, only=ops)
    embedder = embedder_for_payload(args.payload) if args.payload else {}
    if args.device:
        embedder["device"] = args.device
    resources: dict[str, Any] = {}
    if embedder:
        resources["embedder"] = {"config": embedder}
    if args.no_tracking:
        resources["tracking"] = {"config": {"enabled": False}}
    if resources:
        config["resources"] = resources
    return config


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

def execute(command: str, data_dir: Path, home: Path, run_config: dict[str, Any],
            log_level: str, job_name: str | None = None,
            asset_selection: Sequence[Any] | None = None,
            tags: dict[str, str] | None = None) -> tuple[int, Any]:
    """Run ``job_name`` (default: every asset, narrowed by ``asset_selection``, checks of the
    selected assets included) in this process, recorded in the instance at ``home`` so the UI
    shows it; print step results and progress to stderr and, on failure, one line per reason
    and where to look. Returns ``(exit code, result)``."""
    import dagster as dg

    from lvm_pipeline.cli.console import CONSOLE_LOGGER, console_logger
    from lvm_pipeline.definitions import defs
    from lvm_pipeline.defs.resources import storage_resources

    loaded = defs()
    # The storage root is bound to ``data_dir`` explicitly: a process that runs two commands
    # must not write to the first one's.
    run_defs = dg.Definitions(assets=loaded.assets, asset_checks=loaded.asset_checks,
                              jobs=loaded.jobs,
                              resources={**loaded.resources, **storage_resources(str(data_dir))})
    job = (run_defs.resolve_job_def(job_name) if job_name
           else run_defs.resolve_implicit_global_asset_job_def())
    job = job.with_logger_defs({CONSOLE_LOGGER: console_logger})
    config = {**run_config, "loggers": {CONSOLE_LOGGER: {"config": {"log_level": log_level}}}}
    print(f"lvm {command}: data dir {data_dir}, Dagster instance {home}", file=sys.stderr)
    start = time.perf_counter()
    instance = open_instance(home)
    previous = os.environ.get(BARS_ENV)
    os.environ[BARS_ENV] = "1" if sys.stderr.isatty() else "0"
    try:
        with instance:
            result = job.execute_in_process(run_config=config, instance=instance,
                                            asset_selection=asset_selection, tags=tags,
                                            raise_on_error=False)
    finally:
        if previous is None:
            del os.environ[BARS_ENV]
        else:
            os.environ[BARS_ENV] = previous
    elapsed = time.perf_counter() - start
    failures = failure_lines(result.all_events)
    if not result.success or failures:
        print(f"\nlvm {command} FAILED after {elapsed:.0f} s (run {result.run_id}):",
              file=sys.stderr)
        for line in failures or ["the run did not succeed; see the run's logs in the UI"]:
            print(f"  - {line}", file=sys.stderr)
        print(f"Details: `lvm ui --data-dir {data_dir}`, then Runs → {result.run_id}",
              file=sys.stderr)
        return EXIT_FAILED, result
    print(f"lvm {command}: succeeded in {elapsed:.0f} s (run {result.run_id})", file=sys.stderr)
    return EXIT_OK, result
