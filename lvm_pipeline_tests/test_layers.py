"""House rule 1: the domain modules import without Dagster (the torchrun worker may use the
standalone ``dagster_pipes`` package, which is not Dagster)."""

from __future__ import annotations

import subprocess
import sys

DOMAIN = ["artifacts", "corpus", "sample_corpus", "embedding", "payload", "sequences", "guards",
          "alignment", "models", "training", "checkpoint", "index", "evaluation", "report",
          "progress", "device", "distributed", "train_worker"]


def test_domain_modules_never_import_dagster():
    code = ("import sys\n"
            + "".join(f"import lvm_pipeline.{m}\n" for m in DOMAIN)
            + "bad = [m for m in sys.modules if m == 'dagster' or m.startswith('dagster.')]\n"
            + "assert not bad, bad\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
