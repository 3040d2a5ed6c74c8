"""Training an LVM on payload windows: AdamW, warmup + cosine LR, early stopping, resumable.

Reads top to bottom like nanoGPT's ``train.py``: the config, the loss, the LR schedule, the batch
source, the loop. Batches are gathered from the payload by row (:func:`sequences.gather`, the
same path the alignment check measures), so no copy of the training vectors ever exists.
After every epoch the full state (weights, optimizer, history, best weights) is written
atomically to ``work_dir``; a rerun with the same inputs resumes from it and ends at the same
weights as an uninterrupted run, because each epoch's shuffle is seeded by ``(seed, epoch)``.

Two execution choices never change what is computed: ``scan_backend`` (models/scan.py; ``auto``
is resolved once per run and recorded) and the process group (:mod:`lvm_pipeline.distributed`:
``world_size`` ranks split every global batch so that the run equals a one-process run).
"""

from __future__ import annotations

import contextlib
import math
import os
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from lvm_pipeline.artifacts import ArtifactStore, Build, sha256_json
from lvm_pipeline.checkpoint import kind_for, save_checkpoint
from lvm_pipeline.device import pick_device
from lvm_pipeline.distributed import SINGLE, Distributed
from lvm_pipeline.guards import check_alignment
from lvm_pipeline.models import LVM, preset
from lvm_pipeline.models.mamba import use_scan_backend
from lvm_pipeline.models.scan import BACKENDS, resolve_backend
from lvm_pipeline.payload import Payload
from lvm_pipeline.progress import Progress, silent
from lvm_pipeline.sequences import SequenceSet, gather, load_sets, require_payload

LOSSES = ("reference", "infonce", "mix")
RESUME_FILE = "resume.pt"


@dataclass(frozen=True)
class TrainConfig:
    epochs: int = 20
    batch_size: int = 256
    lr: float = 1e-3
    weight_decay: float = 1e-4
    warmup_fraction: float = 0.05
    # Cosine decay ends at lr * min_lr_ratio rather than 0 (nanoGPT's min_lr = lr / 10).
    min_lr_ratio: float = 0.1
    grad_clip: float = 1.0
    patience: int = 3
    loss: str = "infonce"
    # InfoNCE temperature: unit vectors give logits in [-1, 1]; 1/0.05 = 20 spreads them enough
    # for the softmax to tell the true target from in-batch negatives.
    temperature: float = 0.05
    # Share of InfoNCE in the "mix" loss; the rest is the reference loss.
    infonce_weight: float = 0.5
    seed: int = 0
    device: str = "cpu"
    # How the Mamba scan runs (models/scan.py); "auto" = the fastest the device allows.
    scan_backend: str = "auto"

    def __post_init__(self) -> None:
        if self.loss not in LOSSES:
            raise ValueError(f"unknown loss {self.loss!r}; valid: {', '.join(LOSSES)}")
        if self.scan_backend not in BACKENDS:
            raise ValueError(f"unknown scan backend {self.scan_backend!r}; valid: "
                             f"{', '.join(BACKENDS)}")
        if self.epochs < 1 or self.batch_size < 2:
            raise ValueError(f"epochs must be >= 1 and batch_size >= 2: {self}")


# --------------------------------------------------------------------------- loss


