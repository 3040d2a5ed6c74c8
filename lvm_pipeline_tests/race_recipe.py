"""One of two `lvm materialize faiss_index` runs that compute the same recipe at once:

    python -m lvm_pipeline_tests.race_recipe ROLE DATA_DIR BARRIERS

ROLE is A or B. Each run computes the index (no build of its recipe exists yet), and when its
publish has looked for a build of that id in place and found none, it waits until the other
run has looked too: both then move their staged folder into the same place, the worst
interleaving two runs of one recipe can have. The barriers are files in BARRIERS
(lvm_pipeline_tests/race.py). Output and exit code are `lvm materialize`'s.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from lvm_pipeline.cli import main as lvm
from lvm_pipeline.store import ArtifactStore, kinds
from lvm_pipeline_tests.race import FileBarriers

CHECKED = "{role}_found_no_index_in_place"


def install(role: str, barriers: FileBarriers) -> None:
    """Hold this run's publish of the index between its look for the build in place and its
    move into place until the other run has looked as well."""
    other = "B" if role == "A" else "A"
    sound = ArtifactStore._sound

    def looked_then_wait(self: ArtifactStore, kind: str, folder: Path, build_id: str) -> Any:
        found = sound(self, kind, folder, build_id)
        if kind == kinds.INDEX and found is None:
            barriers.set(CHECKED.format(role=role))
            barriers.wait(CHECKED.format(role=other))
        return found

    ArtifactStore._sound = looked_then_wait


def main(role: str, data_dir: str, barriers: str) -> int:
    install(role, FileBarriers(Path(barriers)))
    return lvm(["materialize", "faiss_index", "--data-dir", data_dir])


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:]))
