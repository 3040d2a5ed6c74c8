"""Retrieval quality of each variant × loss on an existing data dir (the measurement behind
the default loss and training length, docs/evaluation.md).

Needs a data dir with a payload, sequences and index (``lvm run`` makes one). Trains every
requested (variant, loss) with the same seed, scores them with the baselines in one pass
through :func:`lvm_pipeline.evaluation.evaluate`, writes JSON first, then prints a table.

    python benchmarks/model_quality.py --data-dir data --losses reference,infonce,mix
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from dataclasses import asdict
from pathlib import Path

import torch

from lvm_pipeline.evaluation import baseline_predictors, evaluate
from lvm_pipeline.models import LVM, VARIANTS, preset
from lvm_pipeline.payload import current_payload, gather
from lvm_pipeline.report import model_predictor
from lvm_pipeline.search import load_index
from lvm_pipeline.sequences import load_sets
from lvm_pipeline.store import ArtifactStore, kinds
from lvm_pipeline.training import TrainConfig, train

COLUMNS = ("r_at_1", "r_at_5", "r_at_10", "mrr_at_10", "contain_at_50", "contrastive_accuracy")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir", default="data")
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--losses", default="reference,infonce,mix")
    parser.add_argument("--size", default="tiny")
    parser.add_argument("--epochs", type=int, default=TrainConfig.epochs)
    parser.add_argument("--batch-size", type=int, default=TrainConfig.batch_size)
    parser.add_argument("--lr", type=float, default=TrainConfig.lr)
    parser.add_argument("--temperature", type=float, default=TrainConfig.temperature)
    parser.add_argument("--negatives", default=TrainConfig.negatives, choices=("batch", "payload"))
    parser.add_argument("--no-context-skip", action="store_true")
    parser.add_argument("--head-lr-multiplier", type=float, default=TrainConfig.head_lr_multiplier)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="benchmarks/results/model_quality.json")
    args = parser.parse_args()

    store = ArtifactStore(args.data_dir)
    payload = current_payload(store)
    train_sets = load_sets(store.current(kinds.TRAIN_SEQUENCES))
    eval_set = load_sets(store.current(kinds.EVAL_SEQUENCES))["eval"]
    index = load_index(store.current(kinds.INDEX), payload)
    predictions, runs = {}, {}
    for name, predictor in baseline_predictors(payload.vectors, train_sets["train"],
                                               train_sets["val"]).items():
        predictions[name] = predictor(gather(payload.vectors, eval_set.context_rows))
    for variant in args.variants.split(","):
        for loss in args.losses.split(","):
            config = TrainConfig(epochs=args.epochs, batch_size=args.batch_size, lr=args.lr,
                                 loss=loss, temperature=args.temperature,
                                 negatives=args.negatives, seed=args.seed,
                                 head_lr_multiplier=args.head_lr_multiplier)
            torch.manual_seed(args.seed)
            model = LVM(preset(variant, args.size, d_in=payload.dim,
                               context_skip=not args.no_context_skip))
            result = train(model, payload.vectors, train_sets["train"], train_sets["val"], config,
                           article_of_row=payload.chunks["article_index"].to_numpy())
            key = f"{variant}/{loss}"
            predictions[key] = model_predictor(result.model)(
                gather(payload.vectors, eval_set.context_rows))
            runs[key] = {"train_config": asdict(config), "epochs_run": len(result.history),
                         "best_epoch": result.best_epoch, "seconds": result.seconds,
                         "best_val_mrr_at_10": result.history[result.best_epoch]["val_mrr_at_10"],
                         "best_val_cos": result.history[result.best_epoch]["val_cos"]}
            print(f"{key}: {len(result.history)} epochs, best {result.best_epoch}, "
                  f"{result.seconds:.0f} s", flush=True)
    results = evaluate(predictions, payload.vectors, index, eval_set)
    record = {
        "args": vars(args), "date": time.strftime("%Y-%m-%d %H:%M:%S"),
        "machine": {"platform": platform.platform(), "processor": platform.processor(),
                    "cpus": torch.get_num_threads(), "torch": torch.__version__},
        "payload_build_id": payload.build_id, "n_train": len(train_sets["train"]),
        "n_val": len(train_sets["val"]), "n_eval": len(eval_set),
        "runs": runs, "metrics": {k: r.metrics for k, r in results.items()},
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(record, indent=2, sort_keys=True, default=float) + "\n")
    print(f"\n{len(eval_set)} eval queries; JSON in {out}\n")
    print("| variant / loss | " + " | ".join(COLUMNS) + " |")
    print("|---|" + "---|" * len(COLUMNS))
    for key, r in results.items():
        print(f"| {key} | " + " | ".join(f"{r.metrics[c]:.3f}" for c in COLUMNS) + " |")


if __name__ == "__main__":
    main()
