"""The product's definitions with the race barriers of :mod:`lvm_pipeline_tests.race`
installed in the role of run A (file barriers in ``LVM_RACE_DIR``): the code location that the
webserver of the GraphQL race test serves, so the run it launches (in its own run worker
process) meets the CLI run in the test at the same points as two threads do."""

import os
from pathlib import Path

from lvm_pipeline.definitions import defs
from lvm_pipeline_tests import race

race.install(setattr, lambda: "A", race.FileBarriers(Path(os.environ["LVM_RACE_DIR"])))

__all__ = ["defs"]
