"""Choosing the torch device explicitly: asking for one that is absent raises, never falls back."""

from __future__ import annotations

import torch

DEVICES = ("cpu", "cuda", "mps", "auto")


def pick_device(requested: str) -> str:
    """``auto`` → ``cuda`` when torch sees a GPU, else ``cpu`` (the caller records the result);
    a named device that is absent raises with the reason."""
    if requested not in DEVICES:
        raise ValueError(f"unknown device {requested!r}; valid: {', '.join(DEVICES)}")
    if requested == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if requested == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device 'cuda' requested but torch {torch.__version__} sees no CUDA "
                         "GPU; use device 'cpu' or install a CUDA build of torch")
    if requested == "mps" and not torch.backends.mps.is_available():
        raise ValueError("device 'mps' requested but this machine has no Apple GPU")
    return requested