def reference_loss(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """The reference project's 0.7·(1 − cos) + 0.3·MSE. pred, target: (B, D) unit vectors."""
    cos = F.cosine_similarity(pred, target, dim=-1)
    return 0.7 * (1 - cos).mean() + 0.3 * F.mse_loss(pred, target)


def infonce_loss(pred: torch.Tensor, target: torch.Tensor, temperature: float) -> torch.Tensor:
    """Cross-entropy of each prediction against its own target among the batch's targets.

    Unlike cosine regression this pays for being closer to the truth than to *other* chunks,
    which is what retrieval measures.
    """
    logits = pred @ target.t() / temperature  # (B, B)
    return F.cross_entropy(logits, torch.arange(len(pred), device=pred.device))


def compute_loss(pred: torch.Tensor, target: torch.Tensor, config: TrainConfig,
                 negatives: torch.Tensor | None = None) -> torch.Tensor:
    """pred, target: (B, D); ``negatives`` (M, D): more targets for InfoNCE only (the other
    ranks' share of the batch in data-parallel training; None in one process)."""
    pred, target = pred.float(), target.float()
    if config.loss == "reference":
        return reference_loss(pred, target)
    # Row i's own target stays at column i, so appending negatives keeps the labels.
    candidates = target if negatives is None else torch.cat([target, negatives.float()])
    nce = infonce_loss(pred, candidates, config.temperature)
    if config.loss == "infonce":
        return nce
    w = config.infonce_weight
    return w * nce + (1 - w) * reference_loss(pred, target)


# --------------------------------------------------------------------------- schedule


def lr_at(step: int, total_steps: int, config: TrainConfig) -> float:
    """1) linear warmup over the first warmup_fraction of steps, 2) cosine decay to min_lr."""
    warmup = max(1, int(config.warmup_fraction * total_steps))
    if step < warmup:
        return config.lr * (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total_steps - warmup))
    min_lr = config.lr * config.min_lr_ratio
    return min_lr + 0.5 * (1 + math.cos(math.pi * progress)) * (config.lr - min_lr)


# --------------------------------------------------------------------------- batches


def batches(
    vectors: np.ndarray,
    seqs: SequenceSet,
    batch_size: int,
    order: np.ndarray | None = None,
    drop_last: bool = False,
):
    """Yield (context (B, 5, D), target (B, D)) float32 tensors gathered by payload row."""
    order = np.arange(len(seqs)) if order is None else order
    stop = len(order) - (len(order) % batch_size if drop_last else 0)
    for lo in range(0, stop, batch_size):
        idx = order[lo:lo + batch_size]
        context = gather(vectors, seqs.context_rows[idx])  # (B, 5, D)
        target = gather(vectors, seqs.target_row[idx])  # (B, D)
        yield torch.from_numpy(context), torch.from_numpy(target)


def epoch_order(n: int, seed: int, epoch: int) -> np.ndarray:
    """The shuffle of one epoch, a function of (seed, epoch) only: resuming replays it."""
    return np.random.default_rng([seed, epoch]).permutation(n)


# --------------------------------------------------------------------------- loop


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
    world_size: int = 1

    def summary(self) -> dict[str, Any]:
        """Measured figures for materialization metadata (the same in every launch path)."""
        best = self.history[self.best_epoch] if self.best_epoch >= 0 else {}
        return {"n_params": self.model.num_params(), "device": self.device,
                "scan_backend": self.scan_backend, "world_size": self.world_size,
                "global_batch_size": self.batch_size, "epochs_run": len(self.history),
                "best_epoch": self.best_epoch, "stopped_early": self.stopped_early,
                "best_val_loss": best.get("val_loss"), "best_val_cos": best.get("val_cos"),
                "train_seconds": self.seconds, "resumed_from_epoch": self.resumed_from_epoch}


def _autocast(device: str):
    # bf16 on CUDA halves activation memory and uses the tensor cores; CPU stays fp32.
    if device == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def _to(device: str, *tensors: torch.Tensor | None) -> list[torch.Tensor | None]:
    return [None if t is None else t.to(device) for t in tensors]


