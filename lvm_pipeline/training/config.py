"""What one training run does: the frozen config every training module reads.

Its own module because the loss, the LR schedule, validation and the loop all read it; it is
written whole into every checkpoint (:mod:`lvm_pipeline.training.checkpoint`). How the defaults were
chosen, with the measurements: docs/evaluation.md ("How the defaults were chosen").
"""

from __future__ import annotations

from dataclasses import dataclass

from lvm_pipeline.models.scan import BACKENDS

LOSSES = ("reference", "infonce", "mix")
NEGATIVES = ("batch", "payload")


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
    # Negatives drawn per query from its own article (its target and context masked), pooled
    # over the batch: on real text the truth's closest impostors are the same page's chunks,
    # which random payload rows rarely are (docs/evaluation.md, "A recipe on real text").
    article_negatives: int = 16
    # The context mix (LVMConfig.context_skip) learns this many times faster than the network:
    # it has 5 parameters and settles the blend before the network can overfit a correction.
    mix_lr_multiplier: float = 30.0
    # The zero-initialised head (LVMConfig.context_skip) learns at this × the learning rate.
    # Adam moves every weight by ~lr per step whatever the gradient's size, so at full rate the
    # correction reached the size of the context blend within one epoch and overfit (the
    # head ×1 / ×0.1 rows of docs/evaluation.md, table 3).
    head_lr_multiplier: float = 0.1
    # Val windows scored by exact retrieval after each epoch (early stopping and the best
    # epoch use val MRR@10, not val loss: on the default corpus val InfoNCE kept falling while
    # val retrieval got worse from the first epoch on; docs/evaluation.md).
    val_queries: int = 2048
    seed: int = 0
    # "auto": CUDA when torch sees a GPU, else the CPU; the result records the device used.
    device: str = "auto"
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
