"""The Dagster UI as a user meets it: `lvm ui` serves the project on loopback, a run launched
through its GraphQL API materializes the whole graph, and headless Chromium shows the asset
graph, the report page opening on its results table, a checkpoint's page, and a promotion page
on which a person reports a bare materialization event (the gate and `lvm models --promoted`
carry on, naming the event they skipped).

One webserver, one run and one Chromium serve every test here (module-scoped fixtures), which
keeps the module to one run's time plus seconds per page. The webserver runs in its own process
group with default signal handlers and is stopped with SIGTERM to the group: `dg dev` started
without job control ignores SIGTERM, and killing only the parent leaves its children serving.

Screenshots: each page test saves a PNG of what it saw into its tmp dir (printed); when
``LVM_UI_SCREENSHOTS`` names a folder they are copied there too, to look at after a run:
``LVM_UI_SCREENSHOTS=/tmp/ui-shots python -m pytest lvm_pipeline_tests/defs/test_ui.py``.
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
from lvm_pipeline_tests.conftest import (
    SMALL_CORPUS,
    SMALL_RUN_PROMOTION,
    SMALL_TRAINING,
    small_config,
)
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
    config = {**config.to_config_dict(), "execution": {"config": {"in_process": {}}},
              # The gate decides on this small eval set, as in every small test run.
              "resources": {"promotion": {"config": {
                  "resolution": SMALL_RUN_PROMOTION.resolution}}}}
    run_id = launch(server, location, ALL_ASSETS, config)
    # A guard against a hung run, not a speed limit: about 80 s on two idle cores, over 240 s
    # on two cores shared with other test runs.
    status = wait_for_run(server, run_id, timeout_s=480)
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


# --------------------------------------------------------------------------- in Chromium

needs_chromium = pytest.mark.skipif(
    not (CHROMIUM and CHROMEDRIVER),
    reason="Chromium not installed (apt-get install chromium chromium-driver; .ci/run does this)")
# A page is shot at this width, starting this tall, then grown to its content (the UI scrolls
# inside its own panes, so only a window that tall shows a whole page in one PNG), up to a cap.
SHOT_WIDTH, SHOT_HEIGHT, SHOT_MAX_HEIGHT = 1400, 2400, 8000
# Where the results table must start to be seen without scrolling on a laptop screen.
FIRST_SCREEN_PX = 900
OVERFLOW_PX = """return Math.max(0, ...Array.from(document.querySelectorAll('*'), e =>
    ['auto', 'scroll'].includes(getComputedStyle(e).overflowY)
        ? e.scrollHeight - e.clientHeight : 0));"""
# Whether a person sees the element: the topmost element at its centre is it or inside it
# (not clipped by a scrolling pane, not under a dialog).
ON_SCREEN = """const r = arguments[0].getBoundingClientRect();
    const top = document.elementFromPoint(r.left + r.width / 2, r.top + r.height / 2);
    return top !== null && arguments[0].contains(top);"""


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """One headless Chromium for every page test (it takes seconds to start on two cores)."""
    if not (CHROMIUM and CHROMEDRIVER):
        pytest.skip("Chromium not installed")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--disable-dev-shm-usage",
                 f"--window-size={SHOT_WIDTH},{SHOT_HEIGHT}"):
        options.add_argument(flag)
    # The system chromedriver, named explicitly, so Selenium Manager never downloads one.
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    try:
        yield driver
    finally:
        driver.quit()


def _page_text(driver: Any) -> str:
    return driver.find_element("tag name", "body").text


def _open(driver: Any, url: str, *texts: str, width: int = SHOT_WIDTH) -> None:
    """Load ``url`` in a window ``width`` wide and wait until every one of ``texts`` shows."""
    from selenium.common.exceptions import TimeoutException
    from selenium.webdriver.support.ui import WebDriverWait

    driver.set_window_size(width, SHOT_HEIGHT)
    driver.get(url)
    try:
        WebDriverWait(driver, 60, poll_frequency=0.5).until(
            lambda d: all(text in _page_text(d) for text in texts))
    except TimeoutException:
        raise AssertionError(f"{url} did not show {texts} in 60 s; it shows:\n"
                             f"{_page_text(driver)[:2000]}") from None


def _screenshot(driver: Any, folder: Path, name: str, whole: bool = True) -> Path:
    """Save what the window shows as ``folder/name.png`` (``whole``: the window first grown
    to the page's content) and copy it into ``LVM_UI_SCREENSHOTS`` when that names a folder."""
    if whole:
        size = driver.get_window_size()
        driver.set_window_size(size["width"], min(size["height"] + driver.execute_script(
            OVERFLOW_PX), SHOT_MAX_HEIGHT))
    path = folder / f"{name}.png"
    driver.save_screenshot(str(path))
    print(f"screenshot: {path}")
    if os.environ.get("LVM_UI_SCREENSHOTS"):
        shots = Path(os.environ["LVM_UI_SCREENSHOTS"])
        shots.mkdir(parents=True, exist_ok=True)
        shutil.copy(path, shots / path.name)
    assert path.stat().st_size > 10_000, f"{path} is nearly empty"
    return path


@needs_chromium
def test_asset_graph_renders_in_chromium(ui_run, browser, tmp_path):
    server, _ = ui_run
    # The lineage graph starts with its groups collapsed to boxes; `expanded` (the URL state
    # the UI's "Expand all groups" sets) opens them so every asset node renders. Wider than the
    # other pages: the five models and their five promotion records stand side by side.
    groups = ",".join(f"global@global:{g}" for g in ("data", "sequences", "models",
                                                       "evaluation", "promotion"))
    _open(browser, f"{server.url}/asset-groups?{urllib.parse.urlencode({'expanded': groups})}",
          *VARIANTS, width=1800)
    # The graph pans and zooms instead of scrolling: the window as it is.
    screenshot = _screenshot(browser, tmp_path, "asset_graph", whole=False)
    text = _page_text(browser)
    for name in (*VARIANTS, "payload", "retrieval_report", "promoted_mamba_s"):
        assert name in text, f"{name} is not on the asset graph page (see {screenshot})"


@needs_chromium
def test_report_page_opens_on_its_results_table(ui_run, browser, tmp_path):
    """The report's `results` (a table entry) is drawn inline, first among its metadata: the
    predictors and the column headers are on screen without clicking any "[Show …]" link."""
    from selenium.webdriver.common.by import By

    from lvm_pipeline.report import RESULT_COLUMNS

    server, _ = ui_run
    _open(browser, f"{server.url}/assets/retrieval_report", "copy_last_context", "oracle")
    cell = browser.find_element(By.XPATH, "//td[normalize-space()='copy_last_context']")
    table = cell.find_element(By.XPATH, "./ancestor::table[1]")
    key = table.find_element(By.XPATH, "./ancestor::tr[1]/td[1]").text
    headers = [th.text for th in table.find_elements(By.XPATH, ".//th")]
    predictors = [row.find_element(By.XPATH, "./td[1]").text
                  for row in table.find_elements(By.XPATH, ".//tbody/tr")]
    top = browser.execute_script("return arguments[0].getBoundingClientRect().top", table)
    on_screen = {name: browser.execute_script(ON_SCREEN, element) for name, element in (
        ("predictor", table.find_element(By.XPATH, ".//th[normalize-space()='predictor']")),
        ("MRR@10", table.find_element(By.XPATH, ".//th[normalize-space()='MRR@10']")),
        ("mamba_s", table.find_element(By.XPATH, ".//td[normalize-space()='mamba_s']")))}
    screenshot = _screenshot(browser, tmp_path, "retrieval_report")
    assert key == "results", f"the table with the predictors is {key!r} (see {screenshot})"
    assert headers == [name for name, _, _ in RESULT_COLUMNS]
    assert set(VARIANTS) | {"copy_last_context", "learned_blend"} <= set(predictors)
    assert predictors[-1] == "oracle"
    assert top < FIRST_SCREEN_PX, f"the results table starts {top:.0f} px down (see {screenshot})"
    assert all(on_screen.values()), f"not on screen: {on_screen} (see {screenshot})"
    # Inline, not behind a link: the row holds the table itself.
    assert "[Show" not in table.find_element(By.XPATH, "./ancestor::tr[1]").text


@needs_chromium
def test_checkpoint_page_shows_its_training_and_history(ui_run, browser, tmp_path):
    from selenium.webdriver.common.by import By

    server, _ = ui_run
    _open(browser, f"{server.url}/assets/mamba_s", "kept epoch", "val_mrr_at_10", "build_id")
    history = browser.find_element(By.XPATH, "//th[normalize-space()='val_mrr_at_10']"
                                             "/ancestor::table[1]")
    key = history.find_element(By.XPATH, "./ancestor::tr[1]/td[1]").text
    _screenshot(browser, tmp_path, "mamba_s")
    assert key == "history"
    assert [th.text for th in history.find_elements(By.XPATH, ".//th")][:2] == ["epoch", "kept"]


def _latest_event(server: Webserver, key: str) -> dict[str, Any]:
    query = """
    query Events($key: AssetKeyInput!) { assetNodeOrError(assetKey: $key) { ... on AssetNode {
      assetMaterializations(limit: 1) { description metadataEntries { label
        ... on TextMetadataEntry { text } } } } } }"""
    [event] = server.graphql(query, key={"path": [key]})["assetNodeOrError"][
        "assetMaterializations"]
    return event


def _report_bare_event(driver: Any, description: str) -> None:
    """What a person does on an asset's page: the arrow beside Materialize → *Report
    materialization event* → a description → *Report event*; waits for the UI's confirmation."""
    from selenium.common.exceptions import StaleElementReferenceException
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    def shown(xpath: str) -> Any:
        """The first displayed element at ``xpath`` (React re-renders: a stale one is
        looked up again)."""
        return WebDriverWait(driver, 20, poll_frequency=0.25,
                             ignored_exceptions=(StaleElementReferenceException,)).until(
            lambda d: next((e for e in d.find_elements(By.XPATH, xpath) if e.is_displayed()),
                           False))

    shown("//button[.//span[text()='Materialize']]/ancestor::*"
          "[.//button[.//div[@aria-label='arrow_drop_down']]][1]"
          "//button[.//div[@aria-label='arrow_drop_down']]").click()
    shown("//button[@role='menuitem'][.//*[normalize-space(text())="
          "'Report materialization event']]").click()
    shown("//input[@placeholder='Add a description']").send_keys(description)
    shown("//button[.//span[text()='Report event']]").click()
    shown("//*[normalize-space(text())='Your event has been reported.']")


@needs_chromium
def test_a_bare_event_reported_on_a_promotion_page_leaves_the_gate_and_the_state(
        ui_run, webserver, browser, tmp_path, capsys, monkeypatch):
    """*Report materialization event* on promoted_mamba_s, clicked in Chromium with only a
    description, records an event without a `promotion` entry. The gate (run by `lvm
    materialize`) still decides, on the promotion the run before made, and `lvm models
    --promoted` answers; both name the event they skipped."""
    from lvm_pipeline.cli import EXIT_OK, main

    server, _ = ui_run
    _, _, data_dir = webserver
    gate_event = _latest_event(server, "promoted_mamba_s")
    builds = {v: next(e["text"] for e in _latest_event(server, v)["metadataEntries"]
                      if e["label"] == "build_id") for v in VARIANTS}
    assert {e["label"]: e.get("text") for e in gate_event["metadataEntries"]}["build_id"] == \
        builds["mamba_s"], "the run's gate did not promote mamba_s"

    _open(browser, f"{server.url}/assets/promoted_mamba_s", "build_id", "gate (run")
    _screenshot(browser, tmp_path, "promoted_mamba_s")
    typed = "checked by hand"
    _report_bare_event(browser, typed)
    bare = _latest_event(server, "promoted_mamba_s")
    assert bare["description"] == typed and bare["metadataEntries"] == [], bare
    _open(browser, f"{server.url}/assets/promoted_mamba_s", "No metadata found")
    _screenshot(browser, tmp_path, "promoted_mamba_s_after_a_bare_event")

    monkeypatch.setenv("DAGSTER_HOME", str(data_dir.parent / "dagster_home"))  # the UI's
    capsys.readouterr()
    code = main(["materialize", "retrieval_report", "--data-dir", str(data_dir)])
    err = capsys.readouterr().err
    assert code == EXIT_OK, err
    skipped = "skipped the event on promoted_mamba_s of "
    why = f"description {typed!r}): not a promotion (it has no 'promotion' metadata entry)"
    assert "check_candidates_not_worse: warning: " + skipped in err and why in err, err
    assert "✓ check check_candidates_not_worse on retrieval_report passed" in err, err
    run_id = err.split("succeeded in ")[-1].split("(run ")[1].split(")")[0]
    [gate] = [c for c in _asset_node(server, "retrieval_report")["assetChecksOrError"]["checks"]
              if c["name"] == "check_candidates_not_worse"]
    execution = gate["executionForLatestMaterialization"]
    # Had the bare event hidden the promotion, mamba_s would be promoted again, "first
    # promotion of mamba_s", instead.
    assert execution["runId"] == run_id and execution["evaluation"]["description"] == \
        "every candidate is the promoted build of its variant", execution

    code = main(["models", "--promoted", "--data-dir", str(data_dir)])
    out = capsys.readouterr()
    assert code == EXIT_OK, out.err
    assert "lvm models: warning: " + skipped in out.err and why in out.err, out.err
    promoted = {line.split()[0]: line.split()[1] for line in out.out.splitlines()[1:]}
    assert promoted == {variant: build[:12] for variant, build in builds.items()}, out.out
