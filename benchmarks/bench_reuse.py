"""Rebuild only what changed: the default `lvm run` cold, unchanged, after a rendering edit and
after one variant's config change, each as the user's command in a fresh process.

Step reuse (lvm_pipeline/defs/reuse.py) returns a step's earlier build when its code version,
config and inputs made one. This times what a user waits for, in one data dir, each run a
fresh ``python -m lvm_pipeline.cli run`` (interpreter start, imports, definitions, the run,
the report print):

a. **cold**: a fresh data dir (empty embedding cache, embedder loaded and every chunk
   embedded, five trainings, the report);
b. **unchanged**: the same command again (goal: <= 10 % of a);
c. **report edited**: the package copied into a temp folder with one string of the report's
   Markdown changed (``lvm_pipeline/report/render.py``) and put first on ``PYTHONPATH``, so the
   code version of ``retrieval_report`` changes as a developer's edit changes it (goal: only
   the report built, <= 20 % of a);
d. **one variant's config**: ``mamba_s`` trained with another ``lr``, the others untouched.
   ``lvm run --epochs`` configures the five variants together, so this run is `lvm run` with
   only ``mamba_s``'s op config changed, as the launchpad's
   ``ops: {mamba_s: {config: {lr: ...}}}`` would (goal: ``mamba_s`` and the report built).

Which steps were built and which reused is read from each run's materialization events in
the data dir's Dagster instance (the ``reuse`` metadata), and each of b, c, d must build
exactly what its goal says or the benchmark says so. b, c and d are repeated ``--repeats``
times (each c with another edit, each d with another lr); ratios are to a of the same run.
JSON first (args, machine, versions, every run's wall and in-run seconds, load average,
built / reused steps, step durations), the table after.

    python benchmarks/bench_reuse.py                 # the README's `lvm run` (~7 min on 2 idle cores)
    python benchmarks/bench_reuse.py --smoke         # 300 chunks, 1 epoch, no tracking
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # run as `python benchmarks/x.py` from a bare checkout
    sys.path.insert(0, str(REPO))
if str(Path(__file__).resolve().parent) not in sys.path:  # loaded with runpy (a test)
    sys.path.insert(0, str(Path(__file__).resolve().parent))

from results_file import write_results  # noqa: E402

OUT_DIR = Path(__file__).parent / "results"
RENDER = Path("report") / "render.py"
# The string the edit changes: the report's title, read by every `report.md` and `lvm report`.
TITLE = '"# Retrieval report\\n\\n"'
VARIANT, FIELD = "mamba_s", "lr"
LRS = (2e-4, 2.5e-4, 1.5e-4, 3.5e-4, 1e-4)  # default 3e-4 (training/config.py)
GOALS = {"unchanged": 0.10, "report edited": 0.20}
# The corpus has no recipe: it reads its source in every run (the same text is the same build).
READ_EVERY_RUN = ("corpus",)
ASSETS = ("payload", "aligned_training_sequences", "aligned_eval", "faiss_index", "mamba_s",
          "mamba_h", "mamba_xl", "mamba_sandwich", "mamba_gr", "retrieval_report")
EXPECTED_BUILT = {"unchanged": [], "report edited": ["retrieval_report"],
                  "one variant's config": sorted([VARIANT, "retrieval_report"])}
RUN_LINE = re.compile(r"lvm run:? (?:succeeded in|FAILED after) (\d+) s \(run ([0-9a-f-]+)\)")
# A candidate the promotion gate holds back fails `lvm run` (README, *Promotion and trends*):
# another lr can train a worse mamba_s. That run still timed what it rebuilt.
HELD_BACK = re.compile(r"check check_candidates_not_worse on retrieval_report FAILED: (.*)")


# --------------------------------------------------------------------------- the edits


def edited_package(folder: Path, mark: str) -> Path:
    """A copy of ``lvm_pipeline`` under ``folder`` whose report title says ``mark``; returns
    what to put on ``PYTHONPATH``. Only ``report/render.py`` differs."""
    source = REPO / "lvm_pipeline"
    target = folder / "lvm_pipeline"
    shutil.copytree(source, target, ignore=shutil.ignore_patterns("__pycache__"))
    # The project files the package reads from its parent: the dg project table that
    # `load_from_defs_folder` looks for, and the instance config a data dir copies.
    for name in ("pyproject.toml", "dagster.yaml"):
        shutil.copyfile(REPO / name, folder / name)
    render = target / RENDER
    text = render.read_text()
    assert text.count(TITLE) == 1, f"{render}: the title string {TITLE} is not there once"
    render.write_text(text.replace(TITLE, TITLE.replace("report", f"report ({mark})")))
    return folder


def code_versions(root: Path) -> dict[str, str]:
    """Each asset's code version computed from the package at ``root`` (defs/code_versions.py)."""
    from lvm_pipeline.defs.code_versions import UPSTREAM, code_version

    return {asset: code_version(asset, root) for asset in UPSTREAM}


