"""``lvm``: one module per command, one in-process runner, the run config they build.

Exit codes scripts can rely on: 0 success, 1 a check or a step failed (the reason is printed),
2 a usage error. Every failure is one line on stderr; ``--debug`` (before or after the command)
adds the traceback, and lets an unexpected exception propagate with its own. Every command
takes ``--data-dir`` (env ``LVM_DATA_DIR``, default ``./data``);
the Dagster instance lives in ``DAGSTER_HOME`` (default ``<data dir>/dagster_home``), so runs
started here show up in the UI. Each command lives in its own module of this package and adds
itself to the parser through ``register``.
"""

from __future__ import annotations

import argparse
import errno
import importlib
import sys

from lvm_pipeline.cli.common import (
    EXIT_FAILED,
    EXIT_OK,
    EXIT_USAGE,
    CliError,
    instance_home,
    resolve_data_dir,
)
from lvm_pipeline.store import ArtifactError

# One module per command (or group of related commands), each with `register(subparsers)`.
COMMAND_MODULES = ("run", "materialize", "report", "models", "promote", "check", "verify",
                   "reference", "ui", "synth_payload", "cache", "runs")

__all__ = ["EXIT_FAILED", "EXIT_OK", "EXIT_USAGE", "build_parser", "main"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="lvm", description="Train latent vector models on aligned, checked data.",
        epilog="Each command explains itself: lvm COMMAND --help. Exit codes: 0 success, "
               "1 a check or step failed, 2 a usage error.")
    parser.add_argument("--debug", action="store_true",
                        help="print the traceback of a failure, not only its one line")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(f"lvm_pipeline.cli.{name}").register(sub)
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
        print(err.line(args.command), file=sys.stderr)
        return err.exit_code
    except ArtifactError as err:  # a missing or damaged artifact: its message names the file
        print(CliError(str(err)).line(args.command), file=sys.stderr)
        return EXIT_FAILED
    except KeyboardInterrupt:
        print(f"lvm {args.command}: interrupted", file=sys.stderr)
        return 130
    except Exception as err:
        # Anything else is a bug or the machine (a full disk): one line, unless asked for more.
        if args.debug:
            raise
        print(CliError(unexpected_error_line(err, args)).line(args.command)
              + " (run with --debug for the traceback)", file=sys.stderr)
        return EXIT_FAILED


def unexpected_error_line(err: Exception, args: argparse.Namespace) -> str:
    """What went wrong, in words, for an exception no command turned into a :class:`CliError`:
    a full disk names the file or database it could not write; anything else is its type and
    message."""
    if isinstance(err, OSError) and err.errno == errno.ENOSPC:
        where = f" writing {err.filename}" if err.filename else (
            f" (data dir {resolve_data_dir(getattr(args, 'data_dir', None))})")
        return f"no space left on device{where}"
    if _is_database_error(err):
        home = instance_home(resolve_data_dir(getattr(args, "data_dir", None)))
        reason = " ".join(str(getattr(err, "orig", None) or err).split())
        full = any(text in reason for text in ("disk I/O error", "database or disk is full"))
        return (f"the Dagster instance database {home} could not be written: {reason}"
                + (" (is the disk full?)" if full else ""))
    return f"{type(err).__name__}: {err}"


def _is_database_error(err: Exception) -> bool:
    """SQLAlchemy's OperationalError (the instance's SQLite or Postgres failed), found without
    importing SQLAlchemy when no command needed it."""
    sqlalchemy = sys.modules.get("sqlalchemy.exc")
    return sqlalchemy is not None and isinstance(err, sqlalchemy.OperationalError)


if __name__ == "__main__":
    sys.exit(main())
