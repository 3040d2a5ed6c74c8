"""One run of the lineage race as its own process, the way two `lvm` processes overlap:

    python -m lvm_pipeline_tests.race_run ROLE DATA_DIR BARRIERS OUT.json [CORPUS_DIR]

Role A materializes ``corpus*`` (from the ``.txt`` folder CORPUS_DIR), role B
``aligned_training_sequences*``; both with the file barriers of :mod:`lvm_pipeline_tests.race`
in BARRIERS. OUT.json gets what the run materialized: asset → its metadata values. (Two threads
of one process would share Python's logging locks, which Dagster's run setup reconfigures.)
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import dagster as dg

from lvm_pipeline.cli.run_config import TrainingSequencesParams
from lvm_pipeline_tests import race
from lvm_pipeline_tests.conftest import materialize_all, materialized_metadata, step_errors

SELECTIONS = {"A": dg.AssetSelection.assets("corpus").downstream(),
              "B": dg.AssetSelection.assets("aligned_training_sequences").downstream()}
TRAINING = {"epochs": 1, "batch_size": 32}
# B computes its training sequences although the small run made that recipe: a reused step
# never builds windows, where B waits for A's payload (what `lvm materialize --rebuild` asks).
OPS = {"A": None, "B": {"aligned_training_sequences": TrainingSequencesParams(rebuild=True)}}


def main(role: str, data_dir: str, barriers: str, out: str, corpus: str | None = None) -> int:
    race.install(setattr, lambda: role, race.FileBarriers(Path(barriers)))
    corpus_config = {"source": "text_dir", "path": corpus} if corpus else None
    result = materialize_all(Path(data_dir), selection=SELECTIONS[role], corpus=corpus_config,
                             training=TRAINING, ops=OPS[role])
    built = {asset: {k: v for k, v in meta.items() if isinstance(v, (str, int, float))}
             for asset, meta in materialized_metadata(result).items()}
    Path(out).write_text(json.dumps({"success": result.success, "errors": step_errors(result),
                                     "built": built}))
    return 0 if result.success else 1


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:]))