def with_op(config: Any, change: str) -> Any:
    """``config`` (a ``dg.RunConfig``) with one checkpoint's op config changed:
    ``OP:FIELD=VALUE``, VALUE as JSON."""
    import dagster as dg

    from lvm_pipeline.cli.run_config import TrainParams

    op, setting = change.split(":", 1)
    field, value = setting.split("=", 1)
    params = config.ops.get(op) or TrainParams()
    return dg.RunConfig(ops={**config.ops, op: params.model_copy(update={field: json.loads(value)})},
                        resources=config.resources)


def lvm_with_op(change: str, argv: list[str]) -> int:
    """``lvm ARGV`` with :func:`with_op` applied to the run config the command line builds."""
    from lvm_pipeline.cli import main, run

    from_args = run.run_config_from_args
    run.run_config_from_args = lambda *a, **kw: with_op(from_args(*a, **kw), change)
    return main(argv)


# --------------------------------------------------------------------------- one run


def steps_of_run(data_dir: Path, run_id: str) -> dict[str, Any]:
    """What the run's events in the data dir's instance say: which assets were built and which
    reused (their ``reuse`` metadata; the corpus, which has no recipe and reads its source in
    every run, apart), each step's seconds."""
    import dagster as dg

    from lvm_pipeline.cli.runner import open_instance
    from lvm_pipeline.defs.metadata import BUILT, REUSE

    steps: dict[str, list[str]] = {"built": [], "reused": [], "read": []}
    seconds = {}
    with open_instance(data_dir / "dagster_home") as instance:
        for entry in instance.all_logs(run_id):
            event = entry.dagster_event
            if event is None:
                continue
            if event.event_type == dg.DagsterEventType.ASSET_MATERIALIZATION:
                meta = event.event_specific_data.materialization.metadata
                name = event.asset_key.to_user_string()
                how = ("read" if name in READ_EVERY_RUN else
                       "built" if meta[REUSE].value == BUILT else "reused")
                steps[how].append(name)
            elif event.event_type == dg.DagsterEventType.STEP_SUCCESS:
                seconds[event.step_key] = event.event_specific_data.duration_ms / 1000
    return {**{k: sorted(v) for k, v in steps.items()}, "step_seconds": seconds}


def timed_lvm(label: str, data_dir: Path, lvm_args: list[str], log: Path,
              pythonpath: Path = REPO, change: str | None = None) -> dict[str, Any]:
    """``lvm run`` in a fresh process, its wall seconds (what the user waits), the run's own
    seconds and its steps. ``change``: :func:`lvm_with_op`'s ``OP:FIELD=VALUE``."""
    argv = ["run", "--data-dir", str(data_dir), *lvm_args]
    command = ([sys.executable, "-m", "lvm_pipeline.cli", *argv] if change is None else
               [sys.executable, str(Path(__file__).resolve()), "--lvm-with-op", change, "--",
                *argv])
    env = {**os.environ, "PYTHONPATH": str(pythonpath)}
    load_before = os.getloadavg()
    start = time.perf_counter()
    # cwd: not the checkout, which `python -m` would put before PYTHONPATH (run c's copy).
    with log.open("w") as err:
        proc = subprocess.run(command, env=env, cwd=log.parent, stdout=subprocess.PIPE,
                              stderr=err, text=True)
    wall = time.perf_counter() - start
    stderr = log.read_text()
    found = RUN_LINE.search(stderr)
    failures = [line for line in stderr.splitlines() if line.startswith("  - ")]
    held_back = [m.group(1) for line in failures if (m := HELD_BACK.search(line))]
    if found is None or (proc.returncode != 0 and len(held_back) != len(failures)):
        raise RuntimeError(f"{label}: exit {proc.returncode}; last lines of {log}:\n"
                           + "\n".join(stderr.splitlines()[-15:]))
    run_id = found.group(2)
    result = {"label": label, "wall_s": wall, "in_run_s": int(found.group(1)),
              "run_id": run_id, "exit_code": proc.returncode, "held_back": held_back,
              "pythonpath": str(pythonpath), "change": change,
              "load_average_before": load_before, "load_average_after": os.getloadavg(),
              "log": str(log), **steps_of_run(data_dir, run_id)}
    print(f"{label}: {wall:.1f} s; built {', '.join(result['built']) or 'nothing'}",
          flush=True)
    return result


# --------------------------------------------------------------------------- the benchmark


