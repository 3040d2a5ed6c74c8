"""Training an LVM on payload windows: AdamW, warmup + cosine LR, early stopping, resumable.

Reads top to bottom like nanoGPT's ``train.py``: the optimizer's parameter groups, the loop
(:func:`train`) followed by its parts (set-up, one epoch, one step, a step's negatives), then
:func:`train_variant`, which guards the inputs, trains one preset and publishes it. The
parts live in a module each of this package: the config (:mod:`.config`), the losses
(:mod:`.losses`), the LR schedule (:mod:`.lr_schedule`), the batches (:mod:`.batching`), the val
pass (:mod:`.validation`), the resume file (:mod:`.resume`) and the published checkpoint
(:mod:`.checkpoint`).
A rerun with the same inputs resumes from the last finished epoch and ends at the same weights
as an uninterrupted run.

Two execution choices never change what is computed: ``scan_backend`` (models/scan.py; ``auto``
is resolved once per run and recorded) and the process group (:mod:`.distributed`:
``world_size`` ranks split every global batch so that the run equals a one-process run).
"""

from __future__ import annotations

import math
import shutil
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from lvm_pipeline.guards import check_alignment
from lvm_pipeline.models import LVM, preset
from lvm_pipeline.models.mamba import use_scan_backend
from lvm_pipeline.models.scan import resolve_backend
from lvm_pipeline.payload import Payload
from lvm_pipeline.runtime import Progress, pick_device, silent
from lvm_pipeline.sequences import SequenceSet, load_sets, require_payload
from lvm_pipeline.store import ArtifactStore, Build, kinds, sha256_json
from lvm_pipeline.training.batching import (
    ArticleRows,
    article_negatives,
    autocast,
    batches,
    epoch_order,
    payload_negatives,
)
from lvm_pipeline.training.checkpoint import publish_checkpoint
from lvm_pipeline.training.config import TrainConfig
from lvm_pipeline.training.distributed import SINGLE, Distributed
from lvm_pipeline.training.losses import compute_loss
from lvm_pipeline.training.lr_schedule import lr_at
from lvm_pipeline.training.resume import RESUME_FILE, load_resume, save_resume
from lvm_pipeline.training.validation import copy_last_val, evaluate_val

# RESUME_FILE, TrainConfig and evaluate_val live in their own modules; callers (the assets,
# the benchmarks, the worker) import them from here, where a training run starts.
__all__ = ["RESUME_FILE", "TrainConfig", "TrainResult", "evaluate_val", "param_groups", "train",
           "train_variant"]

# Seconds between progress reports inside an epoch: one tiny-preset epoch at the reference's
# scale runs for minutes on two CPU cores, and without them nothing shows until it ends.
IN_EPOCH_PROGRESS_S = 10.0


def param_groups(model: LVM, config: TrainConfig) -> list[dict[str, Any]]:
    """Weight decay on matrices only (not norms, biases, A_log, D); the context mix gets
    ``mix_lr_multiplier`` × the learning rate. ``lr_scale`` is read by the schedule."""
    groups: dict[str, list[torch.nn.Parameter]] = {"decay": [], "no_decay": [], "mix": [],
                                                   "head": []}
    for name, param in model.named_parameters():
        if name == "context_mix":
            groups["mix"].append(param)
        elif name == "head.weight" and model.config.context_skip:
            groups["head"].append(param)
        elif param.dim() >= 2 and not getattr(param, "_no_weight_decay", False):
            groups["decay"].append(param)
        else:
            groups["no_decay"].append(param)
    out = [{"params": groups["decay"], "weight_decay": config.weight_decay, "lr_scale": 1.0},
           {"params": groups["no_decay"], "weight_decay": 0.0, "lr_scale": 1.0},
           {"params": groups["mix"], "weight_decay": 0.0, "lr_scale": config.mix_lr_multiplier},
           {"params": groups["head"], "weight_decay": config.weight_decay,
            "lr_scale": config.head_lr_multiplier}]
    return [group for group in out if group["params"]]


