"""The five LVM variants as named presets of one config, at two sizes.

``paper`` follows the reference project's sizes; ``tiny`` keeps each variant's layer pattern
at a size that trains in about a minute on two CPU cores (the default run and the tests).
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass, fields, replace
from typing import Any

from lvm_pipeline.models.scan import BACKENDS

VARIANTS = ("mamba_s", "mamba_h", "mamba_xl", "mamba_sandwich", "mamba_gr")
SIZES = ("tiny", "paper")
BLOCK_KINDS = ("mamba", "attn", "gru")


@dataclass(frozen=True)
class LVMConfig:
    """Architecture of one LVM. ``layout`` lists the blocks in order (see BLOCK_KINDS)."""

    variant: str
    size: str
    layout: tuple[str, ...]
    d_model: int
    d_state: int
    expand: int = 2
    d_conv: int = 4
    attn_heads: int = 4
    attn_window: int = 8
    gru_hidden: int = 256
    # The embedder's dim; set from the payload when a model is built for it.
    d_in: int = 384
    # Context chunks per window (the product's windows are 5 → 1).
    context: int = 5
    # Output = normalise(mix · context + head(h)), with mix starting at "copy the last context"
    # and head at zero: training starts from the copy-last baseline and must improve on it.
    # Without it the network must rebuild a whole embedding from its inputs, and loses to
    # copy-last: the tiny presets did on the default corpus, and so did a full-width network
    # on real text (docs/evaluation.md, "A recipe on real text").
    context_skip: bool = True
    # How the scan runs, not what it computes: every backend reads the same weights. "auto"
    # resolves per device (models/scan.py: mamba_ssm or triton on CUDA, else recompute), and
    # training records the backend it resolved to in the checkpoint.
    scan_backend: str = "auto"

    def __post_init__(self) -> None:
        unknown = set(self.layout) - set(BLOCK_KINDS)
        if unknown:
            raise ValueError(f"unknown block kind(s) {sorted(unknown)}; valid: {BLOCK_KINDS}")
        if self.scan_backend not in BACKENDS:
            raise ValueError(f"unknown scan backend {self.scan_backend!r}; valid: "
                             f"{', '.join(BACKENDS)}")

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "layout": list(self.layout)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> LVMConfig:
        names = {f.name for f in fields(cls)}
        unknown = set(data) - names
        if unknown:
            raise ValueError(f"unknown LVMConfig field(s) {sorted(unknown)}; valid: {sorted(names)}")
        return cls(**{**data, "layout": tuple(data["layout"])})

    def __str__(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    def layout_text(self) -> str:
        """How many blocks of each kind, in order of first use: ``"9 mamba + 3 attention"``."""
        return layout_text(self.layout)


def layout_text(layout: Sequence[str]) -> str:
    return " + ".join(f"{n} {kind}" for kind, n in Counter(layout).items())


def _m(n: int) -> tuple[str, ...]:
    return ("mamba",) * n


PRESETS: dict[tuple[str, str], LVMConfig] = {
    ("mamba_s", "paper"): LVMConfig("mamba_s", "paper", _m(8), d_model=256, d_state=128),
    ("mamba_h", "paper"): LVMConfig("mamba_h", "paper", ("mamba", "mamba", "mamba", "attn") * 3,
                                    d_model=320, d_state=128),
    ("mamba_xl", "paper"): LVMConfig("mamba_xl", "paper", _m(16), d_model=384, d_state=192),
    ("mamba_sandwich", "paper"): LVMConfig("mamba_sandwich", "paper",
                                           ("attn",) * 2 + _m(8) + ("attn",) * 2,
                                           d_model=320, d_state=160),
    ("mamba_gr", "paper"): LVMConfig("mamba_gr", "paper", ("mamba", "gru") * 10,
                                     d_model=288, d_state=144, gru_hidden=256),
    # tiny: same layer patterns, shrunk.
    ("mamba_s", "tiny"): LVMConfig("mamba_s", "tiny", _m(2), d_model=64, d_state=16),
    ("mamba_h", "tiny"): LVMConfig("mamba_h", "tiny", ("mamba", "mamba", "mamba", "attn"),
                                   d_model=64, d_state=16),
    ("mamba_xl", "tiny"): LVMConfig("mamba_xl", "tiny", _m(3), d_model=96, d_state=24),
    ("mamba_sandwich", "tiny"): LVMConfig("mamba_sandwich", "tiny",
                                          ("attn", "mamba", "mamba", "attn"),
                                          d_model=64, d_state=16),
    ("mamba_gr", "tiny"): LVMConfig("mamba_gr", "tiny", ("mamba", "gru") * 2,
                                    d_model=64, d_state=16, gru_hidden=64),
}


def preset(variant: str, size: str = "tiny", **overrides: Any) -> LVMConfig:
    """The named preset, with field overrides (e.g. ``d_in=768``); unknown names raise."""
    if variant not in VARIANTS:
        raise ValueError(f"unknown variant {variant!r}; valid: {', '.join(VARIANTS)}")
    if size not in SIZES:
        raise ValueError(f"unknown preset size {size!r}; valid: {', '.join(SIZES)}")
    names = {f.name for f in fields(LVMConfig)}
    unknown = set(overrides) - names
    if unknown:
        raise ValueError(f"unknown LVMConfig field(s) {sorted(unknown)}; valid: {sorted(names)}")
    return replace(PRESETS[(variant, size)], **overrides)
