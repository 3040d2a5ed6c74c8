"""Every guard threshold in one frozen config, each default with where it comes from.

The figures behind the thresholds: benchmarks/RESULTS.md, "Guard thresholds: the figures
behind them"; each threshold's reason in a table: docs/guards.md, "Thresholds".
"""

from __future__ import annotations

from dataclasses import dataclass

from lvm_pipeline.sequences import NEAR_DUPLICATE_COSINE

# Cosine above which two unit vectors count as "the same chunk". Re-embedding the same text
# with the same model lands within float rounding of 1; two different chunks of one article,
# and vectors of the same text from another encoder, sit far below 0.99.
MIN_ALIGNMENT_COSINE = 0.99
# Rows normalised in float64 and stored as float32 are unit to ~1e-7; an encoder whose output
# was never normalised is off by tens of percent. 1e-3 sits far from both.
MAX_NORM_ERROR = 1e-3
# Texts the canary re-embeds: seconds on two CPU cores, and 64 independent chances to see an
# encoder whose outputs differ (the same weights with another pooling fall far below the bar).
CANARY_SAMPLE = 64
# Same text, same encoder: within float rounding of 1, and a CPU against CUDA differ far less
# than 0.01; another configuration of the same weights falls far below 0.99.
MIN_CANARY_COSINE = 0.99
# The learnability smoke test asks for Contain@k of a ridge predictor >= ratio × chance.
LEARNABILITY_K = 50
MIN_LEARNABILITY_RATIO = 10.0
# Caps that keep the smoke test at seconds on a 500k-window corpus; it is a smoke test.
LEARNABILITY_MAX_WINDOWS = 20000
LEARNABILITY_MAX_QUERIES = 2000
# A flat index must find every sampled row itself (or a byte-identical row).
MIN_INDEX_SELF_RECALL = 0.99
# Payload rows the index guard searches for themselves.
INDEX_SAMPLE = 256


@dataclass(frozen=True)
class GuardConfig:
    """Every guard threshold in one place; written into check metadata next to each figure."""

    min_alignment_cosine: float = MIN_ALIGNMENT_COSINE
    max_norm_error: float = MAX_NORM_ERROR
    canary_sample: int = CANARY_SAMPLE
    min_canary_cosine: float = MIN_CANARY_COSINE
    near_duplicate_cosine: float = NEAR_DUPLICATE_COSINE
    learnability_k: int = LEARNABILITY_K
    min_learnability_ratio: float = MIN_LEARNABILITY_RATIO
    learnability_max_windows: int = LEARNABILITY_MAX_WINDOWS
    learnability_max_queries: int = LEARNABILITY_MAX_QUERIES
    min_index_self_recall: float = MIN_INDEX_SELF_RECALL
    seed: int = 0

    def __post_init__(self) -> None:
        if self.canary_sample < 1 or self.learnability_k < 1:
            raise ValueError(f"canary_sample and learnability_k must be >= 1: {self}")
