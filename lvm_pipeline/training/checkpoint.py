"""Trained LVM checkpoints: a safetensors ``state_dict`` plus a JSON of everything around it.

Files of a ``models/<variant>`` build: ``model.safetensors`` (tensors only: loading runs no
code) and ``checkpoint.json`` (model config, train config, history, the payload and sequences
builds it was trained on, device, timings). The artifact store hashes both.
:func:`publish_checkpoint` is the one way a trained model becomes a build
(:func:`lvm_pipeline.training.train_variant` calls it once, on rank 0).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from safetensors.torch import load_file, save_file

from lvm_pipeline.models import LVM, LVMConfig
from lvm_pipeline.store import ArtifactError, ArtifactStore, Build, kinds

WEIGHTS = "model.safetensors"
INFO = "checkpoint.json"




def save_checkpoint(folder: Path, model: LVM, info: dict[str, Any]) -> None:
    """Write weights and info into a staging folder (the store publishes it)."""
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(folder / WEIGHTS))
    (folder / INFO).write_text(json.dumps({"model_config": model.config.to_dict(), **info},
                                          indent=2, sort_keys=True) + "\n")


def publish_checkpoint(store: ArtifactStore, model: LVM, info: dict[str, Any],
                       upstream: dict[str, str], recipe: Mapping[str, Any] | None = None) -> Build:
    """Publish ``model`` and ``info`` as a ``models/<info["variant"]>`` build.

    ``info`` is what :func:`save_checkpoint` writes; its variant, size and payload build id go
    into the manifest too, so a build can be told apart without opening its files.
    ``upstream``: kind → build id of what the model was trained on (part of the build id).
    """
    kind = kinds.checkpoint(info["variant"])
    with store.stage(kind) as staged:
        save_checkpoint(staged, model, info)
        manifest = {key: info[key] for key in ("variant", "size", "payload_build_id")}
        return store.publish(kind, staged, manifest, upstream=upstream, recipe=recipe)


def checkpoint_info(build: Build, verify: bool = True) -> dict[str, Any]:
    """What :func:`save_checkpoint` wrote beside the weights, without loading them."""
    return json.loads(build.file(INFO, verify).read_text())


def load_checkpoint(build: Build, verify: bool = True) -> tuple[LVM, dict[str, Any]]:
    """The model (eval mode, CPU) and its info; weights must match the config exactly."""
    info = checkpoint_info(build, verify)
    model = LVM(LVMConfig.from_dict(info["model_config"]))
    state = load_file(str(build.file(WEIGHTS, verify)))
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as err:
        raise ArtifactError(f"{build.path / WEIGHTS}: weights do not fit the model config: "
                            f"{err}") from None
    return model.eval(), info
