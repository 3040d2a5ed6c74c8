"""The Dagster UI as a user meets it: `lvm ui` serves the project on loopback, a run launched
through its GraphQL API materializes the whole graph, and the asset graph renders in Chromium.

One webserver and one run serve every test here (module-scoped fixtures), which keeps the
module near a minute and a half on two cores. The webserver runs in its own process group with
default signal handlers and is stopped with SIGTERM to the group: `dg dev` started
without job control ignores SIGTERM, and killing only the parent leaves its children serving.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import urllib.parse
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from lvm_pipeline.models import VARIANTS
from lvm_pipeline_tests.conftest import SMALL_CORPUS, SMALL_TRAINING, small_config
from lvm_pipeline_tests.webserver import Webserver, free_port, launch, serving, wait_for_run

pytestmark = pytest.mark.slow

ALL_ASSETS = ["corpus", "payload", "aligned_training_sequences", "aligned_eval", *VARIANTS,
              "faiss_index", "retrieval_report"]
CHROMIUM, CHROMEDRIVER = shutil.which("chromium"), shutil.which("chromedriver")


@pytest.fixture(scope="module")
def webserver(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Webserver, str, Path]]:
    """`lvm ui` on a free loopback port over an empty data dir; yields (server, location name,
    data dir) and stops the whole process group afterwards."""
    root = tmp_path_factory.mktemp("ui")
    data_dir, port = root / "data", free_port()
    log = root / "lvm_ui.log"
    env = {**os.environ, "DAGSTER_HOME": str(root / "dagster_home")}
    command = [sys.executable, "-m", "lvm_pipeline.cli", "ui", "--data-dir", str(data_dir),
               "--port", str(port)]
    with serving(command, env, log, port) as (server, location):
        text = log.read_text()
        assert f"lvm ui: http://127.0.0.1:{port}/asset-groups" in text
        # `dg dev`, not the superseded `dagster dev`, and no dagster.yaml in the working folder
        # that the instance would ignore.
        assert "superseded" not in text and "will not be used" not in text, text
        yield server, location, data_dir


@pytest.fixture(scope="module")
def ui_run(webserver) -> tuple[Webserver, str]:
    """The whole graph (small default) launched through GraphQL and run to SUCCESS."""
    server, location, data_dir = webserver
    # Smaller than the session's small run (embedding dominates on two cores), still enough
    # articles for train, val and eval windows.
    config = small_config({**SMALL_CORPUS, "max_chunks": 300}, {**SMALL_TRAINING, "epochs": 1})
    # One process for the run instead of one per step: the same graph and checks, without
    # thirteen interpreter start-ups (torch imports) on a two-core CI machine.
    config = {**config.to_config_dict(), "execution": {"config": {"in_process": {}}}}
    run_id = launch(server, location, ALL_ASSETS, config)
    status = wait_for_run(server, run_id, timeout_s=240)
    assert status == "SUCCESS", f"run {run_id} ended {status}:\n{server.tail()}"
    assert (data_dir / "report" / "CURRENT").exists(), "the run wrote no report to the data dir"
    return server, run_id


def _asset_node(server: Webserver, key: str) -> dict[str, Any]:
    query = """
    query Node($key: AssetKeyInput!) { assetNodeOrError(assetKey: $key) { ... on AssetNode {
      dependencyKeys { path }
      assetMaterializations(limit: 1) { runId metadataEntries { label
        ... on TextMetadataEntry { text } ... on JsonMetadataEntry { jsonString } } }
      assetChecksOrError { ... on AssetChecks { checks { name blocking
        executionForLatestMaterialization { runId status
          evaluation { success description metadataEntries { label
            ... on FloatMetadataEntry { floatValue } } } } } } }
    } } }"""
    return server.graphql(query, key={"path": [key]})["assetNodeOrError"]


def test_graphql_run_shows_lineage_hashes_and_blocking_checks(ui_run):
    server, run_id = ui_run
    report = _asset_node(server, "retrieval_report")
    # The report reads what it scores (the payload through the index), nothing else.
    assert {k["path"][0] for k in report["dependencyKeys"]} == {
        "aligned_training_sequences", "aligned_eval", "faiss_index", *VARIANTS}

    payload = _asset_node(server, "payload")
    [materialization] = payload["assetMaterializations"]
    assert materialization["runId"] == run_id
    meta = {e["label"]: e.get("text") or e.get("jsonString")
            for e in materialization["metadataEntries"]}
    assert len(json.loads(meta["files"])["vectors.npy"]["sha256"]) == 64
    assert meta["payload_build_id"] == meta["build_id"]

    checks = _asset_node(server, "aligned_training_sequences")["assetChecksOrError"]["checks"]
    [check] = [c for c in checks if c["name"] == "check_training_sequences_aligned"]
    assert check["blocking"]
    execution = check["executionForLatestMaterialization"]
    assert execution["runId"] == run_id and execution["status"] == "SUCCEEDED"
    assert execution["evaluation"]["success"] is True
    figures = {e["label"]: e.get("floatValue") for e in execution["evaluation"]["metadataEntries"]}
    assert figures["min_cosine_to_payload"] >= figures["threshold"] == pytest.approx(0.99)


def _job_runs(server: Webserver, location: str, job: str) -> list[str]:
    """The run ids the UI lists on ``job``'s page (it filters by the code location's label)."""
    query = """
    query Runs($selector: PipelineSelector!) { pipelineOrError(params: $selector) {
      ... on Pipeline { runs(limit: 20) { runId } } } }"""
    found = server.graphql(query, selector={"pipelineName": job, "repositoryName": "__repository__",
                                            "repositoryLocationName": location})
    return [r["runId"] for r in found["pipelineOrError"]["runs"]]


def test_lvm_runs_show_on_their_jobs_page_like_the_uis_own(ui_run, webserver, capsys,
                                                           monkeypatch):
    """`lvm materialize` runs in its own process, not through the webserver; its run carries the
    code location's label, so the job's page (and the Overview timeline) list it."""
    from lvm_pipeline.cli import EXIT_OK, main

    server, location, data_dir = webserver
    monkeypatch.setenv("DAGSTER_HOME", str(data_dir.parent / "dagster_home"))  # the UI's
    assert main(["materialize", "corpus", "--max-chunks", "20",
                 "--data-dir", str(data_dir)]) == EXIT_OK
    run_id = capsys.readouterr().err.split("(run ")[-1].split(")")[0]
    assert run_id in _job_runs(server, location, "__ASSET_JOB")


@pytest.mark.skipif(not (CHROMIUM and CHROMEDRIVER),
                    reason="Chromium not installed (apt-get install chromium chromium-driver; "
                           ".ci/run does this)")
def test_asset_graph_renders_in_chromium(ui_run, tmp_path):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.support.ui import WebDriverWait

    server, _ = ui_run
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update",
                 # Tall enough for the expanded graph (five models stacked) at the UI's zoom.
                 "--disable-sync", "--disable-dev-shm-usage", "--window-size=1800,2400"):
        options.add_argument(flag)
    # The system chromedriver, named explicitly, so Selenium Manager never downloads one.
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    screenshot = tmp_path / "asset_graph.png"
    try:
        # The lineage graph starts with its four groups collapsed to boxes; `expanded` (the URL
        # state the UI's "Expand all groups" sets) opens them so every asset node renders.
        groups = ",".join(f"global@global:{g}" for g in ("data", "sequences", "models",
                                                           "evaluation"))
        driver.get(f"{server.url}/asset-groups?{urllib.parse.urlencode({'expanded': groups})}")
        try:
            WebDriverWait(driver, 60, poll_frequency=1).until(
                lambda d: all(name in d.find_element("tag name", "body").text
                              for name in VARIANTS))
        finally:
            driver.save_screenshot(str(screenshot))
        text = driver.find_element("tag name", "body").text
    finally:
        driver.quit()
    print(f"screenshot: {screenshot}")
    assert screenshot.stat().st_size > 10_000
    for name in (*VARIANTS, "payload", "retrieval_report"):
        assert name in text, f"{name} is not on the asset graph page (see {screenshot})"
