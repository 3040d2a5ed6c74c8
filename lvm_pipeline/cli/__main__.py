"""``python -m lvm_pipeline.cli`` = ``lvm`` (for environments without the console script)."""

import sys

from lvm_pipeline.cli import main

sys.exit(main())
