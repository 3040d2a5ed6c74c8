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
from lvm_pipeline.evaluation import truth_ranks
from lvm_pipeline.guards import check_alignment
from lvm_pipeline.models import LVM, preset
from lvm_pipeline.models.mamba import use_scan_backend
from lvm_pipeline.models.scan import BACKENDS, resolve_backend
from lvm_pipeline.payload import Payload
from lvm_pipeline.progress import Progress, silent
from lvm_pipeline.sequences import SequenceSet, gather, load_sets, require_payload

LOSSES = ("reference", "infonce", "mix")
NEGATIVES = ("batch", "payload")
RESUME_FILE = "resume.pt"


@dataclass(frozen=True)
class TrainConfig:
    epochs: int = 20
    batch_size: int = 256
    # 3e-4, not the 1e-3 of the reference setup: on the default run 1e-3 left Mamba-XL and
    # Mamba-Sandwich below copy-last on MRR@10 (docs/evaluation.md has the measurements).
    lr: float = 3e-4
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
    # InfoNCE negatives: the batch's other targets ("batch"), or those plus payload_negatives
    # payload rows drawn at random each step ("payload"). Random in-batch targets come from
    # other articles and are easy; payload rows include the chunks retrieval actually confuses.
    negatives: str = "payload"
    payload_negatives: int = 4096
    # The context mix (LVMConfig.context_skip) learns this many times faster than the network:
    # it has 5 parameters and settles the blend before the network can overfit a correction.
    mix_lr_multiplier: float = 30.0
    # The zero-initialised head (LVMConfig.context_skip) learns at this × the learning rate.
    # Adam moves every weight by ~lr per step whatever the gradient's size, so at full rate the
    # correction reached the size of the context blend within one epoch and overfit
    # (measured: 0.1 lifted Mamba-Sandwich's eval MRR@10 from 0.154 to 0.193).
    head_lr_multiplier: float = 0.1
    # Val windows scored by exact retrieval after each epoch (early stopping and the best
    # epoch use val MRR@10, not val loss: on the default corpus val InfoNCE kept falling while
    # val retrieval got worse from the first epoch on).
    val_queries: int = 2048
    seed: int = 0
    device: str = "cpu"
    # How the Mamba scan runs (models/scan.py); "auto" = the fastest the device allows.
    scan_backend: str = "auto"

    def __post_init__(self) -> None:
        if self.loss not in LOSSES:
            raise ValueError(f"unknown loss {self.loss!r}; valid: {', '.join(LOSSES)}")
        if self.negatives not in NEGATIVES:
            raise ValueError(f"unknown negatives {self.negatives!r}; valid: {', '.join(NEGATIVES)}")
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


def infonce_loss(pred: torch.Tensor, target: torch.Tensor, temperature: float,
                 negatives: torch.Tensor | None = None,
                 negative_mask: torch.Tensor | None = None) -> torch.Tensor:
    """Cross-entropy of each prediction against its own target among the batch's targets and
    optional extra ``negatives`` (S, D); ``negative_mask`` (B, S) hides a negative that is the
    query's own target or context.

    Unlike cosine regression this pays for being closer to the truth than to *other* chunks,
    which is what retrieval measures.
    """
    candidates = target if negatives is None else torch.cat([target, negatives])  # (B + S, D)
    logits = pred @ candidates.t() / temperature  # (B, B + S)
    if negative_mask is not None:
        extra = logits[:, len(target):].masked_fill(negative_mask, float("-inf"))
        logits = torch.cat([logits[:, :len(target)], extra], dim=1)
    return F.cross_entropy(logits, torch.arange(len(pred), device=pred.device))