@torch.no_grad()
def evaluate_loss(model: LVM, vectors: np.ndarray, seqs: SequenceSet, config: TrainConfig,
                  device: str, ranks: Distributed = SINGLE) -> dict[str, float]:
    """Mean loss and mean cosine(prediction, target) over a split, in fixed batches (each
    rank evaluates its share of every batch; the sums are added over ranks)."""
    model.eval()
    losses, cos_sum, n = [], 0.0, 0
    for full_context, full_target in batches(vectors, seqs, config.batch_size):
        n_global = len(full_target)
        context, target, negatives, _ = ranks.local_batch(full_context, full_target)
        if len(target) == 0:
            continue
        context, target, negatives = _to(device, context, target, negatives)
        with _autocast(device):
            pred = model(context)
        if n_global > 1:
            losses.append(float(compute_loss(pred, target, config, negatives)) * len(pred))
        cos_sum += float(F.cosine_similarity(pred.float(), target, dim=-1).sum())
        n += len(pred)
    model.train()
    loss_sum, cos_sum, n = ranks.sum([sum(losses), cos_sum, n], device)
    return {"loss": loss_sum / max(n, 1), "cos": cos_sum / max(n, 1)}


def _save_resume(path: Path, state: dict[str, Any]) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)


def train(
    model: LVM,
    vectors: np.ndarray,
    train_set: SequenceSet,
    val_set: SequenceSet,
    config: TrainConfig,
    progress: Progress = silent,
    work_dir: Path | None = None,
    ranks: Distributed = SINGLE,
) -> TrainResult:
    """Train ``model`` in place; return it holding the best-val-loss weights.

    vectors: (R, D) float32 payload (a memory map is fine); the sets index into it.
    ``ranks``: this process's rank in data-parallel training; ``config.batch_size`` is the
    global batch, split over the ranks. Only rank 0 reports progress and writes the resume file.
    """
    if len(train_set) < 2:
        raise ValueError(f"{len(train_set)} training windows: need at least 2 (InfoNCE needs "
                         "a negative); use a larger corpus")
    if len(val_set) == 0:
        raise ValueError("the val split has no windows; early stopping needs some")
    device = pick_device(config.device)
    scan_backend = resolve_backend(config.scan_backend, device)  # raises, never falls back
    use_scan_backend(model, scan_backend)
    model.to(device)
    decay = [p for n, p in model.named_parameters()
             if p.dim() >= 2 and not getattr(p, "_no_weight_decay", False)]
    no_decay = [p for n, p in model.named_parameters()
                if p.dim() < 2 or getattr(p, "_no_weight_decay", False)]
    optimizer = torch.optim.AdamW(
        [{"params": decay, "weight_decay": config.weight_decay},
         {"params": no_decay, "weight_decay": 0.0}], lr=config.lr)
    # A corpus smaller than one batch trains on one full-size batch; the effective size is
    # recorded in the result (and the checkpoint) rather than failing a small run.
    batch_size = min(config.batch_size, len(train_set))
    if batch_size < 2 * ranks.world_size:
        raise ValueError(f"global batch {batch_size} cannot be split over {ranks.world_size} "
                         "processes with at least 2 rows each (InfoNCE needs a negative)")
    steps_per_epoch = len(train_set) // batch_size  # drop_last: InfoNCE needs full batches
    total_steps = steps_per_epoch * config.epochs

    history: list[dict[str, Any]] = []
    best = {"loss": math.inf, "epoch": -1, "state": None}
    start_epoch, resumed_from = 0, 0
    resume_path = work_dir / RESUME_FILE if work_dir is not None else None
    if resume_path is not None and resume_path.exists():
        state = torch.load(resume_path, map_location=device, weights_only=True)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        history, best = state["history"], state["best"]
        start_epoch = resumed_from = int(state["epoch"]) + 1
    net: torch.nn.Module = model
    if ranks.world_size > 1:
        from torch.nn.parallel import DistributedDataParallel

        # Wrapped after resuming: DDP broadcasts rank 0's weights when it is built.
        net = DistributedDataParallel(
            model, device_ids=[ranks.local_rank] if device == "cuda" else None)

    t0 = time.perf_counter()
    stopped_early = False
    for epoch in range(start_epoch, config.epochs):
        if epoch - best["epoch"] > config.patience and best["epoch"] >= 0:
            stopped_early = True
            break
        model.train()
        train_loss, n_batches = 0.0, 0
        order = epoch_order(len(train_set), config.seed, epoch)
        for step_in_epoch, (context, target) in enumerate(
                batches(vectors, train_set, batch_size, order, drop_last=True)):
            step = epoch * steps_per_epoch + step_in_epoch
            for group in optimizer.param_groups:
                group["lr"] = lr_at(step, total_steps, config)
            context, target, negatives, weight = ranks.local_batch(context, target)
            context, target, negatives = _to(device, context, target, negatives)
            with _autocast(device):
                pred = net(context)
            loss = compute_loss(pred, target, config, negatives)
            if weight != 1.0:  # this rank's share of the global mean (distributed.py)
                loss = loss * weight
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
            optimizer.step()
            train_loss += loss.item()  # CPU-GPU sync point, once per step is fine at these sizes
            n_batches += 1
        train_loss = ranks.sum([train_loss], device)[0] / ranks.world_size
        val = evaluate_loss(model, vectors, val_set, config, device, ranks)
        record = {"epoch": epoch, "train_loss": train_loss / max(n_batches, 1),
                  "val_loss": val["loss"], "val_cos": val["cos"],
                  "lr": lr_at((epoch + 1) * steps_per_epoch - 1, total_steps, config)}
        history.append(record)
        if val["loss"] < best["loss"]:
            best = {"loss": val["loss"], "epoch": epoch,
                    "state": {k: v.detach().clone() for k, v in model.state_dict().items()}}
        if ranks.is_main:
            progress(epoch + 1, config.epochs, loss=record["train_loss"], val_loss=val["loss"],
                     val_cos=val["cos"])
        if resume_path is not None and ranks.is_main:
            resume_path.parent.mkdir(parents=True, exist_ok=True)
            _save_resume(resume_path, {"model": model.state_dict(),
                                       "optimizer": optimizer.state_dict(), "epoch": epoch,
                                       "history": history, "best": best})
    if best["state"] is not None:
        model.load_state_dict(best["state"])
    model.cpu()
    use_scan_backend(model, model.config.scan_backend)  # back to the model's own (CPU-safe)
    return TrainResult(model=model, history=history, best_epoch=int(best["epoch"]),
                       stopped_early=stopped_early, resumed_from_epoch=resumed_from,
                       device=device, seconds=time.perf_counter() - t0, batch_size=batch_size,
                       scan_backend=scan_backend, world_size=ranks.world_size)