@dataclass
class TrainResult:
    model: LVM
    history: list[dict[str, Any]]
    best_epoch: int
    stopped_early: bool
    resumed_from_epoch: int
    device: str
    seconds: float
    batch_size: int
    scan_backend: str
    # Copy-last's val MRR@10 on the same val windows: the bar the best epoch must clear.
    copy_last_val_mrr_at_10: float
    world_size: int = 1

    def summary(self) -> dict[str, Any]:
        """Measured figures for materialization metadata (the same in every launch path)."""
        best = self.history[self.best_epoch] if self.best_epoch >= 0 else {}
        return {"n_params": self.model.num_params(), "device": self.device,
                "scan_backend": self.scan_backend, "world_size": self.world_size,
                "global_batch_size": self.batch_size, "epochs_run": len(self.history),
                "best_epoch": self.best_epoch, "stopped_early": self.stopped_early,
                "best_val_mrr_at_10": best.get("val_mrr_at_10"),
                "copy_last_val_mrr_at_10": self.copy_last_val_mrr_at_10,
                "best_val_r_at_5": best.get("val_r_at_5"), "best_val_cos": best.get("val_cos"),
                "train_seconds": self.seconds, "resumed_from_epoch": self.resumed_from_epoch}


def stop_summary(history: list[dict[str, Any]], best_epoch: int, stopped_early: bool,
                 config: TrainConfig, copy_last_val_mrr_at_10: float) -> str:
    """When and why training stopped and which epoch was kept, in one line (epochs counted
    from 1, as the progress lines count them)."""
    ran = len(history)
    if stopped_early:
        why = (f"stopped early after epoch {ran}/{config.epochs}: val MRR@10 did not improve "
               f"for {config.patience} epochs")
    else:
        why = f"ran all {config.epochs} epoch{'s' * (config.epochs != 1)}"
    best = history[best_epoch]["val_mrr_at_10"]
    verdict = "above" if best > copy_last_val_mrr_at_10 else "NOT above"
    return (f"{why}; kept epoch {best_epoch + 1} (val MRR@10 {best:.4f}, {verdict} copy-last's "
            f"{copy_last_val_mrr_at_10:.4f})")


def execution_of(config: TrainConfig) -> dict[str, str]:
    """The device and scan backend a training with ``config`` runs on here ("auto" resolved):
    they decide its float rounding, so a build made on others is not the same recipe."""
    device = pick_device(config.device)
    return {"device": device.split(":")[0],
            "scan_backend": resolve_backend(config.scan_backend, device)}


def _to(device: str, *tensors: torch.Tensor | None) -> list[torch.Tensor | None]:
    return [None if t is None else t.to(device) for t in tensors]


@dataclass
class _Run:
    """What every step of one training run reads, set up once before the first epoch; what
    changes between epochs (history, best weights) stays in :func:`train`."""

    model: LVM
    net: torch.nn.Module  # the model, or its DistributedDataParallel wrapper
    optimizer: torch.optim.Optimizer
    vectors: np.ndarray  # (R, D) payload
    train_set: SequenceSet
    config: TrainConfig
    device: str
    ranks: Distributed
    articles: ArticleRows | None  # None: no own-article negatives
    batch_size: int  # global, over all ranks
    steps_per_epoch: int

    @property
    def total_steps(self) -> int:
        return self.steps_per_epoch * self.config.epochs


