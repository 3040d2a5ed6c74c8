"""``lvm ui``: the Dagster UI (webserver + daemon, ``dg dev``) on this project's instance and
data dir."""

from __future__ import annotations

import argparse
import errno
import ipaddress
import os
import signal
import socket
import sys
from pathlib import Path

from lvm_pipeline.cli.common import CliError, add_command, prepare, resolve_data_dir

# What the definitions read to allow pickled imports (lvm_pipeline/defs/resources.py).
PICKLE_IMPORTS_ENV = "LVM_PICKLE_IMPORTS"

EPILOG = """\
It runs `dg dev -w workspace.yaml` in the data dir's Dagster instance folder, with
DAGSTER_HOME and LVM_DATA_DIR set for the processes it starts, so it shows the runs of
`lvm run` / `lvm materialize`, and whatever it materializes lands in the same data dir.
The daemon it starts runs the weekly retrain schedule and the automation once they are
switched on (Automation tab; docs/deploy.md).
Ctrl-C stops it.
"""


def dagster_dev_command(host: str, port: int) -> list[str]:
    """``dg dev`` for this project: the ``dg`` installed beside this interpreter (so the code
    server runs in this environment), on the repository's workspace.yaml when it is there (a
    checkout), on the definitions module otherwise (an installed wheel)."""
    dg = Path(sys.executable).with_name("dg")
    if not dg.exists():
        raise CliError(f"{dg} is missing: the UI needs dagster-dg-cli",
                       hint="`pip install -e .` (it is a dependency of lvm-pipeline)")
    from lvm_pipeline.cli.runner import PROJECT_ROOT

    workspace = PROJECT_ROOT / "workspace.yaml"
    target = (["-w", str(workspace)] if workspace.exists()
              else ["-m", "lvm_pipeline.definitions"])
    return [str(dg), "dev", *target, "-h", host, "-p", str(port)]


def _ensure_port_free(host: str, port: int) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        try:
            probe.bind((host, port))
        except OSError as err:
            if err.errno == errno.EADDRINUSE:
                raise CliError(f"port {port} on {host} is already in use (another `lvm ui`?)",
                               hint=f"`lvm ui --port {port + 1}`") from None
            raise CliError(f"cannot listen on {host}:{port}: {err.strerror}") from None


def cmd_ui(args: argparse.Namespace) -> int:
    from lvm_pipeline.cli.runner import open_instance

    data_dir = resolve_data_dir(args.data_dir)
    home = prepare(data_dir)
    open_instance(home).dispose()  # the instance's dagster.yaml and tables, before the daemons
    _ensure_port_free(args.host, args.port)
    command = dagster_dev_command(args.host, args.port)
    print(f"lvm ui: http://{args.host}:{args.port}/asset-groups  (data dir {data_dir}, "
          f"Dagster instance {home}); Ctrl-C stops it", flush=True)
    if args.allow_pickle_imports:
        print("lvm ui: WARNING: --allow-pickle-imports: a run launched here may unpickle a "
              "reference payload, which executes code from that file as this user",
              file=sys.stderr)
    if not _is_loopback(args.host):
        print(f"lvm ui: WARNING: listening on {args.host}, beyond this machine; the Dagster UI "
              "has no authentication: anyone who reaches the port can launch runs and read the "
              "data dir's paths", file=sys.stderr)
    sys.stderr.flush()
    # A shell that starts `lvm ui &` without job control leaves SIGINT ignored, exec keeps it
    # ignored, and `dg dev` copies SIGINT's handler onto SIGTERM: the server would then
    # ignore both. Restore the defaults so Ctrl-C and `kill` stop it wherever it was started.
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, signal.SIG_DFL)
    # In the instance folder: Dagster warns when the folder it starts in holds a dagster.yaml
    # that is not DAGSTER_HOME's, which the repository root does.
    os.chdir(home)
    # exec: the webserver gets this process's pid and signals, so Ctrl-C or a SIGTERM to the
    # process group stops all of it (webserver, daemon, code server) and nothing is orphaned.
    env = {**os.environ, "DAGSTER_HOME": str(home), "LVM_DATA_DIR": str(data_dir)}
    env.pop(PICKLE_IMPORTS_ENV, None)  # only this command's own flag allows them
    if args.allow_pickle_imports:
        env[PICKLE_IMPORTS_ENV] = "allowed"
    os.execve(command[0], command, env)
    return 0  # not reached


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:  # a name
        return host == "localhost"


def register(sub: argparse._SubParsersAction) -> None:
    ui = add_command(sub, "ui", "Start the Dagster UI on this data dir and print its URL.",
                     description="Start the Dagster UI (webserver and daemon) on 127.0.0.1 for "
                                 "this data dir's instance.",
                     epilog=EPILOG)
    ui.add_argument("--host", default="127.0.0.1",
                    help="address to listen on (default 127.0.0.1: this machine only)")
    ui.add_argument("--port", type=int, default=3000, help="port (default 3000)")
    ui.add_argument("--allow-pickle-imports", action="store_true",
                    help="let runs launched here unpickle a reference payload (payload config "
                         "import_npy + allow_pickle); unpickling executes code from the file, "
                         "so without this flag the UI refuses it (`lvm import-payload "
                         "--allow-pickle` needs no server)")
    ui.set_defaults(func=cmd_ui)
