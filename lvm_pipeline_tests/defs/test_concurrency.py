"""Several runs at once on one SQLite instance: they all succeed ("database is locked" would
fail a run), and the instance's `training` pool keeps two trainings from running together."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import dagster as dg
import pytest

from lvm_pipeline.cli.runner import INSTANCE_YAML

pytestmark = pytest.mark.slow


def _home(tmp_path: Path) -> Path:
    """A DAGSTER_HOME with the repository's instance configuration, as `lvm` prepares it."""
    home = tmp_path / "dagster_home"
    home.mkdir()
    (home / "dagster.yaml").write_bytes(INSTANCE_YAML.read_bytes())
    return home


def _start(args: list[str], home: Path, log: Path) -> subprocess.Popen:
    env = {**os.environ, "DAGSTER_HOME": str(home)}
    env.pop("LVM_DATA_DIR", None)
    with open(log, "wb") as out:
        return subprocess.Popen([sys.executable, *args], env=env, stdout=out,
                                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                cwd=log.parent)


def test_two_lvm_runs_at_once_on_one_sqlite_instance(tmp_path):
    home = _home(tmp_path)
    processes = [
        _start(["-m", "lvm_pipeline.cli", "materialize", "corpus", "--max-chunks", str(n),
                "--data-dir", str(tmp_path / f"data{i}")], home, tmp_path / f"run{i}.log")
        for i, n in enumerate((40, 60))]
    codes = [p.wait(timeout=300) for p in processes]
    logs = [(tmp_path / f"run{i}.log").read_text() for i in range(2)]
    assert codes == [0, 0], "\n----\n".join(logs)
    assert not any("database is locked" in log for log in logs)
    with dg.DagsterInstance.from_config(str(home)) as instance:
        runs = instance.get_runs()
        assert len(runs) == 2
        assert all(run.status == dg.DagsterRunStatus.SUCCESS for run in runs)
        assert len(instance.fetch_materializations(dg.AssetKey("corpus"), limit=5).records) == 2


# A training stand-in: an asset in the `training` pool that records when it ran. The real model
# assets declare the same pool; this one costs two seconds instead of minutes.
POOL_RUN = textwrap.dedent("""
    import json, os, sys, time
    from pathlib import Path
    import dagster as dg
    from lvm_pipeline.cli.runner import open_instance

    @dg.asset(pool="training")
    def fake_training() -> None:
        start = time.time()
        time.sleep(2.0)
        with open(sys.argv[1], "w") as out:
            json.dump([start, time.time()], out)

    with open_instance(Path(os.environ["DAGSTER_HOME"])) as instance:  # as `lvm` opens it
        result = dg.materialize([fake_training], instance=instance)
    sys.exit(0 if result.success else 1)
""")


def test_training_pool_runs_one_training_at_a_time_across_runs(tmp_path):
    home = _home(tmp_path)
    script = tmp_path / "pool_run.py"
    script.write_text(POOL_RUN)
    processes = [_start([str(script), str(tmp_path / f"span{i}.json")], home,
                        tmp_path / f"pool{i}.log") for i in range(2)]
    codes = [p.wait(timeout=180) for p in processes]
    assert codes == [0, 0], "\n----\n".join((tmp_path / f"pool{i}.log").read_text()
                                             for i in range(2))
    (start_a, end_a), (start_b, end_b) = sorted(
        json.loads((tmp_path / f"span{i}.json").read_text()) for i in range(2))
    assert start_b >= end_a, (f"the two trainings overlapped ({start_a:.2f}-{end_a:.2f} and "
                              f"{start_b:.2f}-{end_b:.2f}) despite the pool limit of 1")
