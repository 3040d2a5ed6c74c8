"""The ``payload`` asset: every chunk embedded, the vectors everything else points into."""

from typing import Any

import dagster as dg

from lvm_pipeline.defs.code_versions import code_version
from lvm_pipeline.defs.metadata import build_output, markdown_preview
from lvm_pipeline.defs.resources import (
    EmbedderResource,
    PickleImportsResource,
    ProgressResource,
    StorageResource,
)
from lvm_pipeline.defs.reuse import reused_output, step_recipe
from lvm_pipeline.embedding import Embedder
from lvm_pipeline.interop import import_reference_payload
from lvm_pipeline.payload import build_payload, find_payload_build, import_payload, load_payload
from lvm_pipeline.store import Build, kinds, sha256_file


class PayloadParams(dg.Config):
    """Where the payload comes from. Default: embed the corpus, vectors stored as ``dtype``
    (float32 or float16). ``path``: take a published payload build instead (a build folder,
    or a data dir whose payload is current, e.g. the OUT of `lvm synth-payload`); the corpus is
    then not read. ``import_npy``: convert the reference project's pickled payload. Unpickling
    runs code from the file, so it also needs ``allow_pickle: true``, and a deployment that
    allows it (`lvm import-payload --allow-pickle`, or a UI started with `lvm ui
    --allow-pickle-imports`); ``normalise`` L2-normalises the imported vectors (otherwise the
    integrity check judges).
    With ``path`` or ``import_npy`` the ``corpus`` input is loaded but not read."""

    dtype: str = "float32"
    path: str = ""
    import_npy: str = ""
    allow_pickle: bool = False
    normalise: bool = False
    # Compute even when this recipe (code, config, inputs) made a build before.
    rebuild: bool = False


def _sources(config: PayloadParams, corpus: Build, embedder: EmbedderResource,
             pickle_imports: PickleImportsResource) -> tuple[dict[str, Any], dict[str, Any]]:
    """(inputs, settings) of the step's recipe: what the payload is made from, and with which
    encoder. Refuses a config asking for two sources, or a pickled import this deployment does
    not allow."""
    if config.path and config.import_npy:
        raise ValueError("payload config: give `path` or `import_npy`, not both")
    if config.path:
        return {"source": find_payload_build(config.path).build_id}, {}
    if config.import_npy:
        pickle_imports.require(config.allow_pickle, config.import_npy)
        return {"file_sha256": sha256_file(config.import_npy)}, {}
    model = embedder.load()
    if not isinstance(model, Embedder):
        raise ValueError(f"embedder {embedder.model!r} is a synthetic payload's generator: it "
                         "cannot embed a corpus; give the payload itself (payload config "
                         "`path`, `lvm run --payload OUT`)")
    return {"corpus": corpus}, {"encoder": model.output_identity()}


@dg.asset(group_name="data", kinds={"numpy", "parquet"}, code_version=code_version("payload"))
def payload(context: dg.AssetExecutionContext, config: PayloadParams, corpus: Build,
            storage: StorageResource, embedder: EmbedderResource,
            pickle_imports: PickleImportsResource, progress: ProgressResource) -> dg.Output:
    """One L2-normalised vector per chunk (vectors.npy) and the table naming each row."""
    store = storage.store()
    inputs, settings = _sources(config, corpus, embedder, pickle_imports)
    recipe = step_recipe(context, config, inputs, **settings)
    if (reused := reused_output(context, store, kinds.PAYLOAD, recipe, config.rebuild)):
        return reused
    cache: dict[str, object] = {}
    if config.path:
        build, how = import_payload(store, config.path, recipe)
        context.log.info(f"payload {build.build_id[:12]} taken from {config.path} ({how}); "
                         f"embedder {build.manifest['embedder']['id']!r}; corpus not read")
    elif config.import_npy:
        context.log.warning(f"importing the reference payload {config.import_npy}: "
                            f"allow_pickle={config.allow_pickle} (unpickling executes its code)")
        build = import_reference_payload(store, config.import_npy, config.allow_pickle,
                                         config.normalise, recipe)
    else:
        model = embedder.load()
        context.log.info(f"embedding with {model.config.model} on {model.device} "
                         f"(weights sha256 {model.fingerprint['weights_sha256'][:12]})")
        build, stats = build_payload(store, corpus, model,
                                     progress.for_step(context, "embedding", "texts"),
                                     config.dtype, recipe)
        context.log.info(stats.line())
        cache = stats.metadata()
    return _output(build, cache)


def _output(build: Build, cache: dict[str, object]) -> dg.Output:
    loaded = load_payload(build, verify=False)  # just hashed by publish
    m, e = build.manifest, build.manifest["embedder"]
    return build_output(
        build, payload_build_id=build.build_id, n_rows=m["n_rows"], dim=m["dim"],
        dtype=m.get("dtype", "float32"), n_articles=m["n_articles"], embedder_id=e["id"],
        embedder_weights_sha256=e.get("weights_sha256", "unknown"),
        embedder_device=e.get("device", "unknown"),
        source=m.get("run", {}).get("imported_from", {}).get("path", "embedded from the corpus"),
        adjacent_cosine_mean=m["adjacent_cosine_mean"], **cache,
        preview=markdown_preview(loaded.chunks[["row", "article_id", "chunk_index", "text"]]))