# --------------------------------------------------------------------------- one variant


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
    kind = kind_for(variant)
    run_key = sha256_json({"model": model.config.to_dict(), "train": asdict(config),
                           "payload": payload.build_id, "sequences": sequences.build_id})
    work_dir = store.root / kind / ".work" / run_key[:16]
    result = train(model, payload.vectors, sets["train"], sets["val"], config, progress,
                   work_dir, ranks)
    if not ranks.is_main:
        return None, result
    with store.stage(kind) as staged:
        save_checkpoint(staged, result.model, {
            "variant": variant, "size": size, "train_config": asdict(config),
            "payload_build_id": payload.build_id, "sequences_build_id": sequences.build_id,
            "history": result.history, "best_epoch": result.best_epoch,
            "stopped_early": result.stopped_early, "resumed_from_epoch": result.resumed_from_epoch,
            "device": result.device, "train_seconds": result.seconds,
            "effective_batch_size": result.batch_size, "scan_backend": result.scan_backend,
            "world_size": result.world_size,
            "n_params": result.model.num_params(), "n_train_windows": len(sets["train"]),
            "n_val_windows": len(sets["val"]),
        })
        build = store.publish(kind, staged, {"variant": variant, "size": size,
                                             "payload_build_id": payload.build_id},
                              upstream={"payload": payload.build_id,
                                        "sequences/train": sequences.build_id})
    shutil.rmtree(work_dir, ignore_errors=True)
    return build, result
