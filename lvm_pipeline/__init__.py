"""lvm-pipeline: train latent vector models on data that is aligned by construction.

The domain modules here (corpus, embedding, payload, sequences, guards, models, training, index,
evaluation, report) import without Dagster, so a notebook or a `torchrun` worker uses them
directly; `lvm_pipeline.defs` is the thin Dagster layer on top.
"""

__version__ = "0.1.0"
