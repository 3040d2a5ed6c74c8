"""Training recipes compared with paired intervals: does the network add something over a blend?

Needs a data dir with a payload and sequences (``lvm run``, or ``lvm materialize`` of the data
assets, makes one; docs/evaluation.md builds one from Debian's documentation with
``benchmarks/doc_corpus.py``). Each ``--recipe NAME:field=value,...`` overrides fields of
:class:`~lvm_pipeline.training.config.TrainConfig` or of the model preset
(:class:`~lvm_pipeline.models.config.LVMConfig`); ``NAME:`` alone is the default recipe. Per
recipe the script trains the baselines the report trains (``learned_blend``,
``linear_infonce``) with that same recipe, as the report does, and each requested variant;
then it ranks every eval window for every predictor in one exact pass, and for each model its
network path alone (the head's correction, normalised), and writes JSON before printing:

    python benchmarks/recipe_search.py --data-dir /tmp/doc-data --variants mamba_s \\
        --recipe default: --recipe own8:article_negatives=8 --recipe drop:dropout=0.1

Columns: best epoch / epochs run; MRR@10 with its 95 % interval; the paired difference to
``learned_blend``, ``linear_infonce`` and ``copy_last`` (paired bootstrap, 1,000 resamples,
the report's :func:`lvm_pipeline.evaluation.bootstrap.confidence`); the network path alone's MRR@10.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from dataclasses import asdict, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch

from lvm_pipeline.embedding import unit_rows
from lvm_pipeline.evaluation import confidence, copy_last_context, model_parts, ranks_only
from lvm_pipeline.models import LVM, VARIANTS, LVMConfig, preset
from lvm_pipeline.payload import current_payload, gather
from lvm_pipeline.report import fit_trained_baselines, model_predictor
from lvm_pipeline.sequences import load_sets
from lvm_pipeline.store import ArtifactStore, kinds
from lvm_pipeline.training import TrainConfig, train

BASELINES = ("copy_last", "learned_blend", "linear_infonce")
TRAIN_FIELDS = {f.name: f.type for f in fields(TrainConfig)}
MODEL_FIELDS = {f.name: f.type for f in fields(LVMConfig)}


def parse_recipe(spec: str) -> tuple[str, dict[str, Any], dict[str, Any]]:
    """``NAME:field=value,...`` → (name, TrainConfig overrides, LVMConfig overrides)."""
    name, _, body = spec.partition(":")
    train_over: dict[str, Any] = {}
    model_over: dict[str, Any] = {}
    for item in filter(None, body.split(",")):
        key, _, raw = item.partition("=")
        value: Any = json.loads(raw) if raw not in ("true", "false") else raw == "true"
        if key in TRAIN_FIELDS:
            train_over[key] = value
        elif key in MODEL_FIELDS:
            model_over[key] = value
        else:
            raise SystemExit(f"recipe {name!r}: {key!r} is neither a TrainConfig nor an "
                             "LVMConfig field")
    return name, train_over, model_over


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir", required=True)
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--size", default="tiny")
    parser.add_argument("--recipe", action="append", required=True, metavar="NAME:k=v,...")
    parser.add_argument("--out", default="benchmarks/results/recipe_search.json")
    args = parser.parse_args()

    store = ArtifactStore(args.data_dir)
    payload = current_payload(store)
    sets = load_sets(store.current(kinds.TRAIN_SEQUENCES))
    eval_set = load_sets(store.current(kinds.EVAL_SEQUENCES))["eval"]
    articles = payload.chunks["article_index"].to_numpy()
    context = gather(payload.vectors, eval_set.context_rows)  # (Q, 5, D)
    record: dict[str, Any] = {
        "args": vars(args), "date": time.strftime("%Y-%m-%d %H:%M:%S"),
        "machine": {"platform": platform.platform(), "cpus": torch.get_num_threads(),
                    "torch": torch.__version__},
        "payload_build_id": payload.build_id, "n_rows": len(payload),
        "n_train": len(sets["train"]), "n_val": len(sets["val"]), "n_eval": len(eval_set),
        "recipes": {}}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    rows = []
    for spec in args.recipe:
        name, train_over, model_over = parse_recipe(spec)
        config = TrainConfig(**train_over)
        t0 = time.perf_counter()
        trained = fit_trained_baselines(payload.vectors, sets["train"], sets["val"], config,
                                        article_of_row=articles)
        predictions = {"copy_last": copy_last_context(context)}
        predictions.update({n: model_predictor(fit.model)(context) for n, fit in trained.items()})
        runs: dict[str, Any] = {n: fit.record() for n, fit in trained.items()}
        for variant in args.variants.split(","):
            torch.manual_seed(config.seed)
            model = LVM(preset(variant, args.size, d_in=payload.dim, **model_over))
            result = train(model, payload.vectors, sets["train"], sets["val"], config,
                           article_of_row=articles)
            predictions[variant] = model_predictor(result.model)(context)
            _, correction = model_parts(result.model, payload.vectors, eval_set)
            predictions[f"{variant}/network"] = unit_rows(correction)
            runs[variant] = {"best_epoch": result.best_epoch, "epochs_run": len(result.history),
                             "seconds": result.seconds, "history": result.history,
                             "n_params": result.model.num_params(),
                             "model_config": result.model.config.to_dict()}
            print(f"{name} {variant}: best epoch {result.best_epoch} of {len(result.history)}, "
                  f"{result.seconds:.0f} s", flush=True)
        ranks = ranks_only(predictions, payload.vectors, eval_set)
        models = [v for v in args.variants.split(",")]
        conf = confidence(ranks, models, list(BASELINES))
        record["recipes"][name] = {
            "train_config": asdict(config), "model_overrides": model_over, "runs": runs,
            "confidence": conf, "seconds": time.perf_counter() - t0,
            "network_mrr_at_10": {v: float(np.mean(np.where(ranks[f"{v}/network"] <= 10,
                                                            1.0 / ranks[f"{v}/network"], 0.0)))
                                  for v in models}}
        out.write_text(json.dumps(record, indent=2, sort_keys=True, default=float) + "\n")
        for v in models:
            i = conf["intervals"][v]["mrr_at_10"]
            d = conf["differences"][v]
            rows.append(
                f"| {name} | {v} | {runs[v]['best_epoch']} / {runs[v]['epochs_run']} | "
                f"{i['value']:.3f} [{i['low']:.3f}, {i['high']:.3f}] | "
                + " | ".join(f"{d[b]['mrr_at_10']['value']:+.3f} [{d[b]['mrr_at_10']['low']:+.3f}"
                             f", {d[b]['mrr_at_10']['high']:+.3f}]" for b in BASELINES)
                + f" | {record['recipes'][name]['network_mrr_at_10'][v]:.3f} |")
        blend = conf["intervals"]["learned_blend"]["mrr_at_10"]
        print(f"{name}: learned_blend MRR@10 {blend['value']:.3f}, copy_last "
              f"{conf['intervals']['copy_last']['mrr_at_10']['value']:.3f}", flush=True)
    print(f"\n{len(eval_set)} eval queries; JSON in {out}\n")
    print("| recipe | variant | best / epochs | MRR@10 [95 %] | "
          + " | ".join(f"− {b}" for b in BASELINES) + " | network alone |")
    print("|---|---|---|---|---|---|---|---|")
    print("\n".join(rows))


if __name__ == "__main__":
    main()
