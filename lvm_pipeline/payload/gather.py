"""Payload row indices → vectors: the one code path every reader of the payload goes through.

The trainer, the evaluator, the alignment check and the near-duplicate search all call
:func:`gather`, so the check measures exactly what training reads. It lives with the payload
because it is how the payload is read, by every later stage.
"""

from __future__ import annotations

import numpy as np


def gather(vectors: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """Payload vectors of ``rows`` (any shape S) → S + (D,) float32.

    vectors: (R, D), typically the memory-mapped payload. Sorting the rows first keeps reads
    from a memory map sequential.
    """
    flat = np.asarray(rows, dtype=np.int64).reshape(-1)
    order = np.argsort(flat, kind="stable")
    out = np.empty((flat.size, vectors.shape[1]), dtype=np.float32)
    out[order] = vectors[flat[order]]
    return out.reshape(*np.shape(rows), vectors.shape[1])
