"""MLflow tracking: runs written to a real local store and read back through MLflow's client;
off means nothing written and MLflow never imported."""

from __future__ import annotations

import json
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
from mlflow import MlflowClient

from lvm_pipeline.cli.run_config import TrainParams, run_config
from lvm_pipeline.cli.runner import execute
from lvm_pipeline.defs.resources import (
    EmbedderResource,
    TrackingResource,
    tracking_from_environment,
)
from lvm_pipeline.models import VARIANTS
from lvm_pipeline.payload.payload import current_payload
from lvm_pipeline.runtime.tracking import (
    STORE_DIR,
    TrackingConfig,
    default_uri,
    start_run,
    tracking_uri,
)
from lvm_pipeline.sequences.windows import SplitConfig, build_windows, native_info, publish_sequences
from lvm_pipeline.store import kinds
from lvm_pipeline.store.artifacts import ArtifactStore
from lvm_pipeline.training.checkpoint import INFO
from lvm_pipeline_tests.conftest import (
    SMALL_TRAINING,
    LookupEncoder,
    materialized_metadata,
    record_build,
)


def runs_of(data_dir: Path, experiment: str = "lvm-pipeline") -> dict[str, object]:
    """Each run of the experiment in the data dir's default store, by run name."""
    client = MlflowClient(tracking_uri=default_uri(data_dir))
    found = client.get_experiment_by_name(experiment)
    assert found is not None, f"no experiment {experiment!r} in {data_dir / STORE_DIR}"
    return {run.info.run_name: run for run in client.search_runs([found.experiment_id])}


@pytest.fixture(scope="module")
def tracked_dir(tmp_path_factory) -> Path:
    """One data dir whose store the unit tests share: creating a store takes seconds."""
    return tmp_path_factory.mktemp("tracked") / "data"


def test_a_run_is_written_to_the_data_dir_store_and_reads_back(tracked_dir, capfd):
    data_dir = tracked_dir
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with start_run(TrackingConfig(), data_dir, "mamba_s", params={
                "train": {"lr": 0.001, "epochs": 3}, "variant": "mamba_s"},
                tags={"lvm.upstream.payload": "p" * 64}) as run:
            for epoch in range(3):
                # An in-epoch report is terminal feedback, not a figure of the epoch.
                run.progress(epoch, 3, windows_done=64, epoch_windows=128, windows_per_s=9.0,
                             epoch_eta_s=7.0)
                run.progress(epoch + 1, 3, train_loss=1.0 / (epoch + 1), val_cos=0.1 * epoch,
                             note="not a number", ok=True)
            (data_dir / "plot.png").write_bytes(b"png")
            run.log_artifact(data_dir / "plot.png", "plots")
    # The first run creates the store; neither that nor the logging talks on the console.
    out, err = capfd.readouterr()
    assert (out, err) == ("", "")
    assert [str(w.message) for w in caught if "mlflow" in w.filename] == []

    client = MlflowClient(tracking_uri=default_uri(data_dir))
    logged = client.get_run(run.run_id)
    assert logged.info.status == "FINISHED" and logged.info.run_name == "mamba_s"
    assert logged.data.params == {"train.lr": "0.001", "train.epochs": "3", "variant": "mamba_s"}
    assert logged.data.tags["lvm.upstream.payload"] == "p" * 64
    history = client.get_metric_history(run.run_id, "train_loss")
    assert [(m.step, m.value) for m in history] == [(0, 1.0), (1, 0.5), (2, 1 / 3)]
    assert set(logged.data.metrics) == {"train_loss", "val_cos"}  # text and bools are not metrics
    # The runs' files live beside the database, under the data dir, not in the working folder.
    assert [a.path for a in client.list_artifacts(run.run_id, "plots")] == ["plots/plot.png"]
    assert list((data_dir / STORE_DIR / "artifacts").rglob("plot.png"))


def test_a_copied_data_dir_logs_into_its_own_store_not_the_originals(tmp_path):
    """A `cp -a` of a data dir: the copy's runs, old and new, keep their files in the copy;
    the original is untouched, and moving it away is not undone by the copy."""
    import shutil

    original, copy = tmp_path / "original", tmp_path / "copy"
    with start_run(TrackingConfig(), original, "first") as run:
        (tmp_path / "a.txt").write_text("a")
        run.log_artifact(tmp_path / "a.txt")
    first = run.run_id
    shutil.copytree(original, copy)
    before = sorted(p.relative_to(original) for p in original.rglob("*"))
    shutil.move(original, tmp_path / "moved")
    with start_run(TrackingConfig(), copy, "second") as run:
        run.log_artifact(tmp_path / "a.txt")
    assert not original.exists()  # nothing recreated the original's folder
    moved = tmp_path / "moved"
    assert sorted(p.relative_to(moved) for p in moved.rglob("*")) == before
    client = MlflowClient(tracking_uri=default_uri(copy))
    artifacts = (copy / STORE_DIR / "artifacts").resolve().as_uri()
    for run_id in (first, run.run_id):
        assert client.get_run(run_id).info.artifact_uri.startswith(artifacts)
        assert [a.path for a in client.list_artifacts(run_id)] == ["a.txt"]