def train(
    model: LVM,
    vectors: np.ndarray,
    train_set: SequenceSet,
    val_set: SequenceSet,
    config: TrainConfig,
    progress: Progress = silent,
    work_dir: Path | None = None,
    ranks: Distributed = SINGLE,
    article_of_row: np.ndarray | None = None,
    progress_every_s: float = IN_EPOCH_PROGRESS_S,
) -> TrainResult:
    """Train ``model`` in place; return it holding the weights of the epoch with the best val
    MRR@10 (stopping after ``patience`` epochs without a better one).

    vectors: (R, D) float32 payload (a memory map is fine); the sets index into it.
    ``ranks``: this process's rank in data-parallel training; ``config.batch_size`` is the
    global batch, split over the ranks. Only rank 0 reports progress and writes the resume file.
    ``article_of_row``: (R,) the payload's ``article_index`` per row; needed by
    ``config.article_negatives``.
    ``progress`` gets ``(epochs done, epochs)`` with ``loss``, ``val_cos`` and
    ``val_mrr_at_10`` after each epoch, and, at most every ``progress_every_s`` seconds within
    one, ``(epochs done, epochs)`` with :func:`in_epoch_figures` (``windows_done``…).
    """
    articles = _check_inputs(vectors, train_set, val_set, config, article_of_row)
    device = pick_device(config.device)
    scan_backend = resolve_backend(config.scan_backend, device)  # raises, never falls back
    use_scan_backend(model, scan_backend)
    model.to(device)
    optimizer = torch.optim.AdamW(param_groups(model, config), lr=config.lr)
    batch_size = _global_batch_size(config, len(train_set), ranks)
    history, best, start_epoch = _resume(work_dir, device, model, optimizer)
    steps_per_epoch = len(train_set) // batch_size  # drop_last: InfoNCE needs full batches
    run = _Run(model, _data_parallel(model, device, ranks), optimizer, vectors, train_set,
               config, device, ranks, articles, batch_size, steps_per_epoch)

    t0 = time.perf_counter()
    stopped_early = False
    for epoch in range(start_epoch, config.epochs):
        if epoch - best["epoch"] > config.patience and best["epoch"] >= 0:
            stopped_early = True
            break
        train_loss = _train_epoch(run, epoch, progress, progress_every_s)
        val = evaluate_val(model, vectors, val_set, config, device, ranks)
        record = {"epoch": epoch, "train_loss": train_loss, "val_loss": val["loss"],
                  "val_cos": val["cos"], "val_mrr_at_10": val["mrr_at_10"],
                  "val_r_at_5": val["r_at_5"],
                  "lr": lr_at((epoch + 1) * steps_per_epoch - 1, run.total_steps, config)}
        history.append(record)
        if val["mrr_at_10"] > best["mrr_at_10"]:
            best = {"mrr_at_10": val["mrr_at_10"], "epoch": epoch,
                    "state": {k: v.detach().clone() for k, v in model.state_dict().items()}}
        if ranks.is_main:
            # The epoch's figures, named as in the history (a tracker logs them per epoch).
            progress(epoch + 1, config.epochs,
                     **{k: v for k, v in record.items() if k != "epoch"})
        if work_dir is not None and ranks.is_main:
            save_resume(work_dir, {"model": model.state_dict(),
                                   "optimizer": optimizer.state_dict(), "epoch": epoch,
                                   "history": history, "best": best})
    if best["state"] is not None:
        model.load_state_dict(best["state"])
    model.cpu()
    use_scan_backend(model, model.config.scan_backend)  # back to the model's own (CPU-safe)
    return TrainResult(model=model, history=history, best_epoch=int(best["epoch"]),
                       stopped_early=stopped_early, resumed_from_epoch=start_epoch,
                       device=device, seconds=time.perf_counter() - t0, batch_size=batch_size,
                       scan_backend=scan_backend, world_size=ranks.world_size,
                       copy_last_val_mrr_at_10=copy_last_val(vectors, val_set,
                                                             config)["mrr_at_10"])


def _check_inputs(vectors: np.ndarray, train_set: SequenceSet, val_set: SequenceSet,
                  config: TrainConfig, article_of_row: np.ndarray | None) -> ArticleRows | None:
    """Refuse, before any work, sets that cannot train; return the payload's rows by article
    when the recipe draws own-article negatives (None otherwise)."""
    if len(train_set) < 2:
        raise ValueError(f"{len(train_set)} training windows: need at least 2 (InfoNCE needs "
                         "a negative); use a larger corpus")
    if len(val_set) == 0:
        raise ValueError("the val split has no windows; early stopping needs some")
    if not config.article_negatives or config.loss == "reference":
        return None
    if article_of_row is None or len(article_of_row) != len(vectors):
        raise ValueError(f"article_negatives={config.article_negatives} needs the payload's "
                         f"article_index per row ({len(vectors)} rows)")
    return ArticleRows.of(article_of_row)


def _global_batch_size(config: TrainConfig, n_windows: int, ranks: Distributed) -> int:
    """``config.batch_size``, or all ``n_windows`` when there are fewer."""
    # A corpus smaller than one batch trains on one full-size batch; the effective size is
    # recorded in the result (and the checkpoint) rather than failing a small run.
    batch_size = min(config.batch_size, n_windows)
    if batch_size < 2 * ranks.world_size:
        raise ValueError(f"global batch {batch_size} cannot be split over {ranks.world_size} "
                         "processes with at least 2 rows each (InfoNCE needs a negative)")
    return batch_size


