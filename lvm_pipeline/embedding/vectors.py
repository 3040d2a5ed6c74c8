"""Row-wise operations on arrays of embedding vectors, each implemented once.

Every module that normalises rows, compares them by cosine or draws a seeded sample of row
numbers calls these: two copies of a normalisation with different epsilons, or two samplers
with different sorting, give two answers to the same question.
"""

from __future__ import annotations

import numpy as np

# Below this norm a row is treated as zero and left at zero by :func:`unit_rows` instead of
# being blown up to noise (float32 rows of real encoders have norms near 1 or tens).
EPS = 1e-12


def row_norms(x: np.ndarray) -> np.ndarray:
    """L2 norm of each row, accumulated in float64. x: (..., D) any float → (...,) float64."""
    return np.sqrt(np.einsum("...d,...d->...", x, x, dtype=np.float64))


def unit_rows(x: np.ndarray, eps: float = EPS) -> np.ndarray:
    """Each row divided by its norm: (..., D) any float (a memory map is fine) → (..., D)
    float32, C-contiguous (what FAISS takes without a copy).

    Norms and quotients are computed in float64 and rounded once, so a float32 row is unit
    to ~1e-7. Rows with norm < ``eps`` stay zero; a caller for whom a zero row is an error
    (an encoder's output) checks :func:`row_norms` itself.
    """
    norms = np.maximum(row_norms(x), eps)[..., None]  # (..., 1)
    out = np.empty(np.shape(x), dtype=np.float32)
    np.divide(x, norms, out=out, casting="same_kind")  # float64 loop, buffered: no full copy
    return out


def rowwise_cos(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Cosine of matching rows of (..., D) arrays → (...,) float64, computed in float64 so
    that 0.99 against 0.9899 is decided exactly; a zero row has cosine 0."""
    num = np.einsum("...d,...d->...", a, b, dtype=np.float64)
    den = row_norms(a) * row_norms(b)
    return np.where(den > 0, num / np.maximum(den, 1e-300), 0.0)


def sample_rows(n: int, size: int, seed: int) -> np.ndarray:
    """Seeded sample of ``min(size, n)`` distinct row numbers of ``range(n)``: (S,) int64,
    sorted (sequential reads from a memory map, and the same rows whatever the caller)."""
    return np.sort(np.random.default_rng(seed).choice(n, size=min(size, n), replace=False))
