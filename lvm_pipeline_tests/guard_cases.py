"""Shared cases of the guard unit tests: seeded synthetic payloads and their windows, and
modified copies that break one thing at a time."""

from __future__ import annotations

import numpy as np
import pandas as pd

from lvm_pipeline.payload.payload import Payload
from lvm_pipeline.sequences.windows import SequenceSet, SplitConfig, build_windows
from lvm_pipeline_tests.conftest import synthetic_table, synthetic_vectors


def train_windows(payload: Payload) -> SequenceSet:
    """The payload's native train split."""
    return build_windows(payload, SplitConfig())["train"]


def modified_copy(payload: Payload, vectors: np.ndarray | None = None,
                  chunks: pd.DataFrame | None = None) -> Payload:
    """A modified copy of a payload (not published): unit tests break one thing at a time."""
    return Payload(np.array(payload.vectors) if vectors is None else vectors,
                   payload.chunks.copy() if chunks is None else chunks,
                   {**payload.manifest, "build_id": "f" * 64})


def sound_payload(n_articles: int = 12, dim: int = 32) -> Payload:
    """An in-memory payload of ``n_articles`` × 10 chunks that passes every payload guard."""
    lengths = [10] * n_articles
    return Payload(synthetic_vectors(lengths, dim, seed=3), synthetic_table(lengths),
                   {"build_id": "a" * 64, "embedder": {"id": "synthetic"}})
