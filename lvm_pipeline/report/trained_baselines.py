"""Baselines trained like the models: what an LVM reaches without its sequence network.

- ``learned_blend``: ``normalise(w · context)``, the five mixing weights alone, starting at
  copy-last (w = 0, 0, 0, 0, 1). An LVM with ``context_skip`` is exactly this blend plus its
  network's correction (models/lvm.py), so a model's gap to this baseline is what the network
  adds.
- ``linear_infonce``: ``normalise(w · context + flatten(context) @ A)``, a full linear map from
  the five concatenated context vectors (5·D → D): the blend plus a zero-initialised linear
  correction, so it starts at copy-last, where the blend and the models start. Ridge fits a
  linear map by squared error, which is not a retrieval objective; this one is trained with
  the models' InfoNCE over payload negatives.

Both go through :func:`lvm_pipeline.training.train`, the models' own loop: the same loss
(:func:`~lvm_pipeline.training.losses.compute_loss`), batches and payload negatives
(:mod:`~lvm_pipeline.training.batching`), AdamW parameter groups (the mix at ``mix_lr_multiplier``, the
linear correction as the LVM's head: ``head_lr_multiplier``, with weight decay, which pulls it
back towards the blend), warmup + cosine schedule, and early stopping on val MRR@10 with the
best epoch's weights kept. Nothing about them is tuned apart from the models.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields, replace
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import nn

from lvm_pipeline.embedding import sample_rows
from lvm_pipeline.runtime import Progress, silent
from lvm_pipeline.sequences import CONTEXT, SequenceSet
from lvm_pipeline.store import ArtifactStore, Build, kinds
from lvm_pipeline.training import TrainConfig, TrainResult, train

TRAINED_BASELINES = ("learned_blend", "linear_infonce")
# Without checkpoints to follow (a report of baselines only): the models' default recipe,
# derived from TrainConfig so that it follows every change to its defaults, except:
# - device "cpu" (TrainConfig: "auto"): a 5-weight blend and one linear map train in seconds
#   on a CPU, and the baselines' figures do not change with whether the report's machine has
#   a GPU (on CUDA training runs under bf16 autocast);
# - scan_backend "auto", kept even where a checkpoint recorded another (recipe_of): a baseline
#   has no Mamba scan, and the backends a GPU training records (triton, mamba_ssm) need CUDA.
BASELINE_TRAINING = replace(TrainConfig(), device="cpu", scan_backend="auto")
# At most this many training windows (a seeded sample of the training set): a step costs the
# same at any corpus size (mostly the 4,096 payload negatives), so the cap bounds a report at
# reference scale (450k windows: 1,760 steps an epoch) to 128 steps an epoch. The default
# corpus (~4k windows) is far below it and trains on every window. A step's time on 2 cores:
# benchmarks/RESULTS.md, "Figures behind code defaults".
MAX_TRAIN_WINDOWS = 32768


@dataclass(frozen=True)
class BlendConfig:
    """A trained baseline's shape. ``context_skip`` and ``scan_backend`` are what
    :func:`~lvm_pipeline.training.train` reads of a model's config: True puts ``context_mix``
    and ``head.weight`` in the LVM's mix and head parameter groups; there is no Mamba scan."""

    d_in: int
    linear: bool
    context: int = CONTEXT
    context_skip: bool = True
    scan_backend: str = "auto"


class ContextBlend(nn.Module):
    """``forward``: context (B, 5, D) float32 → ``normalise(w · context [+ head(flat)])`` (B, D)."""

    def __init__(self, config: BlendConfig) -> None:
        super().__init__()
        self.config = config
        mix = torch.zeros(config.context)
        mix[-1] = 1.0  # starts as copy-last, like LVM.context_mix
        self.context_mix = nn.Parameter(mix)
        self.context_mix._no_weight_decay = True
        self.head: nn.Linear | None = None
        if config.linear:
            self.head = nn.Linear(config.context * config.d_in, config.d_in, bias=False)
            nn.init.zeros_(self.head.weight)  # ... with no correction yet

    def forward(self, context: torch.Tensor) -> torch.Tensor:
        out = torch.einsum("l,bld->bd", self.context_mix, context)  # (B, D)
        if self.head is not None:
            out = out + self.head(context.reshape(len(context), -1))  # (B, 5D) → (B, D)
        return F.normalize(out, dim=-1)

    def num_params(self) -> int:
        return sum(p.numel() for p in self.parameters())


@dataclass
class TrainedBaseline:
    """One trained baseline: the trainer's result and what it was trained on."""

    result: TrainResult
    config: TrainConfig
    n_train_windows: int

    @property
    def model(self) -> ContextBlend:
        return self.result.model  # type: ignore[return-value]  (train() returns what it got)

    def record(self) -> dict[str, Any]:
        """What report.json records of it: the recipe and how training went. Not how long it
        took (``result.seconds``, the asset's metadata): a timing in report.json would give
        every rebuild of identical results another build id."""
        r = self.result
        return {"train_config": asdict(self.config), "n_train_windows": self.n_train_windows,
                "best_epoch": r.best_epoch, "epochs_run": len(r.history),
                "stopped_early": r.stopped_early,
                "best_val_mrr_at_10": r.history[r.best_epoch]["val_mrr_at_10"],
                "context_mix": self.model.context_mix.detach().tolist(),
                "n_params": self.model.num_params()}


