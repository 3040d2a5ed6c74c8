"""``lvm``: one module per command, one in-process runner, the run config they build.

Exit codes scripts can rely on: 0 success, 1 a check or a step failed (the reason is printed),
2 a usage error. Every command takes ``--data-dir`` (env ``LVM_DATA_DIR``, default ``./data``);
the Dagster instance lives in ``DAGSTER_HOME`` (default ``<data dir>/dagster_home``), so runs
started here show up in the UI. Each command lives in its own module of this package and adds
itself to the parser through ``register``.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from lvm_pipeline.cli.common import EXIT_FAILED, EXIT_OK, EXIT_USAGE, CliError
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


if __name__ == "__main__":
    sys.exit(main())
