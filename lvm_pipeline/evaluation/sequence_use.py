"""Does a model use the sequence, or is it a blend of its inputs? Per-model diagnostics.

An LVM with ``context_skip`` predicts ``normalise(blend + correction)``: ``blend`` is its five
learned mixing weights applied to the context, ``correction`` its network's head output
(:meth:`lvm_pipeline.models.LVM.forward_parts`). On real documentation the network's correction
alone retrieved nothing (docs/evaluation.md, "A recipe on real text"): the gain over copy-last
came from the blend. So every report shows, per model:

- ``context_mix``: the learned mixing weights (None without ``context_skip``);
- the network's share: the mean norm of the correction against the mean norm of the blend,
  before normalising (``correction_to_blend`` is the ratio of the two means);
- the retrieval figures (MRR@10, R@5) of each path alone: the network (the head output,
  normalised) and the blend (normalised);
- order: MRR@10 with the five contexts of each query shuffled by a fixed seeded permutation
  per query, and the drop from the model's own MRR@10. A model that reads the order loses; a
  blend loses only through its unequal weights.

Ranks only (:func:`lvm_pipeline.evaluation.ranks_only`): these query sets need MRR@10 and R@5,
not the report's top-50 diagnostics, so they cost one exact pass and no more. A path that is
zero for a query (a head still at its zero init) has no direction: it scores every row alike,
and the truth, winning ties, would rank 1. Such a query counts as the last rank instead.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from lvm_pipeline.embedding import EPS, row_norms, unit_rows
from lvm_pipeline.evaluation.metrics import EvalConfig, mrr_at_k, ranks_only
from lvm_pipeline.models import LVM
from lvm_pipeline.payload import gather
from lvm_pipeline.sequences import SequenceSet

SHUFFLE_SEED = 0


def shuffled_order(n: int, context: int, seed: int = SHUFFLE_SEED) -> np.ndarray:
    """One seeded permutation of the ``context`` positions per query: (n, context) int64."""
    rng = np.random.default_rng(seed)
    return rng.permuted(np.tile(np.arange(context), (n, 1)), axis=1)


@torch.no_grad()
def model_parts(model: LVM, vectors: np.ndarray, seqs: SequenceSet, batch_size: int = 1024,
                order: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Blend and correction of every window (N, D) float32 each, before normalising; with
    ``order`` (N, 5) the contexts of window i are read in the order ``order[i]``."""
    model.eval()
    rows = seqs.context_rows if order is None else np.take_along_axis(seqs.context_rows, order, 1)
    blends, corrections = [], []
    for lo in range(0, len(seqs), batch_size):
        context = torch.from_numpy(gather(vectors, rows[lo:lo + batch_size]))  # (B, 5, D)
        blend, correction = model.forward_parts(context)
        blends.append(blend.float().numpy())
        corrections.append(correction.float().numpy())
    empty = np.empty((0, vectors.shape[1]), np.float32)
    return (np.concatenate(blends) if blends else empty,
            np.concatenate(corrections) if corrections else empty)


def measure_sequence_use(models: dict[str, LVM], vectors: np.ndarray, seqs: SequenceSet,
                 model_mrr_at_10: dict[str, float], config: EvalConfig | None = None
                 ) -> dict[str, dict[str, Any]]:
    """Per model (module docstring): report.json's ``sequence_use``. ``model_mrr_at_10``: each
    model's own MRR@10 on ``seqs`` (the report's), from which the shuffle's drop is taken."""
    config = config or EvalConfig()
    order = shuffled_order(len(seqs), seqs.context_rows.shape[1])
    predictions: dict[str, np.ndarray] = {}
    norms: dict[str, tuple[float, float]] = {}
    for name, model in models.items():
        blend, correction = model_parts(model, vectors, seqs, config.batch_size)
        norms[name] = float(row_norms(blend).mean()), float(row_norms(correction).mean())
        predictions[f"{name}/network"] = unit_rows(correction)
        if model.config.context_skip:
            predictions[f"{name}/blend"] = unit_rows(blend)
        predictions[f"{name}/shuffled"] = unit_rows(np.add(
            *model_parts(model, vectors, seqs, config.batch_size, order)))
    ranks = {key: np.where(row_norms(p) < EPS, vectors.shape[0], r)  # zero: no direction
             for (key, p), r in zip(predictions.items(),
                                    ranks_only(predictions, vectors, seqs, config).values(),
                                    strict=True)}

    def figures(key: str) -> dict[str, float] | None:
        r = ranks.get(key)
        return None if r is None else {"mrr_at_10": mrr_at_k(r), "r_at_5": float(np.mean(r <= 5))}

    out = {}
    for name, model in models.items():
        blend_norm, correction_norm = norms[name]
        shuffled = mrr_at_k(ranks[f"{name}/shuffled"])
        out[name] = {
            "context_mix": (model.context_mix.detach().tolist() if model.config.context_skip
                            else None),
            "blend_norm_mean": blend_norm, "correction_norm_mean": correction_norm,
            "correction_to_blend": correction_norm / blend_norm if blend_norm > 0 else None,
            "network_only": figures(f"{name}/network"), "blend_only": figures(f"{name}/blend"),
            "shuffled_mrr_at_10": shuffled,
            "shuffle_drop_mrr_at_10": model_mrr_at_10[name] - shuffled,
            "shuffle_seed": SHUFFLE_SEED}
    return out


def _pair(figs: dict[str, float] | None) -> str:
    return "–" if figs is None else f"{figs['mrr_at_10']:.3f} / {figs['r_at_5']:.3f}"


def sequence_use_markdown(use: dict[str, dict[str, Any]]) -> str:
    """The diagnostics as a Markdown table (report.md, `lvm report`)."""
    lines = ["| model | mixing weights (oldest → last) | ‖correction‖ / ‖blend‖ | network "
             "alone MRR@10 / R@5 | blend alone MRR@10 / R@5 | shuffled MRR@10 (drop) |",
             "|---|---|---|---|---|---|"]
    for name, u in use.items():
        mix = "–" if u["context_mix"] is None else " ".join(f"{w:+.2f}" for w in u["context_mix"])
        ratio = "–" if u["correction_to_blend"] is None else f"{u['correction_to_blend']:.3f}"
        lines.append(f"| {name} | {mix} | {ratio} | {_pair(u['network_only'])} | "
                     f"{_pair(u['blend_only'])} | {u['shuffled_mrr_at_10']:.3f} "
                     f"({u['shuffle_drop_mrr_at_10']:+.3f}) |")
    return "\n".join(lines)


def describe_sequence_use(name: str, u: dict[str, Any]) -> list[str]:
    """Lines for `lvm diagnose NAME`."""
    mix = ("none (no context skip)" if u["context_mix"] is None
           else ", ".join(f"{w:+.3f}" for w in u["context_mix"]) + " (oldest → last context)")
    ratio = ("–" if u["correction_to_blend"] is None
             else f"{u['correction_to_blend']:.3f}")
    return [f"Does {name} use the sequence?",
            f"  mixing weights: {mix}",
            f"  mean norm of the network's correction {u['correction_norm_mean']:.3f} vs the "
            f"blend's {u['blend_norm_mean']:.3f} (ratio {ratio}, before normalising)",
            f"  network path alone: MRR@10 / R@5 {_pair(u['network_only'])}; blend alone: "
            f"{_pair(u['blend_only'])}",
            f"  contexts shuffled (seed {u['shuffle_seed']}): MRR@10 {u['shuffled_mrr_at_10']:.3f}"
            f", {u['shuffle_drop_mrr_at_10']:+.3f} below the model's own"]