def _resume(work_dir: Path | None, device: str, model: LVM, optimizer: torch.optim.Optimizer
            ) -> tuple[list[dict[str, Any]], dict[str, Any], int]:
    """Load the last finished epoch's state from ``work_dir`` into ``model`` and ``optimizer``;
    return (history, best, the epoch to start at), empty and 0 for a fresh run."""
    state = load_resume(work_dir, device)
    if state is None:
        return [], {"mrr_at_10": -math.inf, "epoch": -1, "state": None}, 0
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    return state["history"], state["best"], int(state["epoch"]) + 1


def _data_parallel(model: LVM, device: str, ranks: Distributed) -> torch.nn.Module:
    """The module the forward pass goes through: ``model`` itself, or with several ranks its
    DistributedDataParallel wrapper, which averages the gradients over them."""
    if ranks.world_size == 1:
        return model
    from torch.nn.parallel import DistributedDataParallel

    # Built after resuming: DDP broadcasts rank 0's weights when it is built.
    return DistributedDataParallel(
        model, device_ids=[ranks.local_rank] if device == "cuda" else None)


def _train_epoch(run: _Run, epoch: int, progress: Progress, progress_every_s: float) -> float:
    """One pass over the epoch's shuffle of the training windows in full global batches,
    reporting progress within it; returns the mean train loss over the steps of all ranks."""
    run.model.train()
    train_loss, n_batches = 0.0, 0
    epoch_start = last_report = time.perf_counter()
    order = epoch_order(len(run.train_set), run.config.seed, epoch)
    for step_in_epoch, (idx, context, target) in enumerate(
            batches(run.vectors, run.train_set, run.batch_size, order, drop_last=True)):
        train_loss += _train_step(run, epoch, step_in_epoch, idx, context, target)
        n_batches += 1
        now = time.perf_counter()
        if (run.ranks.is_main and n_batches < run.steps_per_epoch
                and now - last_report >= progress_every_s):
            last_report = now
            progress(epoch, run.config.epochs, **in_epoch_figures(
                n_batches * run.batch_size, run.steps_per_epoch * run.batch_size,
                now - epoch_start))
    train_loss = run.ranks.sum([train_loss], run.device)[0] / run.ranks.world_size
    return train_loss / max(n_batches, 1)


def _train_step(run: _Run, epoch: int, step_in_epoch: int, idx: np.ndarray,
                context: torch.Tensor, target: torch.Tensor) -> float:
    """One optimizer step on a global batch: idx (B,) window indices, context (B, 5, D),
    target (B, D). This rank trains on its share and returns its loss (weighted, see
    :mod:`.distributed`); DDP averages the gradients so the step is the global batch's."""
    config = run.config
    step = epoch * run.steps_per_epoch + step_in_epoch
    for group in run.optimizer.param_groups:
        group["lr"] = lr_at(step, run.total_steps, config) * group["lr_scale"]
    local = idx[run.ranks.share(len(idx))]
    context, target, rank_targets, weight = run.ranks.local_batch(context, target)
    negatives, mask = _step_negatives(run, epoch, step_in_epoch, idx, local)
    context, target, rank_targets, negatives, mask = _to(
        run.device, context, target, rank_targets, negatives, mask)
    with autocast(run.device):
        pred = run.net(context)
    loss = compute_loss(pred, target, config, rank_targets, negatives, mask)
    if weight != 1.0:  # this rank's share of the global mean (distributed.py)
        loss = loss * weight
    run.optimizer.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(run.model.parameters(), config.grad_clip)
    run.optimizer.step()
    return loss.item()  # CPU-GPU sync point, once per step is fine at these sizes


def _step_negatives(run: _Run, epoch: int, step_in_epoch: int, idx: np.ndarray,
                    local: np.ndarray) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """The extra InfoNCE negatives of one step beyond the batch's targets: random payload rows,
    then rows of each window's own article, as (S, D) and the (b, S) mask of those that are a
    local query's own rows; (None, None) when the recipe asks for neither.

    idx: (B,) the global batch's window indices; local: (b,) this rank's share of them.
    """
    config = run.config
    negatives = mask = None
    if config.negatives == "payload" and config.loss != "reference":
        # Seeded by (seed, epoch, step): every rank, and a resumed run, draws the same.
        rng = np.random.default_rng([config.seed, epoch, step_in_epoch])
        negatives, mask = payload_negatives(run.vectors, run.train_set, local,
                                            config.payload_negatives, rng)
    if run.articles is not None:
        rng = np.random.default_rng([config.seed, epoch, step_in_epoch, 1])
        own, own_mask = article_negatives(run.vectors, run.train_set, idx, local,
                                          config.article_negatives, run.articles, rng)
        negatives = own if negatives is None else torch.cat([negatives, own])
        mask = own_mask if mask is None else torch.cat([mask, own_mask], dim=1)
    return negatives, mask