def test_a_failing_block_ends_its_run_failed_and_the_error_propagates(tracked_dir):
    with pytest.raises(ValueError, match="boom"), \
            start_run(TrackingConfig(), tracked_dir, "mamba_h") as run:
        run.log_metrics({"train_loss": 2.0})
        raise ValueError("boom")
    assert runs_of(tracked_dir)["mamba_h"].info.status == "FAILED"


def test_a_tracking_uri_points_runs_elsewhere(tracked_dir, tmp_path):
    other = default_uri(tracked_dir)  # another data dir's store stands in for a server
    assert tracking_uri(TrackingConfig(uri=other), tmp_path / "data") == other
    with start_run(TrackingConfig(uri=other), tmp_path / "data", "retrieval_report") as run:
        run.log_metrics({"mamba_s/mrr_at_10": 0.5})
    assert not (tmp_path / "data").exists()
    assert MlflowClient(tracking_uri=other).get_run(run.run_id).data.metrics == {
        "mamba_s/mrr_at_10": 0.5}


def test_a_deployments_environment_reaches_tracking_through_the_resource(monkeypatch):
    """``MLFLOW_TRACKING_URI`` and ``LVM_TRACKING=off`` are read by the definitions (a Dagster
    ``EnvVar`` for the URI, resolved when a run starts), never by the tracking module."""
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:5000")
    resource = tracking_from_environment().process_config_and_initialize()
    assert resource.config() == TrackingConfig(uri="http://127.0.0.1:5000")
    monkeypatch.setenv("LVM_TRACKING", "off")
    monkeypatch.delenv("MLFLOW_TRACKING_URI")
    assert tracking_from_environment().config() == TrackingConfig(enabled=False)


def test_tracking_off_writes_nothing(tmp_path):
    with start_run(TrackingConfig(enabled=False), tmp_path, "mamba_s", params={"lr": 1}) as run:
        run.progress(1, 1, train_loss=1.0)
        run.set_tags({"lvm.build_id": "b"})
    assert run.run_id is None
    assert list(tmp_path.iterdir()) == []


