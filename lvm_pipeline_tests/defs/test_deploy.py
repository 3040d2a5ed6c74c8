"""Deployment configuration: the default instance, Postgres (live, on a throwaway cluster), and
the Kubernetes instance, executor and run config, each loaded and validated by Dagster itself."""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import pytest
import yaml
from dagster._config import process_config
from dagster._core.instance.config import dagster_instance_config

from lvm_pipeline.cli import EXIT_OK, main
from lvm_pipeline.cli.runner import INSTANCE_YAML, PROJECT_ROOT, open_instance
from lvm_pipeline.definitions import defs
from lvm_pipeline.defs.executor import executor_from_env
from lvm_pipeline.store.artifacts import ArtifactStore, sha256_file

DEPLOY = PROJECT_ROOT / "deploy"
PG_ENV = {"DAGSTER_PG_USERNAME": "lvm", "DAGSTER_PG_PASSWORD": "", "DAGSTER_PG_HOST": "127.0.0.1",
          "DAGSTER_PG_DB": "dagster", "DAGSTER_PG_PORT": "5432"}


def _instance_config(path: Path) -> dict:
    config, _ = dagster_instance_config(str(path.parent), config_filename=path.name)
    return dict(config)


def test_default_instance_limits_training_to_one_at_a_time(tmp_path):
    config = _instance_config(INSTANCE_YAML)
    # No storage section: Dagster's default, SQLite in the instance folder (no environment
    # variable needed to open it, and it travels with a copy of the data dir).
    assert "storage" not in config
    with open_instance(tmp_path / "dagster_home"):
        assert any((tmp_path / "dagster_home").rglob("*.db"))
    assert config["concurrency"]["pools"] == {"granularity": "op", "default_limit": 1}
    assert config["nux"] == {"enabled": False} and config["telemetry"] == {"enabled": False}
    with dg.instance_for_test(overrides={"concurrency": config["concurrency"]}) as instance:
        pools = instance.get_concurrency_config().pool_config
        assert pools.default_pool_limit == 1 and pools.pool_granularity.value == "op"


def test_postgres_and_k8s_instances_validate(monkeypatch):
    for key, value in PG_ENV.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("LVM_K8S_NAMESPACE", "lvm")
    monkeypatch.setenv("LVM_IMAGE", "registry.example/lvm-pipeline:1")
    postgres = _instance_config(DEPLOY / "postgres" / "dagster.yaml")
    assert postgres["storage"]["postgres"]["postgres_db"]["hostname"] == {"env": "DAGSTER_PG_HOST"}
    k8s = _instance_config(DEPLOY / "k8s" / "dagster.yaml")
    assert k8s["run_launcher"]["class"] == "K8sRunLauncher"
    from dagster_k8s import K8sRunLauncher

    launcher = process_config(K8sRunLauncher.config_type(), k8s["run_launcher"]["config"])
    assert launcher.success, launcher.errors
    assert launcher.value["job_image"] == "registry.example/lvm-pipeline:1"


def test_k8s_executor_accepts_the_deploy_run_config():
    executor = executor_from_env({"LVM_EXECUTOR": "k8s"})
    k8s_defs = dg.Definitions(assets=defs().assets, asset_checks=defs().asset_checks,
                              jobs=defs().jobs, resources=defs().resources, executor=executor)
    job = k8s_defs.resolve_job_def("full_retrain")
    assert job.executor_def.name == "k8s"
    run_config = yaml.safe_load((DEPLOY / "k8s" / "run_config.yaml").read_text())
    assert dg.validate_run_config(job, run_config)
    with pytest.raises(dg.DagsterInvalidConfigError, match="gpu_count"):
        dg.validate_run_config(job, {"execution": {"config": {"gpu_count": 1}}})


def test_unknown_executor_lists_the_valid_ones():
    with pytest.raises(ValueError, match="valid: default, in_process, multiprocess, k8s"):
        executor_from_env({"LVM_EXECUTOR": "celery"})
    assert executor_from_env({}) is None


# ----------------------------------------------------------------------------- live Postgres

