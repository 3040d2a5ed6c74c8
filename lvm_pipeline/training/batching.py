"""Batches of payload windows as the model sees them: gathered by row, shuffled per epoch.

Batches are gathered from the payload by row (:func:`lvm_pipeline.payload.gather.gather`, the same
path the alignment check measures), so no copy of the training vectors ever exists. Every random choice
is a function of the seed and the epoch (and step), never of a generator's history: a resumed
run, and every rank of a data-parallel one, draws exactly what an uninterrupted single process
draws.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch

from lvm_pipeline.payload import gather
from lvm_pipeline.sequences import SequenceSet


def batches(
    vectors: np.ndarray,
    seqs: SequenceSet,
    batch_size: int,
    order: np.ndarray | None = None,
    drop_last: bool = False,
) -> Iterator[tuple[np.ndarray, torch.Tensor, torch.Tensor]]:
    """Yield (window indices (B,), context (B, 5, D), target (B, D)) gathered by payload row."""
    order = np.arange(len(seqs)) if order is None else order
    stop = len(order) - (len(order) % batch_size if drop_last else 0)
    for lo in range(0, stop, batch_size):
        idx = order[lo:lo + batch_size]
        context = gather(vectors, seqs.context_rows[idx])  # (B, 5, D)
        target = gather(vectors, seqs.target_row[idx])  # (B, D)
        yield idx, torch.from_numpy(context), torch.from_numpy(target)


def own_rows_mask(seqs: SequenceSet, idx: np.ndarray, rows: np.ndarray) -> torch.Tensor:
    """(B, S) bool: negative row ``rows[s]`` is query ``idx[b]``'s own target or context row."""
    own = np.concatenate([seqs.target_row[idx, None], seqs.context_rows[idx]], axis=1)  # (B, 6)
    return torch.from_numpy((rows[None, None, :] == own[:, :, None]).any(axis=1))


def payload_negatives(vectors: np.ndarray, seqs: SequenceSet, idx: np.ndarray, count: int,
                      rng: np.random.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """``count`` random payload rows as negatives (S, D), and the (B, S) mask of those that are
    a query's own target or one of its context rows."""
    rows = rng.choice(vectors.shape[0], size=min(count, vectors.shape[0]), replace=False)
    return torch.from_numpy(gather(vectors, rows)), own_rows_mask(seqs, idx, rows)


@dataclass(frozen=True)
class ArticleRows:
    """The payload's rows grouped by article, built once per training: ``of_row`` (R,) each
    row's ``article_index``, ``order`` the rows sorted by it, ``sorted`` their article indices."""

    of_row: np.ndarray
    order: np.ndarray
    sorted: np.ndarray

    @classmethod
    def of(cls, article_of_row: np.ndarray) -> ArticleRows:
        of_row = np.asarray(article_of_row)
        order = np.argsort(of_row, kind="stable")
        return cls(of_row, order, of_row[order])


def article_negatives(vectors: np.ndarray, seqs: SequenceSet, batch: np.ndarray,
                      queries: np.ndarray, count: int, articles: ArticleRows,
                      rng: np.random.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """``count`` rows drawn from the article of each window in ``batch`` (the global batch),
    pooled (B·count, D), and the (Q, B·count) mask of those that are one of ``queries``' own
    target or context rows (``queries``: this rank's share of ``batch``; every rank draws the
    same pool, so data-parallel training sees what one process sees).

    On real text the chunks retrieval confuses with the truth are mostly the same page's other
    chunks (docs/evaluation.md); random payload rows rarely are.
    """
    article = articles.of_row[seqs.target_row[batch]]  # (B,)
    starts = np.searchsorted(articles.sorted, article)
    ends = np.searchsorted(articles.sorted, article, side="right")
    draws = rng.random((len(batch), count))  # (B, count) uniform in [0, 1)
    picks = starts[:, None] + (draws * (ends - starts)[:, None]).astype(np.int64)  # (B, count)
    rows = articles.order[picks].ravel()  # (B·count,)
    return torch.from_numpy(gather(vectors, rows)), own_rows_mask(seqs, queries, rows)


def epoch_order(n: int, seed: int, epoch: int) -> np.ndarray:
    """The shuffle of one epoch, a function of (seed, epoch) only: resuming replays it."""
    return np.random.default_rng([seed, epoch]).permutation(n)


def autocast(device: str) -> contextlib.AbstractContextManager:
    """The precision a forward pass runs in, the same in training and validation."""
    # bf16 on CUDA halves activation memory and uses the tensor cores; CPU stays fp32.
    if device == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()