def test_mlflow_is_imported_only_by_a_tracked_run(tmp_path):
    """Importing MLflow takes seconds: `lvm --help`, the definitions and an untracked run must
    not pay for it."""
    code = ("import sys\nfrom pathlib import Path\n"
            "import lvm_pipeline.runtime.tracking, lvm_pipeline.definitions\n"
            "from lvm_pipeline.cli import build_parser\nbuild_parser()\n"
            "from lvm_pipeline.runtime.tracking import TrackingConfig, start_run\n"
            f"with start_run(TrackingConfig(enabled=False), Path({str(tmp_path)!r}), 'x'): pass\n"
            "assert 'mlflow' not in sys.modules, 'mlflow imported'\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


class _SyntheticEmbedder(EmbedderResource):
    """The encoder that made the synthetic payload, so the asset's canary passes honestly."""

    root: str

    def load(self) -> LookupEncoder:
        return LookupEncoder(current_payload(ArtifactStore(self.root)))


def test_a_training_asset_tracks_its_run_and_names_it_in_its_metadata(synthetic_payload, store):
    """One checkpoint asset on a synthetic payload (seconds; the small run below checks all
    five and the report)."""
    import dagster as dg

    sequences = publish_sequences(store, kinds.TRAIN_SEQUENCES, synthetic_payload,
                                  build_windows(synthetic_payload, SplitConfig()),
                                  native_info(SplitConfig()))
    instance = dg.DagsterInstance.ephemeral()
    record_build(instance, "aligned_training_sequences", sequences)
    result = execute(store.root, instance, selection=dg.AssetSelection.assets("mamba_s"),
                     run_config=run_config(training=TrainParams(epochs=3, batch_size=16)),
                     resources={"embedder": _SyntheticEmbedder(root=str(store.root)),
                                "tracking": TrackingResource()})
    assert result.success
    meta = materialized_metadata(result)["mamba_s"]
    client = MlflowClient(tracking_uri=default_uri(store.root))
    run = client.get_run(meta["mlflow_run_id"])
    assert run.info.run_name == "mamba_s" and run.info.status == "FINISHED"
    assert run.data.params["train.epochs"] == "3" and run.data.params["train.batch_size"] == "16"
    assert run.data.params["model.d_in"] == str(synthetic_payload.dim)
    assert run.data.tags["lvm.build_id"] == meta["build_id"]
    assert run.data.tags["lvm.upstream.payload"] == synthetic_payload.build_id
    assert run.data.tags["lvm.upstream.sequences/train"] == sequences.build_id
    assert run.data.tags["dagster.run_id"] == result.run_id
    for key in ("train_loss", "val_mrr_at_10", "val_cos"):
        history = client.get_metric_history(run.info.run_id, key)
        assert [(m.step, m.value) for m in history] == [
            (epoch["epoch"], pytest.approx(epoch[key]))
            for epoch in trained_history(store.root, "mamba_s", meta["build_id"])], key


def trained_history(data_dir: Path, variant: str, build_id: str) -> list[dict]:
    """The per-epoch history a checkpoint build records (its metadata shows it as a table)."""
    build = ArtifactStore(data_dir).get(kinds.checkpoint(variant), build_id)
    return json.loads(build.file(INFO).read_text())["history"]


def test_the_small_run_tracks_each_training_and_the_report(small_run):
    """Params, per-epoch history, and the build ids the materializations recorded."""
    data_dir, result = small_run
    runs, meta = runs_of(data_dir), materialized_metadata(result)
    payload, sequences = meta["payload"]["build_id"], meta["aligned_training_sequences"]["build_id"]
    client = MlflowClient(tracking_uri=default_uri(data_dir))
    for variant in VARIANTS:
        run = runs[variant]
        assert run.info.status == "FINISHED"
        assert meta[variant]["mlflow_run_id"] == run.info.run_id
        params, tags = run.data.params, run.data.tags
        assert params["variant"] == variant and params["size"] == "tiny"
        assert params["train.epochs"] == str(SMALL_TRAINING["epochs"])
        assert params["model.d_in"] == str(meta["payload"]["dim"])
        assert tags["lvm.build_id"] == meta[variant]["build_id"]
        assert tags["lvm.upstream.payload"] == payload
        assert tags["lvm.upstream.sequences/train"] == sequences
        assert tags["dagster.run_id"] == result.run_id
        for key in ("train_loss", "val_loss", "val_mrr_at_10", "val_cos", "lr"):
            history = client.get_metric_history(run.info.run_id, key)
            assert [m.value for m in history] == pytest.approx(
                [epoch[key] for epoch in trained_history(data_dir, variant,
                                                         meta[variant]["build_id"])]), key
            assert [m.step for m in history] == list(range(SMALL_TRAINING["epochs"]))
        # The metadata shows it to 4 places.
        assert run.data.metrics["best_val_mrr_at_10"] == pytest.approx(
            meta[variant]["best_val_mrr_at_10"], abs=5e-5)

    report = runs["retrieval_report"]
    assert report.data.tags["lvm.build_id"] == meta["retrieval_report"]["build_id"]
    assert report.data.tags[f"lvm.upstream.{kinds.checkpoint(VARIANTS[0])}"] == \
        meta[VARIANTS[0]]["build_id"]
    headline = {k: v for k, v in meta["retrieval_report"].items() if k.endswith("/mrr_at_10")}
    assert headline and all(report.data.metrics[k] == pytest.approx(v)
                            for k, v in headline.items())
    files = {a.path for a in client.list_artifacts(report.info.run_id, "plots")}
    built = ArtifactStore(data_dir).get("report", meta["retrieval_report"]["build_id"])
    assert files == {n for n in built.manifest["files"] if n.startswith("plots/")}


def test_lvm_materialize_no_tracking_trains_without_a_run(small_run_copy, capsys):
    from lvm_pipeline.cli import EXIT_OK, main

    before = {run.info.run_id for run in runs_of(small_run_copy).values()}
    assert main(["materialize", "mamba_s", "--epochs", "1", "--no-tracking",
                 "--data-dir", str(small_run_copy)]) == EXIT_OK
    [line] = capsys.readouterr().out.strip().splitlines()
    assert line.startswith("mamba_s\t")
    assert {run.info.run_id for run in runs_of(small_run_copy).values()} == before