def recipe_of(train_configs: list[dict[str, Any]]) -> TrainConfig:
    """The recipe the report's models were trained with (their checkpoints' ``train_config``),
    on the CPU. The same recipe on purpose: a baseline trained less carefully than the model it
    judges flatters the model, and one trained longer makes the comparison one of recipes.
    Models trained with different recipes: the one with the most epochs (the most training any
    of them got). None: :data:`BASELINE_TRAINING`."""
    if not train_configs:
        return BASELINE_TRAINING
    recorded = max(train_configs, key=lambda c: (c["epochs"], sorted(c.items())))
    # The recorded recipe, except where BASELINE_TRAINING differs from the models (its
    # comment says why); a field the checkpoint did not record keeps TrainConfig's default.
    kept = {f.name for f in fields(TrainConfig)} - {"device", "scan_backend"}
    return replace(BASELINE_TRAINING, **{k: v for k, v in recorded.items() if k in kept})


def fit_trained_baselines(vectors: np.ndarray, train_set: SequenceSet, val_set: SequenceSet,
                          config: TrainConfig = BASELINE_TRAINING,
                          max_train_windows: int = MAX_TRAIN_WINDOWS, progress: Progress = silent,
                          article_of_row: np.ndarray | None = None
                          ) -> dict[str, TrainedBaseline]:
    """Train ``learned_blend`` and ``linear_infonce`` on ``train_set`` (at most
    ``max_train_windows`` of them, a seeded sample) with early stopping on ``val_set``.

    vectors: (R, D) float32 payload the sets index into; ``article_of_row`` (R,) its
    ``article_index`` per row, for a recipe with ``article_negatives``. Deterministic for a given
    ``config.seed``: both start at copy-last and the trainer seeds every shuffle and negative
    draw by (seed, epoch, step).
    """
    if len(train_set) > max_train_windows:
        train_set = train_set.subset(sample_rows(len(train_set), max_train_windows, config.seed))
    out = {}
    for i, name in enumerate(TRAINED_BASELINES):
        model = ContextBlend(BlendConfig(d_in=vectors.shape[1], linear=name == "linear_infonce"))
        result = train(model, vectors, train_set, val_set, config,
                       article_of_row=article_of_row)
        out[name] = TrainedBaseline(result, config, len(train_set))
        progress(i + 1, len(TRAINED_BASELINES),
                 val_mrr_at_10=out[name].record()["best_val_mrr_at_10"])
    return out


# A baselines build: each baseline's weights (``<name>.safetensors``, tensors only) and one JSON
# of how each was trained; how long it took is provenance (the manifest's ``run``), not content.
RECORDS = "baselines.json"


def publish_trained_baselines(store: ArtifactStore, trained: Mapping[str, TrainedBaseline],
                              upstream: Mapping[str, str], recipe: Mapping[str, Any]) -> Build:
    """Keep ``trained`` as a build of its own, remembered under ``recipe`` (the report asks
    for it by that recipe: :meth:`ArtifactStore.build_for_recipe`)."""
    records = {}
    with store.stage(kinds.TRAINED_BASELINES) as staged:
        for name, baseline in trained.items():
            save_file({k: v.detach().contiguous() for k, v in baseline.model.state_dict().items()},
                      staged / f"{name}.safetensors")
            result = {f.name: getattr(baseline.result, f.name) for f in fields(TrainResult)
                      if f.name not in ("model", "seconds")}
            records[name] = {"d_in": baseline.model.config.d_in, "result": result,
                             "config": asdict(baseline.config),
                             "n_train_windows": baseline.n_train_windows}
        (staged / RECORDS).write_text(json.dumps(records, indent=1, sort_keys=True))
        seconds = {name: b.result.seconds for name, b in trained.items()}
        return store.publish(kinds.TRAINED_BASELINES, staged, {"baselines": sorted(trained)},
                             upstream=upstream, recipe=recipe, run={"train_seconds": seconds})


def load_trained_baselines(build: Build) -> dict[str, TrainedBaseline]:
    """The baselines ``build`` keeps (verified by the store when it was found), as trained:
    the same weights, history and recipe, and the seconds their training took."""
    records = json.loads(build.file(RECORDS).read_text())
    seconds = build.manifest["run"]["train_seconds"]  # publish_trained_baselines wrote it
    out = {}
    for name in TRAINED_BASELINES:
        record = records[name]
        model = ContextBlend(BlendConfig(d_in=record["d_in"], linear=name == "linear_infonce"))
        model.load_state_dict(load_file(build.file(f"{name}.safetensors")))
        result = TrainResult(model=model, seconds=seconds[name], **record["result"])
        out[name] = TrainedBaseline(result, TrainConfig(**record["config"]),
                                    record["n_train_windows"])
    return out
