"""A Dagster webserver in a subprocess for the UI and race tests: its GraphQL API, waiting for
the code location, launching a run and waiting for its end."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@dataclass
class Webserver:
    url: str
    log: Path

    def graphql(self, query: str, **variables: Any) -> dict[str, Any]:
        body = json.dumps({"query": query, "variables": variables}).encode()
        request = urllib.request.Request(f"{self.url}/graphql", data=body,
                                         headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=30) as response:
            payload = json.loads(response.read())
        assert "errors" not in payload, payload["errors"]
        return payload["data"]

    def tail(self) -> str:
        return self.log.read_text(errors="replace")[-3000:]


def wait_for_location(server: Webserver, process: subprocess.Popen, timeout_s: float) -> str:
    """Wait until the code location has loaded; return its name."""
    query = """{ workspaceOrError { ... on Workspace { locationEntries { name
                 locationOrLoadError { __typename ... on PythonError { message } } } } } }"""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        assert process.poll() is None, f"lvm ui exited {process.returncode}:\n{server.tail()}"
        try:
            entries = server.graphql(query)["workspaceOrError"]["locationEntries"]
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            entries = []
        for entry in entries:
            loaded = entry["locationOrLoadError"]
            if loaded and loaded["__typename"] == "RepositoryLocation":
                return entry["name"]
            assert not loaded or loaded["__typename"] != "PythonError", loaded["message"]
        time.sleep(1)
    raise AssertionError(f"the code location did not load in {timeout_s} s:\n{server.tail()}")


LAUNCH = """
mutation Launch($params: ExecutionParams!) {
  launchRun(executionParams: $params) {
    __typename
    ... on LaunchRunSuccess { run { runId } }
    ... on PythonError { message }
    ... on RunConfigValidationInvalid { errors { message } }
  }
}"""

RUN_STATUS = """
query Run($runId: ID!) { runOrError(runId: $runId) { ... on Run { status } } }"""




def launch(server: Webserver, location: str, assets: list[str], config: dict[str, Any]) -> str:
    """Launch a run of ``assets`` through GraphQL; its run id."""
    params = {
        "selector": {"repositoryLocationName": location, "repositoryName": "__repository__",
                     "pipelineName": "__ASSET_JOB",
                     "assetSelection": [{"path": [key]} for key in assets]},
        "runConfigData": config,
        "mode": "default",
    }
    launched = server.graphql(LAUNCH, params=params)["launchRun"]
    assert launched["__typename"] == "LaunchRunSuccess", launched
    return launched["run"]["runId"]


def wait_for_run(server: Webserver, run_id: str, timeout_s: float) -> str:
    """Poll until the run ends; its final status."""
    deadline, status = time.monotonic() + timeout_s, None
    while time.monotonic() < deadline:
        status = server.graphql(RUN_STATUS, runId=run_id)["runOrError"]["status"]
        if status in ("SUCCESS", "FAILURE", "CANCELED"):
            break
        time.sleep(2)
    return status


@contextmanager
def serving(command: list[str], env: dict[str, str], log: Path, port: int,
            cwd: Path | None = None) -> Iterator[tuple[Webserver, str]]:
    """Run ``command`` (a webserver on ``port``) in its own process group with default signal
    handlers; yield (server, location name) once the location loaded; stop the whole group."""
    with open(log, "wb") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT,
                                   stdin=subprocess.DEVNULL, env=env, cwd=cwd,
                                   start_new_session=True)
    server = Webserver(f"http://127.0.0.1:{port}", log)
    try:
        yield server, wait_for_location(server, process, timeout_s=120)
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
