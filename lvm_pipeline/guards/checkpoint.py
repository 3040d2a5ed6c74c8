"""Checkpoint guards: what a checkpoint must be before anything scores it, and the bar it should
clear.

- :func:`check_weights_finite`: every weight is a finite number (a NaN anywhere makes every
  prediction NaN, and a report would rank NaN vectors);
- :func:`check_trained_on_named_sequences`: the training set the checkpoint names is in the
  store, intact, and indexes the payload the checkpoint names (a checkpoint whose lineage
  points nowhere cannot be audited or retrained);
- :func:`check_beats_copy_last_on_val`: its best val MRR@10 is above copy-last's on the same val
  windows. Not a data defect, so the Dagster check warns instead of blocking: a tiny corpus or
  a short run can leave a model at copy-last, and that is a finding, not an error.
"""

from __future__ import annotations

import numpy as np

from lvm_pipeline.guards.result import GuardResult, verdict
from lvm_pipeline.store import ArtifactError, ArtifactStore, Build, kinds


def _training():
    """The checkpoint format's module, imported when a guard runs: the training loop imports
    the guards (it refuses misaligned windows itself), so the guards cannot import it first."""
    from lvm_pipeline.training import checkpoint

    return checkpoint


def check_weights_finite(build: Build, name: str = "check_weights_finite") -> GuardResult:
    """Every tensor of ``model.safetensors`` is finite."""
    from safetensors.numpy import load_file

    state = load_file(str(build.file(_training().WEIGHTS)))
    bad = {key: int((~np.isfinite(value)).sum()) for key, value in state.items()
           if not np.isfinite(value).all()}
    total = sum(v.size for v in state.values())
    message = verdict(
        not bad, f"all {total:,} weights of {len(state)} tensors finite ({build.build_id[:12]})",
        f"NON-FINITE WEIGHTS: {sum(bad.values()):,} of {total:,} in {len(bad)} tensors of "
        f"{build.path}; its predictions would be NaN: retrain it")
    return GuardResult(name, not bad, "every weight of the checkpoint is a finite number",
                       float(sum(bad.values())), 0.0, message,
                       [f"{k}: {n} non-finite" for k, n in sorted(bad.items())[:5]],
                       {"tensors": len(state), "weights": total}, measure="non_finite_weights")


def check_trained_on_named_sequences(store: ArtifactStore, build: Build,
                                     name: str = "check_trained_on_its_sequences") -> GuardResult:
    """The training set the checkpoint names (manifest and checkpoint.json agree) is in the
    store, matches its hashes, and indexes the payload the checkpoint names."""
    info = _training().checkpoint_info(build)
    named = build.manifest.get("upstream", {}).get(kinds.TRAIN_SEQUENCES)
    payload = build.manifest.get("payload_build_id")
    rule = ("the checkpoint names one training set, present and intact, over the payload it "
            "names")
    problems = []
    if named is None or info.get("sequences_build_id") != named:
        problems.append(f"manifest names sequences {str(named)[:12]}, checkpoint.json "
                        f"{str(info.get('sequences_build_id'))[:12]}")
    else:
        try:
            sequences = store.get(kinds.TRAIN_SEQUENCES, named)
            sequences.verify()
            if sequences.manifest.get("payload_build_id") != payload:
                problems.append(f"sequences {named[:12]} index payload "
                                f"{str(sequences.manifest.get('payload_build_id'))[:12]}, the "
                                f"checkpoint names payload {str(payload)[:12]}")
        except ArtifactError as err:
            problems.append(str(err))
    message = verdict(not problems,
                      f"trained on sequences {str(named)[:12]} over payload {str(payload)[:12]}",
                      "LINEAGE BROKEN: " + "; ".join(problems))
    return GuardResult(name, not problems, rule, float(len(problems)), 0.0, message, problems,
                       {"sequences": named, "payload": payload}, measure="lineage_problems")


def check_beats_copy_last_on_val(build: Build,
                                 name: str = "check_beats_copy_last_on_val") -> GuardResult:
    """The kept epoch's val MRR@10 is above copy-last's on the same val windows."""
    info = _training().checkpoint_info(build)
    best = info["history"][info["best_epoch"]]["val_mrr_at_10"]
    bar = info.get("copy_last_val_mrr_at_10")
    rule = "the kept epoch's val MRR@10 is above copy-last's on the same val windows"
    if bar is None:
        return GuardResult(name, False, rule, best, None,
                           "cannot compare: the checkpoint predates the copy-last figure; "
                           "retrain it", measure="best_val_mrr_at_10")
    passed = best > bar
    message = verdict(passed, f"val MRR@10 {best:.4f} > copy-last {bar:.4f}",
                      f"NOT ABOVE COPY-LAST: val MRR@10 {best:.4f} <= copy-last {bar:.4f}: "
                      "the network adds nothing a copy of the last context does not (more "
                      "data or epochs, or a report will show it indistinguishable)")
    return GuardResult(name, passed, rule, best, bar, message, [],
                       {"best_epoch": info["best_epoch"] + 1, "copy_last": bar},
                       measure="best_val_mrr_at_10")
