"""Rebuild only what changed: a step whose code, config and inputs made a build before returns
that build (verified), with the same data version, and its checks still run
(lvm_pipeline/defs/reuse.py)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import dagster as dg
import pytest

from lvm_pipeline.cli.run_config import IndexParams
from lvm_pipeline.cli.runner import definitions
from lvm_pipeline.defs.code_versions import UPSTREAM
from lvm_pipeline.defs.metadata import BUILT
from lvm_pipeline.store import ArtifactStore, kinds, recipe_key
from lvm_pipeline.store.artifacts import RECIPES
from lvm_pipeline_tests.conftest import (
    SMALL_TRAINING,
    check_evaluations,
    instance_at,
    materialize_all,
    materialized_metadata,
    publish_synthetic_payload,
)

pytestmark = pytest.mark.slow
# Every asset that computes a recipe: all but the corpus, which reads the outside world.
RECIPE_ASSETS = [asset for asset in UPSTREAM if asset != "corpus"]


def test_the_store_serves_a_recipes_build_only_while_it_verifies(store):
    recipe = {"asset": "payload", "code_version": "0.1.0+x", "config": {}, "inputs": {}}
    assert store.build_for_recipe(kinds.PAYLOAD, recipe_key(recipe)) is None
    built = publish_synthetic_payload(store, [6, 7, 8])
    build = store.get(kinds.PAYLOAD, built.build_id)
    store.remember_recipe(kinds.PAYLOAD, recipe_key(recipe), build.build_id)
    assert store.build_for_recipe(kinds.PAYLOAD, recipe_key(recipe)).build_id == build.build_id
    other = {**recipe, "inputs": {"corpus": "c" * 64}}
    assert store.build_for_recipe(kinds.PAYLOAD, recipe_key(other)) is None
    vectors = build.path / "vectors.npy"
    data = bytearray(vectors.read_bytes())
    data[-1] ^= 0xFF
    vectors.write_bytes(bytes(data))
    assert store.build_for_recipe(kinds.PAYLOAD, recipe_key(recipe)) is None


def _reuse(meta: dict) -> str:
    return meta["build"]


def test_an_unchanged_step_reuses_its_build_and_its_checks_still_run(small_run, small_run_copy):
    first = materialized_metadata(small_run[1])
    again = materialize_all(small_run_copy,
                            selection=["aligned_eval", "faiss_index", "mamba_s"])
    assert again.success
    meta = materialized_metadata(again)
    for asset in ("aligned_eval", "faiss_index", "mamba_s"):
        assert meta[asset]["build_id"] == first[asset]["build_id"], asset
        assert _reuse(meta[asset]) == (f"reused the build of run {small_run[1].run_id} "
                                       "(same code, config and inputs)"), asset
    # The earlier figures come along (the checkpoint's history table, its val MRR@10).
    assert meta["mamba_s"]["best_val_mrr_at_10"] == first["mamba_s"]["best_val_mrr_at_10"]
    versions = {e.asset_key.to_user_string(): e.materialization.tags["dagster/data_version"]
                for e in again.get_asset_materialization_events()}
    assert versions["faiss_index"] == first["faiss_index"]["build_id"]
    checks = check_evaluations(again)
    assert checks["check_index_matches_payload"].passed
    assert checks["check_weights_finite@mamba_s"].passed


def test_rebuild_computes_and_other_config_is_another_recipe(small_run, small_run_copy):
    first = materialized_metadata(small_run[1])
    forced = materialize_all(small_run_copy, selection=["faiss_index"],
                             ops={"faiss_index": IndexParams(rebuild=True)})
    meta = materialized_metadata(forced)["faiss_index"]
    # Computed again; the same bytes are the same build (content-addressed).
    assert _reuse(meta) == BUILT and meta["build_id"] == first["faiss_index"]["build_id"]
    shorter = materialize_all(small_run_copy, selection=["mamba_s"],
                              training={**SMALL_TRAINING, "epochs": 1})
    assert _reuse(materialized_metadata(shorter)["mamba_s"]) == BUILT


def test_a_report_of_another_config_scores_the_baselines_it_trained_before(small_run_copy):
    """The report's two trained baselines are a build of their own: a report that computes
    again for a reason of its own (here another query sample; an edit of its rendering alike)
    loads them instead of training them again, and scores the very same baselines."""
    from lvm_pipeline.cli.run_config import ReportParams
    from lvm_pipeline.report import read_report

    store = ArtifactStore(small_run_copy)
    before = read_report(store.current(kinds.REPORT))
    kept = sorted(p.name for p in (small_run_copy / kinds.TRAINED_BASELINES).iterdir())
    result = materialize_all(small_run_copy, selection=["retrieval_report"],
                             ops={"retrieval_report": ReportParams(sample_queries=20)})
    assert _reuse(materialized_metadata(result)["retrieval_report"]) == BUILT
    after = read_report(store.current(kinds.REPORT))
    assert after["n_queries"] == 20 != before["n_queries"]
    assert after["trained_baselines"] == before["trained_baselines"]
    assert sorted(p.name for p in (small_run_copy / kinds.TRAINED_BASELINES).iterdir()) == kept
    with instance_at(small_run_copy) as instance:
        messages = [entry.user_message for entry in instance.all_logs(result.run_id)]
    assert any(m.startswith("trained baselines: reused baselines") for m in messages), messages


@pytest.mark.parametrize("damage", ["truncated", "one byte flipped"])
def test_a_damaged_build_is_not_reused(small_run, small_run_copy, damage):
    """A build that fails verification is built anew, whether its size changed or not (the
    same content, so the same build id)."""
    store = ArtifactStore(small_run_copy)
    built = materialized_metadata(small_run[1])["faiss_index"]["build_id"]
    target = store.get(kinds.INDEX, built).path / "index.faiss"
    raw = target.read_bytes()
    target.write_bytes(raw[:-8] if damage == "truncated"
                       else raw[:-9] + bytes([raw[-9] ^ 1]) + raw[-8:])
    result = materialize_all(small_run_copy, selection=["faiss_index"])
    assert result.success
    meta = materialized_metadata(result)["faiss_index"]
    assert _reuse(meta) == BUILT and meta["build_id"] == built
    store.get(kinds.INDEX, built).verify()


def test_a_new_payload_reuses_nothing_downstream(small_run_copy):
    rebuilt = materialize_all(small_run_copy, corpus={"max_chunks": 300},
                              selection=["corpus", "payload", "faiss_index"])
    meta = materialized_metadata(rebuilt)
    assert _reuse(meta["payload"]) == BUILT and _reuse(meta["faiss_index"]) == BUILT


def test_every_recipe_names_every_input_its_asset_reads(small_run):
    """A recipe's key covers each input of its asset by build id, so an asset that gains an
    input (a new edge in the graph) has another recipe and computes again, never reusing a
    build made without that input."""
    data_dir, result = small_run
    store, meta = ArtifactStore(data_dir), materialized_metadata(result)
    graph = definitions().resolve_asset_graph()
    for asset in RECIPE_ASSETS:
        build = store.get(meta[asset]["kind"], meta[asset]["build_id"])
        recipe = {k: v for k, v in build.manifest["recipe"].items() if k != "key"}
        read = {k.to_user_string() for k in graph.get(dg.AssetKey(asset)).parent_keys}
        assert sorted(recipe["inputs"].values()) == sorted(meta[u]["build_id"] for u in read), asset
        key = recipe_key(recipe)
        assert key == build.manifest["recipe"]["key"]
        assert store.build_for_recipe(build.kind, key).build_id == build.build_id
        gained = {**recipe, "inputs": {**recipe["inputs"], "new_input": "f" * 64}}
        assert store.build_for_recipe(build.kind, recipe_key(gained)) is None, asset


def test_two_runs_of_one_recipe_at_once_finish_with_one_build(small_run_copy, tmp_path):
    """Two `lvm materialize faiss_index` processes compute the same recipe, neither finding a
    build of it, and both reach the move into place having seen none there
    (lvm_pipeline_tests/race_recipe.py): both finish, and there is one build, named by the
    recipe.

    One build because the computation is deterministic and the build id is the hash of the
    content: the flat index's bytes are a function of the payload. The same holds for every
    CPU step: the payload (fixed-shape encoder passes make a text's vector the same bytes in
    any batch), the training and eval sets (row indices, seeded splits), the checkpoints
    (seeded initialisation, shuffles and negatives; the history holds no timings) and the
    report (no timings in its files, PNGs without metadata). Where a computation is not
    bit-reproducible, e.g. a training on CUDA (bf16 autocast, atomics and kernel choices in
    the backward pass), the two runs publish two builds of one recipe: both are kept, each
    run's materialization names its own, and the recipe names the one published last."""
    from lvm_pipeline.cli.runner import PROJECT_ROOT

    index_dir, barriers = small_run_copy / kinds.INDEX, tmp_path / "barriers"
    shutil.rmtree(index_dir)  # no build and no recipe: both runs must compute
    barriers.mkdir()
    env = {**os.environ, "PYTHONPATH": str(PROJECT_ROOT)}
    runs = [subprocess.Popen([sys.executable, "-m", "lvm_pipeline_tests.race_recipe", role,
                              str(small_run_copy), str(barriers)], env=env, text=True,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE)
            for role in ("A", "B")]
    outputs = [run.communicate(timeout=600) for run in runs]
    assert [run.returncode for run in runs] == [0, 0], [err[-1500:] for _, err in outputs]
    assert all((barriers / f"{role}_found_no_index_in_place").exists() for role in "AB")
    assert all("faiss_index: built index " in err for _, err in outputs)
    builds = {out.split("\t")[1] for out, _ in outputs}
    folders = [p for p in index_dir.iterdir() if p.is_dir() and p.name != RECIPES]
    assert len(builds) == 1 and len(folders) == 1, (builds, folders)
    (build_id,) = {json.loads(p.read_text())["build_id"] for p in (index_dir / RECIPES).iterdir()}
    assert build_id.startswith(builds.pop())
    ArtifactStore(small_run_copy).get(kinds.INDEX, build_id).verify()  # raises if not


def test_lvm_says_per_step_whether_it_reused_or_built(small_run_copy, capsys):
    from lvm_pipeline.cli import EXIT_OK, main

    assert main(["materialize", "faiss_index", "--data-dir", str(small_run_copy)]) == EXIT_OK
    err = capsys.readouterr().err
    [line] = [x for x in err.splitlines() if "faiss_index: reused" in x]  # said once
    assert line.strip().startswith("faiss_index: reused index ")
    assert line.endswith("(same code, config and inputs)") and " of run " in line
    assert main(["materialize", "faiss_index", "--rebuild",
                 "--data-dir", str(small_run_copy)]) == EXIT_OK
    assert "faiss_index: built index " in capsys.readouterr().err