def compute_loss(pred: torch.Tensor, target: torch.Tensor, config: TrainConfig,
                 rank_targets: torch.Tensor | None = None,
                 payload_negatives: torch.Tensor | None = None,
                 payload_mask: torch.Tensor | None = None) -> torch.Tensor:
    """pred, target: (B, D). InfoNCE candidates beyond the batch: ``rank_targets`` (M, D), the
    other ranks' share of the global batch in data-parallel training, and ``payload_negatives``
    (S, D) with ``payload_mask`` (B, S) hiding each query's own target and context rows."""
    pred, target = pred.float(), target.float()
    if config.loss == "reference":
        return reference_loss(pred, target)
    extra, masks = [], []
    if rank_targets is not None:
        extra.append(rank_targets.float())
        masks.append(torch.zeros(len(pred), len(rank_targets), dtype=torch.bool,
                                 device=pred.device))
    if payload_negatives is not None:
        extra.append(payload_negatives.float())
        masks.append(payload_mask)
    nce = infonce_loss(pred, target, config.temperature,
                       torch.cat(extra) if extra else None,
                       torch.cat(masks, dim=1) if masks else None)
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
    """Yield (window indices (B,), context (B, 5, D), target (B, D)) gathered by payload row."""
    order = np.arange(len(seqs)) if order is None else order
    stop = len(order) - (len(order) % batch_size if drop_last else 0)
    for lo in range(0, stop, batch_size):
        idx = order[lo:lo + batch_size]
        context = gather(vectors, seqs.context_rows[idx])  # (B, 5, D)
        target = gather(vectors, seqs.target_row[idx])  # (B, D)
        yield idx, torch.from_numpy(context), torch.from_numpy(target)


