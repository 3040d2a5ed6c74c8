"""Content-addressed builds under one data root, verified by hash on every read.

The builds and their manifests (:mod:`.artifacts`), the object-store mirror and the one way to
open the store (:mod:`.remote`), the artifact kinds, named once (:mod:`.kinds`), and the rule of
what one report may score together (:mod:`.lineage`).
"""

from lvm_pipeline.store import kinds
from lvm_pipeline.store.artifacts import (
    BUILD_DIR_CHARS,
    CURRENT,
    MANIFEST,
    PROVENANCE,
    QUARANTINE,
    ArtifactError,
    ArtifactStore,
    Build,
    code_version,
    content_id,
    read_json,
    recipe_key,
    restore_hint,
    safe_name,
    sha256_file,
    sha256_json,
    utc_now,
    verify_store,
    write_json_atomic,
)
from lvm_pipeline.store.lineage import as_upstream, recorded_inputs, report_lineage
from lvm_pipeline.store.remote import MirroredStore, open_store

__all__ = [
    "BUILD_DIR_CHARS",
    "CURRENT",
    "MANIFEST",
    "PROVENANCE",
    "QUARANTINE",
    "ArtifactError",
    "ArtifactStore",
    "Build",
    "MirroredStore",
    "as_upstream",
    "code_version",
    "content_id",
    "kinds",
    "open_store",
    "read_json",
    "recipe_key",
    "recorded_inputs",
    "report_lineage",
    "restore_hint",
    "safe_name",
    "sha256_file",
    "sha256_json",
    "utc_now",
    "verify_store",
    "write_json_atomic",
]
