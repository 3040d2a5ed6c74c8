"""What MLflow tracking (lvm_pipeline/runtime/tracking.py) adds to a run: import, store, per training.

Three measurements, each against no tracking in the same run:
- ``import``: fresh processes import the definitions (what a Dagster step process or `lvm run`
  has loaded anyway), then time ``import mlflow`` on top; median of ``--repeats``.
- ``store``: fresh processes open the default SQLite store under a data dir and log one
  metric: the first creates the store (its tables), the later ones open an existing one.
- ``training``: ``train_variant`` of the tiny ``mamba_s`` on a synthetic payload, tracking off
  and on alternately in one process (the first tracked training, which imports MLflow and
  opens the store, is reported apart), as the checkpoint asset tracks it: params, each epoch's
  figures through the progress callback, the build's tags and summary. Also the tracking
  calls alone (no training), the overhead without the training's noise.

    python benchmarks/bench_tracking.py                 # defaults: 3 repeats, 3 rounds
    python benchmarks/bench_tracking.py --smoke         # tiny sizes, one of each
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
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

from harness import env_info  # noqa: E402

from lvm_pipeline.store import kinds  # noqa: E402

_IMPORT = """
import time
t0 = time.perf_counter()
import lvm_pipeline.definitions
t1 = time.perf_counter()
import mlflow
t2 = time.perf_counter()
print(t1 - t0, t2 - t1)
"""

_STORE = """
import sys, time
from pathlib import Path
t0 = time.perf_counter()
from lvm_pipeline.runtime.tracking import TrackingConfig, _import_mlflow, start_run
_import_mlflow()
t1 = time.perf_counter()
with start_run(TrackingConfig(), Path(sys.argv[1]), "bench") as run:
    t2 = time.perf_counter()
    run.log_metrics({"x": 1.0})
