"""The per-epoch resume file: everything a rerun needs to continue where a run stopped.

After every epoch the full state (weights, optimizer, history, best weights, the epoch) is
written atomically to ``work_dir/resume.pt``; a rerun with the same inputs loads it and ends at
the same weights as an uninterrupted run, because each epoch's shuffle and negatives are seeded
by ``(seed, epoch[, step])`` (:mod:`lvm_pipeline.training.batching`). Loaded with ``weights_only=True``:
a resume file is tensors and plain containers, and one that needs unpickling code is refused.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

RESUME_FILE = "resume.pt"


def load_resume(work_dir: Path | None, device: str) -> dict[str, Any] | None:
    """The state the last finished epoch saved in ``work_dir``, or None when there is none."""
    if work_dir is None or not (work_dir / RESUME_FILE).exists():
        return None
    return torch.load(work_dir / RESUME_FILE, map_location=device, weights_only=True)


def save_resume(work_dir: Path, state: dict[str, Any]) -> None:
    """Write ``state`` so that a reader sees the previous file or this one, never half of one."""
    work_dir.mkdir(parents=True, exist_ok=True)
    path = work_dir / RESUME_FILE
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)