def run(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    data_dir, logs = workdir / "data", workdir / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    lvm_args = ["--max-chunks", "300", "--epochs", "1", "--no-tracking"] if args.smoke else []
    runs = [timed_lvm("cold", data_dir, lvm_args, logs / "cold.log")]
    for i in range(args.repeats):
        runs.append(timed_lvm("unchanged", data_dir, lvm_args, logs / f"unchanged_{i}.log"))
    original = code_versions(REPO / "lvm_pipeline")
    edits = []
    for i in range(args.repeats):
        package = edited_package(workdir / f"edited_{i}", f"edit {i + 1}")
        versions = code_versions(package / "lvm_pipeline")
        edits.append({"changed_code_versions": sorted(a for a in versions
                                                      if versions[a] != original[a])})
        runs.append(timed_lvm("report edited", data_dir, lvm_args,
                              logs / f"report_edited_{i}.log", pythonpath=package))
        runs[-1]["code_versions_changed"] = edits[-1]["changed_code_versions"]
    for i in range(args.repeats):
        change = f"{VARIANT}:{FIELD}={json.dumps(LRS[i % len(LRS)])}"
        runs.append(timed_lvm("one variant's config", data_dir, lvm_args,
                              logs / f"variant_config_{i}.log", change=change))
    cold = runs[0]["wall_s"]
    for r in runs:
        r["ratio_to_cold"] = r["wall_s"] / cold
        expected = EXPECTED_BUILT.get(r["label"], list(ASSETS))
        r["as_expected"] = (r["built"] == sorted(expected)
                            and sorted(r["built"] + r["reused"]) == sorted(ASSETS))
    return {"lvm_args": lvm_args, "original_code_versions": original, "runs": runs}


def env_info() -> dict[str, Any]:
    import importlib.metadata
    import platform

    versions = {name: importlib.metadata.version(name)
                for name in ("dagster", "torch", "sentence-transformers", "faiss-cpu")}
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO,
                            capture_output=True, text=True).stdout.strip()
    return {"python": platform.python_version(), **versions, "commit": commit,
            "platform": platform.platform(), "cpu_count": os.cpu_count(),
            "load_average": os.getloadavg()}


def summary(r: dict[str, Any]) -> str:
    cold = r["runs"][0]
    lines = [f"`{' '.join(['lvm run', *r['lvm_args']])}` in fresh processes; {r['env']['cpu_count']} "
             f"CPUs, commit {r['env']['commit']}",
             f"{'run':<22} {'wall s':>7} {'in-run s':>8} {'ratio':>6} {'load':>10}  "
             f"{'built':<34} ok"]
    for run_ in r["runs"]:
        load = f"{run_['load_average_before'][0]:.1f}-{run_['load_average_after'][0]:.1f}"
        built = ", ".join(run_["built"]) if len(run_["built"]) < 4 else (
            f"all {len(run_['built'])}")
        lines.append(f"{run_['label']:<22} {run_['wall_s']:>7.1f} {run_['in_run_s']:>8} "
                     f"{run_['ratio_to_cold']:>6.3f} {load:>10}  {built or '-':<34} "
                     f"{'yes' if run_['as_expected'] else 'NO'}"
                     + (" (candidate held back by the gate)" if run_["held_back"] else ""))
    for label, goal in (*GOALS.items(), ("one variant's config", None)):
        walls = [x["wall_s"] for x in r["runs"] if x["label"] == label]
        if walls:
            ratio = statistics.median(walls) / cold["wall_s"]
            lines.append(f"{label}: median {statistics.median(walls):.1f} s = {ratio:.3f} of "
                         f"cold" + (f" (goal <= {goal:.2f}: {'met' if ratio <= goal else 'MISSED'})"
                                    if goal else ""))
    steps = sorted(cold["step_seconds"].items(), key=lambda kv: -kv[1])[:4]
    lines.append("cold's longest steps: " + ", ".join(f"{k} {v:.0f} s" for k, v in steps))
    return "\n".join(lines)


def main() -> None:
    if len(sys.argv) > 2 and sys.argv[1] == "--lvm-with-op":  # one run of d, in its process
        sys.exit(lvm_with_op(sys.argv[2], sys.argv[sys.argv.index("--") + 1:]))
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--smoke", action="store_true",
                   help="300 chunks, 1 epoch, no tracking, one repeat: checks the benchmark")
    p.add_argument("--repeats", type=int, default=3,
                   help="runs of each of b, c, d (each c another edit, each d another lr)")
    p.add_argument("--tmp", default=None, help="folder for the throwaway data dir and copies")
    p.add_argument("--keep", action="store_true", help="keep the data dir, copies and logs")
    p.add_argument("--out", default=None, help="JSON path (default results/bench_reuse.json)")
    args = p.parse_args()
    if args.smoke:
        args.repeats = 1
    out = Path(args.out or OUT_DIR / ("bench_reuse_smoke.json" if args.smoke
                                      else "bench_reuse.json"))
    env = env_info()
    workdir = Path(tempfile.mkdtemp(prefix="bench_reuse_", dir=args.tmp))
    start = time.perf_counter()
    try:
        result = run(args, workdir)
    finally:
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)
    results = {"args": vars(args), "env": env, **result, "wall_s": time.perf_counter() - start}
    write_results(out, results, summary)


if __name__ == "__main__":
    main()