def payload_negatives(vectors: np.ndarray, seqs: SequenceSet, idx: np.ndarray, count: int,
                      rng: np.random.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """``count`` random payload rows as negatives (S, D), and the (B, S) mask of those that are
    a query's own target or one of its context rows."""
    rows = rng.choice(vectors.shape[0], size=min(count, vectors.shape[0]), replace=False)
    own = np.concatenate([seqs.target_row[idx, None], seqs.context_rows[idx]], axis=1)  # (B, 6)
    mask = (rows[None, None, :] == own[:, :, None]).any(axis=1)  # (B, S)
    return torch.from_numpy(gather(vectors, rows)), torch.from_numpy(mask)


def epoch_order(n: int, seed: int, epoch: int) -> np.ndarray:
    """The shuffle of one epoch, a function of (seed, epoch) only: resuming replays it."""
    return np.random.default_rng([seed, epoch]).permutation(n)


# --------------------------------------------------------------------------- loop


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
    world_size: int = 1

    def summary(self) -> dict[str, Any]:
        """Measured figures for materialization metadata (the same in every launch path)."""
        best = self.history[self.best_epoch] if self.best_epoch >= 0 else {}
        return {"n_params": self.model.num_params(), "device": self.device,
                "scan_backend": self.scan_backend, "world_size": self.world_size,
                "global_batch_size": self.batch_size, "epochs_run": len(self.history),
                "best_epoch": self.best_epoch, "stopped_early": self.stopped_early,
                "best_val_mrr_at_10": best.get("val_mrr_at_10"),
                "best_val_r_at_5": best.get("val_r_at_5"), "best_val_cos": best.get("val_cos"),
                "train_seconds": self.seconds, "resumed_from_epoch": self.resumed_from_epoch}


def _autocast(device: str):
    # bf16 on CUDA halves activation memory and uses the tensor cores; CPU stays fp32.
    if device == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def _to(device: str, *tensors: torch.Tensor | None) -> list[torch.Tensor | None]:
    return [None if t is None else t.to(device) for t in tensors]


@torch.no_grad()
def evaluate_val(model: LVM, vectors: np.ndarray, seqs: SequenceSet, config: TrainConfig,
                 device: str) -> dict[str, float]:
    """Val loss and cosine over every window, val MRR@10 / R@5 by exact retrieval over the
    whole payload (context rows excluded) on up to ``config.val_queries`` evenly spaced windows.

    In data-parallel training every rank runs this on the whole split: the figures, and so the
    early-stopping decision, are the same on every rank without any communication.
    """
    model.eval()
    losses, cos_sum, n = [], 0.0, 0
    predictions = []
    for _, context, target in batches(vectors, seqs, config.batch_size):
        context, target = context.to(device), target.to(device)
        with _autocast(device):
            pred = model(context).float()
        if len(pred) > 1:
            losses.append(float(compute_loss(pred, target, config)) * len(pred))
        cos_sum += float(F.cosine_similarity(pred, target, dim=-1).sum())
        n += len(pred)
        predictions.append(pred.cpu().numpy())
    model.train()
    picked = np.unique(np.linspace(0, len(seqs) - 1, num=min(config.val_queries, len(seqs)),
                                   dtype=np.int64))
    queries = np.concatenate(predictions)[picked]
    ranks = truth_ranks(queries, vectors, seqs.target_row[picked].astype(np.int64),
                        seqs.context_rows[picked].astype(np.int64))
    return {"loss": sum(losses) / max(n, 1), "cos": cos_sum / max(n, 1),
            "mrr_at_10": float(np.mean(np.where(ranks <= 10, 1.0 / ranks, 0.0))),
            "r_at_5": float(np.mean(ranks <= 5))}


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
    """Train ``model`` in place; return it holding the weights of the epoch with the best val
    MRR@10 (stopping after ``patience`` epochs without a better one).

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
    optimizer = torch.optim.AdamW(param_groups(model, config), lr=config.lr)
    # A corpus smaller than one batch trains on one full-size batch; the effective size is
    # recorded in the result (and the checkpoint) rather than failing a small run.
    batch_size = min(config.batch_size, len(train_set))
    if batch_size < 2 * ranks.world_size:
        raise ValueError(f"global batch {batch_size} cannot be split over {ranks.world_size} "
                         "processes with at least 2 rows each (InfoNCE needs a negative)")
    steps_per_epoch = len(train_set) // batch_size  # drop_last: InfoNCE needs full batches
    total_steps = steps_per_epoch * config.epochs

    history: list[dict[str, Any]] = []
    best: dict[str, Any] = {"mrr_at_10": -math.inf, "epoch": -1, "state": None}
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
        for step_in_epoch, (idx, context, target) in enumerate(
                batches(vectors, train_set, batch_size, order, drop_last=True)):
            step = epoch * steps_per_epoch + step_in_epoch
            for group in optimizer.param_groups:
                group["lr"] = lr_at(step, total_steps, config) * group["lr_scale"]
            local = idx[ranks.share(len(idx))]
            context, target, rank_targets, weight = ranks.local_batch(context, target)
            negatives = mask = None
            if config.negatives == "payload" and config.loss != "reference":
                # Seeded by (seed, epoch, step): every rank, and a resumed run, draws the same.
                rng = np.random.default_rng([config.seed, epoch, step_in_epoch])
                negatives, mask = payload_negatives(vectors, train_set, local,
                                                    config.payload_negatives, rng)
            context, target, rank_targets, negatives, mask = _to(
                device, context, target, rank_targets, negatives, mask)
            with _autocast(device):
                pred = net(context)
            loss = compute_loss(pred, target, config, rank_targets, negatives, mask)
            if weight != 1.0:  # this rank's share of the global mean (distributed.py)
                loss = loss * weight
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
            optimizer.step()
            train_loss += loss.item()  # CPU-GPU sync point, once per step is fine at these sizes
            n_batches += 1
        train_loss = ranks.sum([train_loss], device)[0] / ranks.world_size
        val = evaluate_val(model, vectors, val_set, config, device)
        record = {"epoch": epoch, "train_loss": train_loss / max(n_batches, 1),
                  "val_loss": val["loss"], "val_cos": val["cos"],
                  "val_mrr_at_10": val["mrr_at_10"], "val_r_at_5": val["r_at_5"],
                  "lr": lr_at((epoch + 1) * steps_per_epoch - 1, total_steps, config)}
        history.append(record)
        if val["mrr_at_10"] > best["mrr_at_10"]:
            best = {"mrr_at_10": val["mrr_at_10"], "epoch": epoch,
                    "state": {k: v.detach().clone() for k, v in model.state_dict().items()}}
        if ranks.is_main:
            progress(epoch + 1, config.epochs, loss=record["train_loss"], val_cos=val["cos"],
                     val_mrr_at_10=val["mrr_at_10"])
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
