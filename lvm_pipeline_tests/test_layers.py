"""House rules on layers: the domain modules import without Dagster (the torchrun worker may use the
standalone ``dagster_pipes`` package, which is not Dagster), and nothing uses Dagster's private API."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import lvm_pipeline

DOMAIN = ["artifacts", "corpus", "sample_corpus", "embedding", "embedding_cache", "payload",
          "sequences", "guards", "alignment", "models", "training", "checkpoint", "index",
          "evaluation", "report", "report_render", "lineage", "progress", "device",
          "distributed", "train_worker", "trained_baselines", "bootstrap", "sequence_use",
          "tracking"]


def test_domain_modules_never_import_dagster():
    code = ("import sys\n"
            + "".join(f"import lvm_pipeline.{m}\n" for m in DOMAIN)
            + "bad = [m for m in sys.modules if m == 'dagster' or m.startswith('dagster.')]\n"
            + "assert not bad, bad\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_the_package_uses_no_private_dagster_api():
    """Dagster's ``dagster._…`` modules change without notice between releases."""
    package = Path(lvm_pipeline.__file__).parent
    offenders = [f"{path.relative_to(package)}:{n}" for path in sorted(package.rglob("*"))
                 if path.suffix in (".py", ".yaml")
                 for n, line in enumerate(path.read_text().splitlines(), 1)
                 if "dagster._" in line]
    assert not offenders, offenders
