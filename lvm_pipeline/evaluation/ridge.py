"""Closed-form ridge regression from the 5 flattened context vectors to the target vector.

Two callers fit it: the ``ridge`` baseline of every report (:mod:`lvm_pipeline.evaluation.baselines`) and
the learnability guard's smoke predictor (:mod:`lvm_pipeline.guards.learnability`). Both build
the normal equations with :func:`normal_equations` and solve them with :func:`solve_ridge` over
the one penalty grid :data:`PENALTIES`; each picks its penalty its own way (the baseline by val
MRR@10, the guard on held-out train articles).

The fit minimises ``|X W - Y|² + λ |W - W0|²`` with X (n, 5D) the flattened contexts, Y (n, D)
the targets and ``λ = penalty · n``. ``W0`` is what a large penalty shrinks towards: zero for
the baseline, :func:`copy_last_prior` (the last context copied) for the guard.
"""

from __future__ import annotations

import numpy as np
from scipy.linalg import cho_factor, cho_solve
from scipy.linalg.blas import dsyrk

from lvm_pipeline.payload import gather
from lvm_pipeline.sequences import CONTEXT, SequenceSet

# Penalties per training window (λ = penalty · n): XᵀX grows with n, so one value regularises
# a 300-window and a 450k-window fit alike. The grid spans what each caller needs: 1 keeps a
# few hundred windows (1,920 features at 384-d) at copy-last instead of fitting noise; 1e-3
# lets a few thousand learn beyond it; 1e-5 leaves a fit of hundreds of thousands of windows
# nearly unregularised (it is well determined there).
PENALTIES = (1e-5, 1e-4, 1e-3, 1e-2, 1e-1, 1.0)
# Windows per block of the normal equations: a block's float64 contexts are BLOCK × 5D × 8
# bytes (126 MB at 768-d), small beside the payload, so no (n, 5D) copy is ever held at once.
BLOCK = 4096


def normal_equations(vectors: np.ndarray, seqs: SequenceSet, rows: np.ndarray | None = None
                     ) -> tuple[np.ndarray, np.ndarray]:
    """XᵀX (5D, 5D) and XᵀY (5D, D), float64, over windows ``rows`` of ``seqs`` (all if None).

    vectors: (R, D) payload (a memory map is fine). Float64, because float32 sums over a block
    put errors of ~0.1 on entries that the smallest penalties must dominate. XᵀX is symmetric,
    so BLAS ``dsyrk`` computes one triangle: half a GEMM's work.
    """
    dim = vectors.shape[1]
    rows = np.arange(len(seqs)) if rows is None else np.asarray(rows, dtype=np.int64)
    xtx = np.zeros((CONTEXT * dim, CONTEXT * dim), order="F")  # dsyrk accumulates in place
    xty = np.zeros((CONTEXT * dim, dim))
    for lo in range(0, len(rows), BLOCK):
        idx = rows[lo:lo + BLOCK]
        x = gather(vectors, seqs.context_rows[idx]).reshape(len(idx), CONTEXT * dim)  # (b, 5D)
        x = x.astype(np.float64)  # C order, so x.T is Fortran order: no copy for BLAS
        xtx = dsyrk(1.0, x.T, beta=1.0, c=xtx, overwrite_c=True)  # upper triangle += xᵀx
        xty += x.T @ gather(vectors, seqs.target_row[idx])
    return np.triu(xtx) + np.triu(xtx, 1).T, xty


def copy_last_prior(dim: int) -> np.ndarray:
    """W0 (5D, D) with ``X @ W0`` = the last context vector: the copy-last predictor."""
    prior = np.zeros((CONTEXT * dim, dim))
    prior[(CONTEXT - 1) * dim:] = np.eye(dim)
    return prior


def solve_ridge(xtx: np.ndarray, xty: np.ndarray, penalty: float, n: int,
                prior: np.ndarray | None = None) -> np.ndarray:
    """W = (XᵀX + λI)⁻¹ (XᵀY + λ W0), λ = ``penalty`` · ``n``: (5D, D) float64.

    By Cholesky, since XᵀX + λI is symmetric positive definite for λ > 0. ``n`` is the number
    of windows summed into ``xtx``; it must be >= 1 (an empty fit has nothing to solve).
    """
    if n < 1 or penalty <= 0:
        raise ValueError(f"ridge needs >= 1 window and a penalty > 0, got {n} windows and "
                         f"penalty {penalty}")
    lam = penalty * n
    rhs = xty if prior is None else xty + lam * prior
    return cho_solve(cho_factor(xtx + lam * np.eye(len(xtx))), rhs)
