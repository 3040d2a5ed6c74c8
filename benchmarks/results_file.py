"""How a benchmark ends: its results as JSON first, so a summary that fails loses no
measurement, then the summary it prints. No torch or package import: every benchmark,
torch-only ones included, can use it."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any


def write_results(out: Path, results: dict[str, Any],
                  summary: Callable[[dict[str, Any]], str]) -> None:
    """Write ``results`` to ``out`` (folders made), say where, then print ``summary`` of it."""
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {out}\n")
    print(summary(results))