def in_epoch_figures(done: int, total: int, seconds: float) -> dict[str, Any]:
    """The progress figures of an unfinished epoch: windows done of ``total``, windows/s, and
    the epoch's time left at that rate (the val pass after it not included)."""
    rate = done / max(seconds, 1e-9)
    return {"windows_done": done, "epoch_windows": total, "windows_per_s": round(rate, 1),
            "epoch_eta_s": round((total - done) / max(rate, 1e-9), 1)}


# An epoch's figures as a person reads them on a progress line.
_EPOCH_FIGURES = {"train_loss": "train loss", "val_loss": "val loss", "val_cos": "val cos",
                  "val_mrr_at_10": "val MRR@10", "val_r_at_5": "val R@5"}


def progress_line(done: int, total: int, elapsed: float, metrics: dict[str, Any]) -> str:
    """The body of a training's progress line (:func:`lvm_pipeline.runtime.make_progress`):
    ``epoch 3/20 · 7,168/19,712 windows · 193 windows/s · 65 s left`` within an epoch (``done``
    epochs finished, so this is epoch ``done + 1``), ``epoch 3/20 done · train loss 2.31 · …``
    after one."""
    if "windows_done" in metrics:
        return (f"epoch {done + 1}/{total} · {metrics['windows_done']:,}/"
                f"{metrics['epoch_windows']:,} windows · {metrics['windows_per_s']:,.0f} "
                f"windows/s · {metrics['epoch_eta_s']:,.0f} s left")
    figures = [f"{label} {metrics[key]:.4f}" for key, label in _EPOCH_FIGURES.items()
               if key in metrics]
    return " · ".join([f"epoch {done}/{total} done", *figures, f"{elapsed:,.0f} s so far"])


def train_variant(
    store: ArtifactStore,
    variant: str,
    size: str,
    payload: Payload,
    sequences: Build,
    config: TrainConfig,
    min_alignment_cosine: float,
    progress: Progress = silent,
    ranks: Distributed = SINGLE,
    recipe: Mapping[str, Any] | None = None,
) -> tuple[Build | None, TrainResult]:
    """Train one preset on the current sequences and publish its checkpoint.

    Refuses, on its own and in any run, sequences built for another payload and sequences
    that fail the alignment guard: a blocking Dagster check only protects its own run.
    In data-parallel training every rank trains and only rank 0 publishes (the others
    return ``None`` for the build).
    """
    require_payload(sequences, payload)
    sets = load_sets(sequences)
    check_alignment(payload, sets, min_alignment_cosine).raise_if_failed()
    torch.manual_seed(config.seed)  # identical init for identical config: resume relies on it
    model = LVM(preset(variant, size, d_in=payload.dim))
    run_key = sha256_json({"model": model.config.to_dict(), "train": asdict(config),
                           "payload": payload.build_id, "sequences": sequences.build_id})
    work_dir = store.root / kinds.checkpoint(variant) / ".work" / run_key[:16]
    result = train(model, payload.vectors, sets["train"], sets["val"], config, progress,
                   work_dir, ranks, payload.chunks["article_index"].to_numpy())
    if not ranks.is_main:
        return None, result
    # What the checkpoint holds is what the training computed; how long it took and whether it
    # resumed are facts of the run (its metadata), so the same training is the same build.
    build = publish_checkpoint(store, result.model, {
        "variant": variant, "size": size, "train_config": asdict(config),
        "payload_build_id": payload.build_id, "sequences_build_id": sequences.build_id,
        "history": result.history, "best_epoch": result.best_epoch,
        "stopped_early": result.stopped_early,
        "copy_last_val_mrr_at_10": result.copy_last_val_mrr_at_10,
        "device": result.device, "effective_batch_size": result.batch_size,
        "scan_backend": result.scan_backend, "world_size": result.world_size,
        "n_params": result.model.num_params(), "n_train_windows": len(sets["train"]),
        "n_val_windows": len(sets["val"]),
    }, upstream={"payload": payload.build_id, kinds.TRAIN_SEQUENCES: sequences.build_id},
        recipe=recipe)
    shutil.rmtree(work_dir, ignore_errors=True)
    return build, result
