"""Rebuild only what changed: a step whose code, config and inputs made a build before returns
that build (verified), with the same data version, and its checks still run
(lvm_pipeline/defs/reuse.py)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from lvm_pipeline.cli.run_config import IndexParams
from lvm_pipeline.defs.metadata import BUILT
from lvm_pipeline.store import ArtifactStore, kinds, recipe_key
from lvm_pipeline_tests.conftest import (
    SMALL_TRAINING,
    check_evaluations,
    materialize_all,
    materialized_metadata,
    publish_synthetic_payload,
)

pytestmark = pytest.mark.slow


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


def test_a_damaged_build_is_not_reused(small_run, small_run_copy):
    store = ArtifactStore(small_run_copy)
    index = store.get(kinds.INDEX, materialized_metadata(small_run[1])["faiss_index"]["build_id"])
    target = index.path / "index.faiss"
    target.write_bytes(target.read_bytes()[:-8])
    result = materialize_all(small_run_copy, selection=["faiss_index"])
    assert result.success
    assert _reuse(materialized_metadata(result)["faiss_index"]) == BUILT


def test_a_new_payload_reuses_nothing_downstream(small_run_copy):
    rebuilt = materialize_all(small_run_copy, corpus={"max_chunks": 300},
                              selection=["corpus", "payload", "faiss_index"])
    meta = materialized_metadata(rebuilt)
    assert _reuse(meta["payload"]) == BUILT and _reuse(meta["faiss_index"]) == BUILT


def test_two_runs_of_one_recipe_at_once_finish_with_one_build(small_run, small_run_copy,
                                                               tmp_path):
    """Both compute (``--rebuild``), both publish: the index's bytes are a function of the
    payload, so content addressing makes them one build, and neither run fails."""
    from lvm_pipeline.cli.runner import PROJECT_ROOT

    env = {**os.environ, "PYTHONPATH": str(PROJECT_ROOT)}
    runs = [subprocess.Popen([sys.executable, "-m", "lvm_pipeline.cli", "materialize",
                              "faiss_index", "--rebuild", "--data-dir", str(small_run_copy)],
                             env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            for _ in range(2)]
    outputs = [run.communicate(timeout=600) for run in runs]
    assert [run.returncode for run in runs] == [0, 0], [err[-1500:] for _, err in outputs]
    builds = {out.split("\t")[1] for out, _ in outputs}
    assert len(builds) == 1 and all("built index" in err for _, err in outputs)
    folders = [p for p in (small_run_copy / kinds.INDEX).iterdir()
               if p.is_dir() and not p.name.startswith(".") and p.name != "recipes"]
    assert len(folders) == 1


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
