"""What every ``lvm`` command shares: exit codes, the data dir, the Dagster instance."""

from __future__ import annotations

import argparse
import os
import shutil
from pathlib import Path

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2
PROJECT_ROOT = Path(__file__).resolve().parents[2]


class CliError(Exception):
    """A failure to report in one line (exit 1)."""


def add_command(sub: argparse._SubParsersAction, name: str, help_text: str
                ) -> argparse.ArgumentParser:
    """A subcommand with the options every command takes."""
    parser = sub.add_parser(name, help=help_text, description=help_text)
    parser.add_argument("--data-dir", help="artifact root (env LVM_DATA_DIR; default ./data)")
    return parser


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
