"""Rebuild only what changed: a step whose recipe already made a build returns that build.

A step's recipe is its asset's code version, its resolved config (the settings that decide its
output: the embedder's fingerprint, the split, the device class a training runs on) and the
build ids of its inputs (:func:`step_recipe`). Builds are content-addressed and the store
remembers which recipe made which build (``ArtifactStore.build_for_recipe``), so a step with a
recipe it has seen re-hashes that build and returns it, with the same data version, instead of
computing it again; its checks still run, since they are the gate. Dagster itself does not skip
a step whose inputs' data versions are unchanged; here the data versions are content hashes, so
the step can.

A reused step re-hashes the builds it would have read (the build's upstream), so a damaged
input fails it as it fails a computing step. Never reused: a build that fails verification (it
is built anew), a build of other inputs or
another config or code (another recipe key), and anything asked for with ``rebuild: true``.
The corpus has no recipe: its input is the outside world, which it reads every time (an
unchanged source gives the same build id, so nothing downstream changes).
"""

import dataclasses
from collections.abc import Mapping
from typing import Any

import dagster as dg

from lvm_pipeline.defs.metadata import REUSE, build_output, materialization_of_build
from lvm_pipeline.defs.resources import EmbedderResource, GuardsResource
from lvm_pipeline.store import ArtifactStore, Build, recipe_key, sha256_json

REUSED = "reused the build of run {run} (same code, config and inputs)"


def step_recipe(context: dg.AssetExecutionContext, config: dg.Config | None,
                inputs: Mapping[str, Build | str], **settings: Any) -> dict[str, Any]:
    """The recipe of this step: the asset's code version, its config (``rebuild`` aside: it
    says whether to compute, not what), ``settings`` from resources that decide the output,
    and each input's build id (or a content hash for an input outside the store)."""
    code = context.assets_def.code_versions_by_key[context.asset_key]
    asked = {} if config is None else {k: v for k, v in config.model_dump().items()
                                       if k != "rebuild"}
    return {"asset": context.asset_key.to_user_string(), "code_version": code, "config": asked,
            "settings": dict(settings),
            "inputs": {name: value.build_id if isinstance(value, Build) else value
                       for name, value in sorted(inputs.items())}}


def guard_settings(embedder: EmbedderResource, guards: GuardsResource) -> dict[str, Any]:
    """What decides whether a step's input guards pass, for its recipe: the encoder its
    embedder canary re-embeds with and the guards' thresholds. A reused build skips the
    guards; it may, because the step that made it passed them on the same inputs (build ids
    are content hashes) with this encoder and these thresholds. Another encoder or threshold
    is another recipe, so the guards run again and refuse what they refused before."""
    encoder = embedder.load()
    identity = (encoder.output_identity() if hasattr(encoder, "output_identity")
                else encoder.identity())
    return {"canary_encoder": sha256_json(identity),
            "guards": dataclasses.asdict(guards.config())}


def reused_output(context: dg.AssetExecutionContext, store: ArtifactStore, kind: str,
                  recipe: Mapping[str, Any], rebuild: bool) -> dg.Output | None:
    """The output of a step whose recipe already made a sound build (its earlier
    materialization's figures, and where it came from), or None: compute it."""
    if rebuild:
        context.log.info("rebuild: true: computing even if this recipe made a build before")
        return None
    build = store.build_for_recipe(kind, recipe_key(recipe))
    if build is None:
        return None
    # What the step would have read must still be sound: a damaged input fails a reused step
    # as it fails a computing one, naming the file.
    for upstream_kind, upstream_id in sorted(build.manifest["upstream"].items()):
        store.get(upstream_kind, upstream_id).verify()
    earlier = materialization_of_build(context.instance, context.asset_key, build.build_id)
    run = earlier.run_id if earlier else "(not recorded in this instance)"
    figures = dict(earlier.asset_materialization.metadata) if earlier else {}
    figures[REUSE] = REUSED.format(run=run)
    return build_output(build, figures)