def _postgres_bin() -> Path | None:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb")) or [shutil.which("initdb")]
    return Path(found[-1]).parent if found[-1] else None


@pytest.fixture(scope="module")
def postgres() -> Iterator[dict[str, str]]:
    """A throwaway Postgres cluster on a free loopback port; yields the DAGSTER_PG_* env."""
    bin_dir = _postgres_bin()
    if bin_dir is None:
        pytest.skip("Postgres is not installed (apt-get install postgresql; .ci/run does this)")
    as_user: list[str] = []
    # Outside pytest's tmp dir: that one is private to its owner, and as root the cluster must
    # belong to another user (initdb refuses to run as root).
    root = Path(tempfile.mkdtemp(prefix="lvm-pg-"))
    if os.geteuid() == 0:
        try:
            owner = pwd.getpwnam("postgres")
        except KeyError:
            pytest.skip("running as root and there is no `postgres` user to own the cluster")
        os.chown(root, owner.pw_uid, owner.pw_gid)
        as_user = ["runuser", "-u", "postgres", "--"]
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = str(probe.getsockname()[1])
    data = root / "cluster"

    def pg(tool: str, *args: str) -> subprocess.CompletedProcess:
        return subprocess.run([*as_user, str(bin_dir / tool), *args], capture_output=True,
                              text=True, timeout=60)

    started = False
    try:
        steps = [("initdb", "-D", str(data), "-A", "trust", "-U", "lvm", "--no-sync"),
                 ("pg_ctl", "-D", str(data), "-l", str(root / "server.log"), "-w", "-o",
                  f"-c listen_addresses=127.0.0.1 -p {port} -k {root} -c fsync=off", "start"),
                 ("createdb", "-h", "127.0.0.1", "-p", port, "-U", "lvm", "dagster")]
        for step in steps:
            done = pg(*step)
            if done.returncode != 0:
                pytest.skip(f"Postgres could not be started ({step[0]}: "
                            f"{(done.stderr or done.stdout).strip()[-300:]})")
            started = started or step[0] == "pg_ctl"
        yield {**PG_ENV, "DAGSTER_PG_PORT": port}
    finally:
        if started:
            pg("pg_ctl", "-D", str(data), "-m", "fast", "-w", "stop")
        shutil.rmtree(root, ignore_errors=True)


@pytest.mark.slow
def test_lvm_materializes_against_postgres_and_the_event_log_reads_back(postgres, tmp_path,
                                                                         monkeypatch):
    for key, value in postgres.items():
        monkeypatch.setenv(key, value)
    home, data = tmp_path / "dagster_home", tmp_path / "data"
    home.mkdir()
    shutil.copy(DEPLOY / "postgres" / "dagster.yaml", home / "dagster.yaml")
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    assert main(["materialize", "corpus", "--max-chunks", "40", "--data-dir", str(data)]) == EXIT_OK
    # `lvm` kept the Postgres dagster.yaml it found instead of copying the SQLite default.
    assert "postgres" in (home / "dagster.yaml").read_text()
    assert not list(home.rglob("*.db"))

    with dg.DagsterInstance.from_config(str(home)) as instance:
        assert type(instance.event_log_storage).__name__ == "PostgresEventLogStorage"
        record = instance.fetch_materializations(dg.AssetKey("corpus"), limit=1).records[0]
        assert instance.get_run_by_id(record.run_id).status == dg.DagsterRunStatus.SUCCESS
        events = {e.dagster_event.event_type for e in instance.all_logs(record.run_id)
                  if e.dagster_event}
        assert {dg.DagsterEventType.RUN_START, dg.DagsterEventType.STEP_SUCCESS,
                dg.DagsterEventType.ASSET_MATERIALIZATION, dg.DagsterEventType.RUN_SUCCESS
                } <= events
        meta = record.asset_materialization.metadata
    build = ArtifactStore(data).current("corpus")
    assert meta["build_id"].value == build.build_id
    assert meta["files"].value["chunks.parquet"]["sha256"] == sha256_file(build.path / "chunks.parquet")
