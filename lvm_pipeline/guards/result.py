"""What every guard returns (:class:`GuardResult`), the error a consumer raises on a failed
one (:class:`GuardError`), and the few helpers the guards share."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

# Offending rows a guard lists as evidence; the counts cover the rest.
N_EXAMPLES = 5
# Windows per block when gathering vectors, so 500k windows never sit in RAM at once: a block's
# contexts and their float64 copies grow with it, and a block 8x larger was the guards' memory
# peak at reference scale (benchmarks/RESULTS.md, "Figures behind code defaults").
BLOCK = 4096


class GuardError(RuntimeError):
    """Raised by a consuming asset when a guard fails; the message is the guard's message."""


@dataclass(frozen=True)
class GuardResult:
    """Outcome of one guard: pass/fail, the measured figure against its threshold, evidence.
    ``measure`` names what ``figure`` is (``min_cosine_to_payload``, ``broken_keys``…), the
    label a person reads beside the number."""

    name: str
    passed: bool
    rule: str
    figure: float | None
    threshold: float | None
    message: str
    examples: list[str] = field(default_factory=list)
    details: dict[str, Any] = field(default_factory=dict)
    measure: str = "figure"

    def raise_if_failed(self) -> None:
        if not self.passed:
            raise GuardError(self.full_message())

    def full_message(self) -> str:
        tail = "".join(f"\n  - {e}" for e in self.examples)
        return f"{self.name}: {self.message}{tail}"


def blocks(n: int, size: int = BLOCK) -> Iterator[slice]:
    """Consecutive slices of at most ``size`` covering ``range(n)``."""
    for lo in range(0, n, size):
        yield slice(lo, min(lo + size, n))


def verdict(passed: bool, ok: str, bad: str) -> str:
    return ok if passed else bad
