"""Shared fixtures: seeded synthetic payloads for unit tests, one real small pipeline run."""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

# Without a GPU, Triton kernels run in Triton's CPU interpreter (the triton scan's parity test).
# @triton.jit reads this when triton and our kernels are first imported, so it is set first.
if os.environ.get("TRITON_INTERPRET") is None and not os.path.exists("/dev/nvidia0"):
    os.environ["TRITON_INTERPRET"] = "1"

# Under pytest-xdist (`-n auto`: one worker per core) each worker's torch and FAISS, and the
# processes its tests start (they inherit this), take their share of the cores instead of
# every core each: on two cores, two workers of two threads each ran slower than one thread
# each. Read by the OpenMP runtime when torch and FAISS are first imported, so set first.
if os.environ.get("PYTEST_XDIST_WORKER") and os.environ.get("OMP_NUM_THREADS") is None:
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    os.environ["OMP_NUM_THREADS"] = str(max(1, (cores or 1) // workers))

import dagster as dg
import numpy as np
import pandas as pd
import pytest

from lvm_pipeline.cli.run_config import CorpusParams, TrainParams, run_config
from lvm_pipeline.cli.runner import definitions, execute, open_instance
from lvm_pipeline.corpus.chunking import text_sha256
from lvm_pipeline.defs.resources import PromotionResource, TrackingResource
from lvm_pipeline.payload.payload import CHUNKS, VECTORS, Payload, load_payload
from lvm_pipeline.runtime.tracking import STORE_DIR
from lvm_pipeline.store import kinds
from lvm_pipeline.store.artifacts import ArtifactStore, sha256_file

# The small default run of the end-to-end tests: a few hundred real chunks, short training.
SMALL_CORPUS = {"max_chunks": 450}
SMALL_TRAINING = {"epochs": 2, "batch_size": 32}
# The small run's eval set (27 queries from 3 articles) resolves MRR@10 to about ±0.15, which
# the promotion gate's default resolution (0.05) refuses to decide on: the gate's rules are
# tested on such runs with a resolution they meet, its refusal with the default.
SMALL_RUN_PROMOTION = PromotionResource(resolution=0.5)


def synthetic_vectors(chunks_per_article: list[int], dim: int, seed: int,
                      adjacent: float = 0.5) -> np.ndarray:
    """Unit vectors where consecutive chunks of an article share a drifting topic direction
    (adjacent cosine ≈ ``adjacent``), like a real corpus; not plain noise."""
    rng = np.random.default_rng(seed)
    out = []
    for n in chunks_per_article:
        topic = rng.standard_normal(dim)
        for _ in range(n):
            topic = np.sqrt(adjacent) * topic + np.sqrt(1 - adjacent) * rng.standard_normal(dim)
            out.append(topic + 0.3 * rng.standard_normal(dim))
    vectors = np.asarray(out, dtype=np.float64)
    return (vectors / np.linalg.norm(vectors, axis=1, keepdims=True)).astype(np.float32)


def synthetic_table(chunks_per_article: list[int]) -> pd.DataFrame:
    rows = []
    for a, n in enumerate(chunks_per_article):
        for c in range(n):
            text = f"article {a} chunk {c} says something about topic {a} part {c}."
            rows.append((a, f"art-{a}", f"Article {a}", c, text))
    table = pd.DataFrame(rows, columns=["article_index", "article_id", "title", "chunk_index",
                                        "text"])
    table.insert(0, "row", np.arange(len(table)))
    table["article_index"] = table["article_index"].astype(np.int32)
    table["chunk_index"] = table["chunk_index"].astype(np.int32)
    table["text_sha256"] = [text_sha256(t) for t in table["text"]]
    return table


def publish_synthetic_payload(store: ArtifactStore, chunks_per_article: list[int], dim: int = 32,
                              seed: int = 0, vectors: np.ndarray | None = None) -> Payload:
    """Publish a payload build without an embedder (unit tests of everything downstream)."""
    table = synthetic_table(chunks_per_article)
    if vectors is None:
        vectors = synthetic_vectors(chunks_per_article, dim, seed)
    with store.stage(kinds.PAYLOAD) as staged:
        np.save(staged / VECTORS, vectors)
        table.to_parquet(staged / CHUNKS, index=False)
        build = store.publish(kinds.PAYLOAD, staged, {
            "embedder": {"id": "synthetic", "dim": dim}, "dim": int(vectors.shape[1]),
            "norm": "l2", "metric": "ip", "n_rows": len(table),
            "n_articles": len(chunks_per_article)})
    store.set_current(build)
    return load_payload(build)


class LookupEncoder:
    """The embedder that produced a synthetic payload: each text maps to its stored vector,
    optionally transformed (a "same name, other encoder")."""

    def __init__(self, payload: Payload, transform=None, dim=None, ident="synthetic"):
        self.lookup = dict(zip(payload.chunks["text"], np.asarray(payload.vectors), strict=True))
        self.transform = transform or (lambda v: v)
        self.dim = dim or payload.dim
        self.ident = ident

    def encode(self, texts):
        return self.transform(np.stack([self.lookup[t] for t in texts]))

    def identity(self):
        return {"id": self.ident, "weights_sha256": "w" * 64, "config_sha256": "c" * 64}


# What `lvm` and the definitions read from the environment (a deployment's settings): a test
# runs against its own data dir and instance whatever the shell that started pytest has set.
DEPLOYMENT_ENV = ("DAGSTER_HOME", "LVM_DATA_DIR", "LVM_ARTIFACT_MIRROR", "LVM_TRACKING",
                  "MLFLOW_TRACKING_URI", "LVM_EXECUTOR", "LVM_RETRAIN_SCHEDULE",
                  "LVM_RETRAIN_CRON", "LVM_RETRAIN_TZ")


@pytest.fixture(autouse=True)
def no_deployment_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in DEPLOYMENT_ENV:
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def store(tmp_path: Path) -> ArtifactStore:
    return ArtifactStore(tmp_path / "data")


@pytest.fixture
def synthetic_payload(store: ArtifactStore) -> Payload:
    """40 articles of 4-20 chunks, 32-d."""
    lengths = list(np.random.default_rng(1).integers(4, 21, size=40))
    return publish_synthetic_payload(store, [int(n) for n in lengths])


def instance_at(data_dir: Path) -> dg.DagsterInstance:
    """The instance under ``data_dir/dagster_home``, opened as `lvm` opens it (the repository's
    dagster.yaml): it travels with a copy of the data dir, so a later run resolves the inputs
    it does not build from the materializations recorded there."""
    return open_instance(data_dir / "dagster_home")


def record_build(instance: dg.DagsterInstance, asset: str, build) -> None:
    """Record ``build`` as a materialization of ``asset`` in ``instance``, as the IO manager
    finds it (what a run of that asset would have recorded), for tests that publish a build
    without running its asset."""
    instance.report_runless_asset_event(dg.AssetMaterialization(
        asset, metadata={"build_id": build.build_id, "kind": build.kind}))


def small_config(corpus: dict | None = None, training: dict | None = None, ops: dict | None = None,
                 only=None) -> dg.RunConfig:
    """The small default run's config (``corpus`` and ``training`` replace its settings; ``ops``
    maps other assets to their config objects), for the assets in ``only``."""
    config = run_config(corpus=CorpusParams(**(SMALL_CORPUS if corpus is None else corpus)),
                        training=TrainParams(**(SMALL_TRAINING if training is None else training)),
                        only=only)
    return dg.RunConfig(ops={**config.ops, **{k: v for k, v in (ops or {}).items()
                                              if only is None or k in only}})


def materialize_all(data_dir: Path, selection=None, corpus=None, training=None,
                    instance: dg.DagsterInstance | None = None, resources: dict | None = None,
                    ops: dict | None = None) -> dg.ExecuteInProcessResult:
    """Run every asset and check (or the asset names / ``dg.AssetSelection`` in ``selection``)
    against ``data_dir`` through `lvm`'s runner, recorded in ``instance`` (default:
    :func:`instance_at` ``data_dir``), with MLflow tracking off (a new tracking store costs
    seconds, in every data dir a test materializes into) and the gate's resolution the small
    run meets (:data:`SMALL_RUN_PROMOTION`), unless ``resources`` replace them."""
    if selection is not None and not isinstance(selection, dg.AssetSelection):
        selection = dg.AssetSelection.assets(*selection)
    names = None
    if selection is not None:  # Dagster rejects config for ops outside the selection
        names = {k.to_user_string() for k in selection.resolve(definitions().resolve_asset_graph())}
    with contextlib.nullcontext(instance) if instance else instance_at(data_dir) as active:
        return execute(data_dir, active, selection=selection,
                       run_config=small_config(corpus, training, ops, names),
                       resources={"tracking": TrackingResource(enabled=False),
                                  "promotion": SMALL_RUN_PROMOTION,
                                  **(resources or {})})


def metadata_values(materialization: dg.AssetMaterialization) -> dict:
    """A materialization's metadata as plain values (``MetadataValue.value``)."""
    return {k: v.value for k, v in materialization.metadata.items()}


def materialized_metadata(result: dg.ExecuteInProcessResult) -> dict[str, dict]:
    """Each asset the run materialized → its metadata values."""
    return {e.asset_key.to_user_string(): metadata_values(e.materialization)
            for e in result.get_asset_materialization_events()}


def materialized(result: dg.ExecuteInProcessResult) -> set[str]:
    """Names of the assets the run materialized."""
    return {e.asset_key.to_user_string() for e in result.get_asset_materialization_events()}


def check_evaluations(result: dg.ExecuteInProcessResult) -> dict[str, dg.AssetCheckEvaluation]:
    """Each evaluated check by name, and by ``name@asset`` (a multi-asset check has one name)."""
    out = {}
    for event in result.all_events:
        if event.event_type_value == "ASSET_CHECK_EVALUATION":
            ev = event.event_specific_data
            out[ev.check_name] = out[f"{ev.check_name}@{ev.asset_key.to_user_string()}"] = ev
    return out


def step_errors(result: dg.ExecuteInProcessResult) -> dict[str, str]:
    """Each failed step's error text (with its causes) by step key."""
    return {e.step_key: e.event_specific_data.error.to_string() for e in result.all_events
            if e.event_type_value == "STEP_FAILURE"}


def assert_untouched(root: Path, before: dict[str, tuple[str, int]]) -> None:
    """Every artifact file snapshotted in ``before`` is still there, unchanged and unrewritten
    (new build folders may have appeared beside them)."""
    after = snapshot_files(root)
    assert {k: after.get(k) for k in before} == before


def shared_tmp(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The folder every process of this test session can see: the session's base temp dir,
    or with pytest-xdist the controller's one above each worker's (``popen-gw0``, …)."""
    base = tmp_path_factory.getbasetemp()
    return base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base


@contextlib.contextmanager
def session_lock(folder: Path, name: str) -> Iterator[None]:
    """Held while one process of the session builds what ``name`` names in ``folder``; the
    others wait, then find it built."""
    with open(folder / f"{name}.lock", "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        yield


def recorded_result(data_dir: Path, run_id: str) -> dg.ExecuteInProcessResult:
    """The result of run ``run_id`` as the instance under ``data_dir`` recorded it: the run
    and the Dagster events it logged, in order; the same events ``execute_in_process``
    returned, less the *planned* ones the instance logs when it creates the run."""
    planned = (dg.DagsterEventType.ASSET_MATERIALIZATION_PLANNED,
               dg.DagsterEventType.ASSET_CHECK_EVALUATION_PLANNED)
    with instance_at(data_dir) as instance:
        run = instance.get_run_by_id(run_id)
        events = [entry.dagster_event for entry in instance.all_logs(run_id)
                  if entry.dagster_event is not None
                  and entry.dagster_event.event_type not in planned]
    return dg.ExecuteInProcessResult(events, run, None,
                                     definitions().resolve_implicit_global_asset_job_def())


@pytest.fixture(scope="session")
def small_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dg.ExecuteInProcessResult]:
    """The whole graph materialized once on the small default (real sample, real embedder),
    tracked (runtime/test_tracking.py reads its runs back).

    Built once per test session, whatever the number of pytest-xdist workers: the first
    worker to need it builds it under a lock in the folder they share, and each worker takes
    its own copy of the data dir and reads the run's result back from the copy's instance."""
    shared = shared_tmp(tmp_path_factory)
    built = shared / "small_run"
    with session_lock(shared, "small_run"):
        if not (built / "run_id").exists():
            shutil.rmtree(built, ignore_errors=True)  # what a build that failed left
            result = materialize_all(built / "data", resources={"tracking": TrackingResource()})
            assert result.success, "the small default run failed"
            (built / "run_id").write_text(result.run_id)
    data_dir = tmp_path_factory.mktemp("small_run") / "data"
    shutil.copytree(built / "data", data_dir)
    return data_dir, recorded_result(data_dir, (built / "run_id").read_text())


@pytest.fixture
def small_run_copy(small_run, tmp_path: Path) -> Path:
    """A private copy of the small run's data dir, for tests that add or break artifacts."""
    data_dir = tmp_path / "data"
    shutil.copytree(small_run[0], data_dir)
    return data_dir


def snapshot_files(root: Path) -> dict[str, tuple[str, int]]:
    """sha256 and mtime of every artifact file under ``root`` (proves nothing was rewritten);
    the Dagster instance and the MLflow store are records, not artifacts."""
    return {p.relative_to(root).as_posix(): (sha256_file(p), p.stat().st_mtime_ns)
            for p in sorted(root.rglob("*"))
            if p.is_file() and "dagster_home" not in p.parts and ".work" not in p.parts
            and STORE_DIR not in p.parts
            and p.name != "CURRENT"}


def reference_payload_dict(payload: Payload, rows=None) -> dict:
    """(Some rows of) one of our payloads in the reference layout {id: (text, meta, vector)}."""
    table = payload.chunks
    rows = range(len(table)) if rows is None else rows
    return {f"cpe-{r}": (table.text[r], {"article_index": int(table.article_index[r]),
                                         "chunk_index": int(table.chunk_index[r]),
                                         "article_id": table.article_id[r],
                                         "cpe_id": f"cpe-{r}"},
                         np.asarray(payload.vectors[r]))
            for r in rows}


def save_pickled(path: Path, obj) -> Path:
    """``np.save`` of a Python object, the way the reference saved its payload."""
    np.save(path, np.array(obj, dtype=object), allow_pickle=True)
    return path
