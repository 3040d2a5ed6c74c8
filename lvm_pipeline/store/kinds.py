"""Every artifact kind, once: the folder a kind's builds live in under the data root.

A kind names what a build holds, and lineage readers (the report's, the checks') look builds
up by kind, so two spellings of one kind would be two stores.
"""

CORPUS = "corpus"
PAYLOAD = "payload"
TRAIN_SEQUENCES = "sequences/train"
EVAL_SEQUENCES = "sequences/eval"
INDEX = "index"
REPORT = "report"
# The report's trained baselines (report/trained_baselines.py), kept so that a report whose
# own code changed scores the same baselines without training them again.
TRAINED_BASELINES = "baselines"


def checkpoint(variant: str) -> str:
    """The kind of one LVM variant's checkpoints: ``models/<variant>``."""
    return f"models/{variant}"
