"""`lvm runs` and `lvm runs clear`: what a person sees of the unfinished runs and the pool slots,
and ending a dead run by hand (refused for a live one unless --force)."""

from __future__ import annotations

import os

import dagster as dg

from lvm_pipeline.cli import EXIT_FAILED, EXIT_OK, EXIT_USAGE, main
from lvm_pipeline.defs.runs import HOST_TAG, PID_TAG, pool_slots, process_tags
from lvm_pipeline_tests.conftest import instance_at
from lvm_pipeline_tests.runs import add_run, dead_pid


def test_runs_lists_each_run_its_process_and_slots_and_says_how_to_clear_the_dead(tmp_path,
                                                                                  capsys):
    data_dir = tmp_path / "data"
    assert main(["runs", "--data-dir", str(data_dir)]) == EXIT_OK
    assert "no Dagster instance at" in capsys.readouterr().out
    assert not data_dir.exists()  # looking creates nothing
    here = process_tags()[HOST_TAG]
    with instance_at(data_dir) as instance:
        live = add_run(instance, process_tags())
        dead = add_run(instance, {PID_TAG: str(dead_pid()), HOST_TAG: here},
                       holds=("index", "faiss_index"))
    assert main(["runs", "--data-dir", str(data_dir)]) == EXIT_OK
    out = capsys.readouterr().out
    assert f"{live[:8]}  STARTED   full_retrain  started ?  pid {os.getpid()} on this machine " \
           "is alive" in out
    assert f"{dead[:8]}  STARTED   full_retrain" in out and "on this machine is gone" in out
    assert "holds the 'training' slot: mamba_s since" in out
    assert "holds the 'index' slot: faiss_index since" in out
    assert f"lvm runs clear {dead[:8]}" in out and f"lvm runs clear {live[:8]}" not in out


def test_runs_clear_ends_a_dead_run_and_refuses_a_live_one_without_force(tmp_path, capsys):
    data_dir = tmp_path / "data"
    with instance_at(data_dir) as instance:
        live = add_run(instance, process_tags())
        dead = add_run(instance, {PID_TAG: str(dead_pid()), HOST_TAG: process_tags()[HOST_TAG]},
                       holds=("index", "faiss_index"))
        elsewhere = add_run(instance, {PID_TAG: "12", HOST_TAG: "gpu-node-7"}, holds=None)
    args = ["--data-dir", str(data_dir)]

    assert main(["runs", "clear", dead[:6], *args]) == EXIT_OK
    out = capsys.readouterr().out
    assert out.startswith(f"! run {dead[:8]} (job full_retrain, was STARTED) cleared: pid ")
    assert "freed the 'index' slot of faiss_index" in out
    assert main(["runs", *args, "clear", dead]) == EXIT_OK  # --data-dir before the action too
    assert "already ended (FAILURE) and holds no pool slot: nothing to clear" in \
        capsys.readouterr().out

    assert main(["runs", "clear", live, *args]) == EXIT_FAILED
    err = capsys.readouterr().err
    assert err.startswith(f"lvm runs: run {live[:8]} may still be running (pid {os.getpid()} "
                          "on this machine is alive); stop it with `kill")
    assert main(["runs", "clear", elsewhere, *args]) == EXIT_FAILED
    assert "(pid 12 on gpu-node-7, not this machine)" in capsys.readouterr().err
    assert main(["runs", "clear", elsewhere, "--force", *args]) == EXIT_OK
    assert "cleared by hand with --force" in capsys.readouterr().out

    assert main(["runs", "clear", "", *args]) == EXIT_USAGE  # the start of every id
    assert "give more of it" in capsys.readouterr().err
    assert main(["runs", "clear", "zzz", *args]) == EXIT_FAILED
    assert "no run has an id starting with 'zzz'" in capsys.readouterr().err
    with instance_at(data_dir) as instance:
        status = {r: instance.get_run_by_id(r).status for r in (live, dead, elsewhere)}
        assert status == {live: dg.DagsterRunStatus.STARTED, dead: dg.DagsterRunStatus.FAILURE,
                          elsewhere: dg.DagsterRunStatus.FAILURE}
        assert [s.run_id for s in pool_slots(instance)[0]] == [live]