t3 = time.perf_counter()
print(t2 - t1, t3 - t2)
"""


def _python(code: str, *args: str) -> list[float]:
    out = subprocess.run([sys.executable, "-c", code, *args], check=True, capture_output=True,
                         text=True, cwd=REPO)
    return [float(x) for x in out.stdout.split()]


def measure_import(repeats: int) -> dict[str, Any]:
    runs = [_python(_IMPORT) for _ in range(repeats)]
    return {"definitions_s": [r[0] for r in runs], "mlflow_on_top_s": [r[1] for r in runs],
            "median_definitions_s": statistics.median(r[0] for r in runs),
            "median_mlflow_on_top_s": statistics.median(r[1] for r in runs)}


def measure_store(repeats: int, work: Path) -> dict[str, Any]:
    out: dict[str, Any] = {"create_s": [], "open_s": [], "log_and_end_s": []}
    for i in range(repeats):
        data_dir = work / f"store{i}"
        for key in ("create_s", "open_s"):  # the first run creates the store, the second opens it
            opened, logged = _python(_STORE, str(data_dir))
            out[key].append(opened)
            out["log_and_end_s"].append(logged)
    out.update({f"median_{k}": statistics.median(v) for k, v in list(out.items())})
    return out


def _setup(work: Path, articles: int, chunks: int) -> tuple[Any, Any, Any]:
    from lvm_pipeline.payload import load_payload
    from lvm_pipeline.sequences import SplitConfig, build_windows, native_info, publish_sequences
    from lvm_pipeline.store import ArtifactStore
    from lvm_pipeline.synthetic import SyntheticPayloadConfig, publish_synthetic_payload

    store = ArtifactStore(work / "data")
    payload = load_payload(publish_synthetic_payload(store, SyntheticPayloadConfig(
        # Lengths around the mean: the generator's long tail must fit in ``chunks``.
        articles=articles, chunks=chunks, dim=384, median_chunks=0.6 * chunks / articles,
        p95_chunks=1.5 * chunks / articles)))
    sets = build_windows(payload, SplitConfig(), drop_near_duplicates=False)
    train_sets = {"train": sets["train"], "val": sets["val"]}
    return store, payload, publish_sequences(store, kinds.TRAIN_SEQUENCES, payload, train_sets,
                                             native_info(SplitConfig()))


def measure_training(work: Path, rounds: int, epochs: int, articles: int,
                     chunks: int) -> dict[str, Any]:
    import torch

    from lvm_pipeline.defs.assets.models import TrainParams, tracked_params
    from lvm_pipeline.runtime import TrackingConfig, silent, start_run, tee
    from lvm_pipeline.training import train_variant

    store, payload, sequences = _setup(work, articles, chunks)
    params = TrainParams(epochs=epochs, batch_size=256)
    config = params.to_domain()

    def once(tracking: bool, train: bool) -> float:
        t0 = time.perf_counter()
        with start_run(TrackingConfig(enabled=tracking), store.root, "mamba_s",
                       tracked_params("mamba_s", params, payload.dim)) as run:
            if train:
                build, result = train_variant(store, "mamba_s", "tiny", payload, sequences,
                                              config, 0.99, tee(silent, run.progress))
                run.record_build(build, result.summary())
            else:  # the same calls with figures of the same shape, no training
                for epoch in range(epochs):
                    run.progress(epoch + 1, epochs, train_loss=1.0, val_loss=1.0, val_cos=0.5,
                                 val_mrr_at_10=0.1, val_r_at_5=0.1, lr=1e-3)
                run.record_build(sequences, {"n_params": 1, "best_val_mrr_at_10": 0.1,
                                             "train_seconds": 1.0, "best_epoch": 1})
        return time.perf_counter() - t0

    first_tracked = once(True, True)  # imports MLflow and creates the store
    off, on, calls = [], [], []
    for _ in range(rounds):
        off.append(once(False, True))
        on.append(once(True, True))
        calls.append(once(True, False))
    med_off, med_on = statistics.median(off), statistics.median(on)
    return {"epochs": epochs, "articles": articles, "chunks": chunks, "rounds": rounds,
            "torch_threads": torch.get_num_threads(), "first_tracked_s": first_tracked,
            "off_s": off, "on_s": on, "tracking_calls_only_s": calls,
            "median_off_s": med_off, "median_on_s": med_on, "on_over_off": med_on / med_off,
            "median_tracking_calls_only_s": statistics.median(calls)}


def summary(results: dict[str, Any]) -> str:
    imp, store, train = results["import"], results["store"], results["training"]
    return "\n".join([
        f"import lvm_pipeline.definitions: {imp['median_definitions_s']:.2f} s; "
        f"import mlflow on top: {imp['median_mlflow_on_top_s']:.2f} s (median of "
        f"{len(imp['definitions_s'])})",
        f"store: create {store['median_create_s']:.2f} s, open existing "
        f"{store['median_open_s']:.2f} s, log + end {store['median_log_and_end_s']:.3f} s",
        f"training ({train['epochs']} epochs, {train['chunks']} chunks): off "
        f"{train['median_off_s']:.2f} s, on {train['median_on_s']:.2f} s "
        f"(x{train['on_over_off']:.3f}); tracking calls alone "
        f"{train['median_tracking_calls_only_s']:.3f} s; first tracked training "
        f"{train['first_tracked_s']:.2f} s",
    ])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--repeats", type=int, default=3, help="fresh processes per import/store case")
    p.add_argument("--rounds", type=int, default=3, help="off/on training pairs")
    p.add_argument("--epochs", type=int, default=5)
    p.add_argument("--articles", type=int, default=300)
    p.add_argument("--chunks", type=int, default=6000)
    p.add_argument("--smoke", action="store_true", help="tiny sizes, one repeat")
    p.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "bench_tracking.json")
    args = p.parse_args()
    if args.smoke:
        args.repeats, args.rounds, args.epochs, args.articles, args.chunks = 1, 1, 2, 40, 600
    results: dict[str, Any] = {"args": {k: str(v) for k, v in vars(args).items()},
                               "env": {**env_info(),
                                       "mlflow_skinny": importlib.metadata.version("mlflow-skinny")}}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    stages = {"import": lambda tmp: measure_import(args.repeats),
              "store": lambda tmp: measure_store(args.repeats, tmp),
              "training": lambda tmp: measure_training(tmp, args.rounds, args.epochs,
                                                       args.articles, args.chunks)}
    with tempfile.TemporaryDirectory() as tmp:
        for name, stage in stages.items():  # JSON rewritten after each stage
            results[name] = stage(Path(tmp))
            args.out.write_text(json.dumps(results, indent=2) + "\n")
    print(summary(results))
    print(f"JSON: {args.out}")


if __name__ == "__main__":
    main()
