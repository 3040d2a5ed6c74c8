"""Exact retrieval on a torch device: the evaluation's search on a GPU.

On CUDA the FAISS CPU index is the slow part of a report (tens of seconds for the reference's
5,244 queries × 584k rows on 2 cores), while one GEMM per payload block on a GPU takes
milliseconds (both measured: benchmarks/RESULTS.md, "GPU evaluation and embedding at reference
scale"). :class:`DevicePayload`
holds the payload's vectors on the device once and answers, in one pass over them, both what
the evaluation needs: the top-k candidates (excluded rows removed) and each query's exact rank
of truth. Same definitions as :func:`lvm_pipeline.search.top_k` (with an exact index) and
:func:`lvm_pipeline.search.truth_ranks`, which the tests hold it to on CPU.

Imports only numpy and torch (no FAISS), so ``benchmarks/gpu_eval.py`` runs it on a bare GPU
image.
"""

from __future__ import annotations

import numpy as np
import torch

# Payload rows per GEMM: the (Q, block) score matrix is the largest temporary.
BLOCK = 65536
DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


class DevicePayload:
    """The payload's (R, D) unit vectors on ``device`` as ``dtype``, uploaded in blocks (a
    memory-mapped payload is never copied whole into host RAM)."""

    def __init__(self, vectors: np.ndarray, device: str = "cuda", dtype: str = "float32",
                 block: int = BLOCK) -> None:
        if dtype not in DTYPES:
            raise ValueError(f"unknown dtype {dtype!r}; valid: {', '.join(DTYPES)}")
        self.device, self.dtype, self.block = torch.device(device), DTYPES[dtype], block
        if self.device.type == "cuda" and not torch.cuda.is_available():
            raise ValueError(f"search device {device!r} requested but torch {torch.__version__} "
                             "sees no CUDA GPU; use device 'cpu' (FAISS)")
        n, dim = vectors.shape
        self.vectors = torch.empty((n, dim), dtype=self.dtype, device=self.device)
        for lo in range(0, n, block):
            chunk = torch.from_numpy(np.array(vectors[lo:lo + block], np.float32))  # a copy
            self.vectors[lo:lo + block] = chunk.to(self.device, self.dtype)

    def __len__(self) -> int:
        return self.vectors.shape[0]

    @torch.no_grad()
    def exact_pass(self, queries: np.ndarray, truth_rows: np.ndarray,
                   exclude_rows: np.ndarray | None, k: int
                   ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Top-k and rank of truth for every query, in one pass over the payload.

        queries: (Q, D); truth_rows: (Q,); exclude_rows: (Q, E) or None, rows that are never
        candidates (the query's own context). Returns scores (Q, k) float32 and rows (Q, k)
        int64, best first, and ranks (Q,) int64: 1 + the non-excluded rows scoring strictly
        above the truth (ties in the truth's favour), judged inside each block's GEMM.
        """
        q = torch.from_numpy(np.ascontiguousarray(queries, np.float32)).to(self.device,
                                                                           self.dtype)
        n_q = q.shape[0]
        truth = torch.from_numpy(truth_rows.astype(np.int64)).to(self.device)
        excl = (None if exclude_rows is None
                else torch.from_numpy(exclude_rows.astype(np.int64)).to(self.device))
        # The truth's score where its block's GEMM does not see it (same dtype, its rounding).
        truth_score = (q.float() * self.vectors[truth].float()).sum(dim=1)  # (Q,)
        best_s = torch.full((n_q, 0), -torch.inf, device=self.device)
        best_i = torch.zeros((n_q, 0), dtype=torch.int64, device=self.device)
        above = torch.zeros(n_q, dtype=torch.int64, device=self.device)
        query_ids = torch.arange(n_q, device=self.device)
        for lo in range(0, len(self), self.block):
            block = self.vectors[lo:lo + self.block]  # (P, D)
            scores = (q @ block.T).float()  # (Q, P)
            if excl is not None:
                _mask(scores, query_ids, excl - lo)
            top_s, top_i = scores.topk(min(k, scores.shape[1]), dim=1)
            best_s, order = torch.cat([best_s, top_s], dim=1).topk(
                min(k, best_s.shape[1] + top_s.shape[1]), dim=1)
            best_i = torch.cat([best_i, top_i + lo], dim=1).gather(1, order)
            own = truth - lo
            inside = (own >= 0) & (own < scores.shape[1])
            ref = torch.where(inside, scores[query_ids, own.clamp(0, scores.shape[1] - 1)],
                              truth_score)
            _mask(scores, query_ids, own[:, None])
            above += (scores > ref[:, None]).sum(dim=1)
        return best_s.cpu().numpy(), best_i.cpu().numpy(), (above + 1).cpu().numpy()


def _mask(scores: torch.Tensor, query_ids: torch.Tensor, columns: torch.Tensor) -> None:
    """Set ``scores[q, columns[q, j]]`` to -inf where the column falls inside this block."""
    inside = (columns >= 0) & (columns < scores.shape[1])
    rows = query_ids[:, None].expand_as(columns)
    scores[rows[inside], columns[inside]] = -torch.inf
