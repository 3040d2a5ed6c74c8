"""The IO manager that carries lineage (:class:`BuildIOManager`): every asset input is the build
the Dagster instance recorded for its upstream, never a pointer another run can move. It owns
build resolution and nothing else; the artifact root is the storage resource's.

- ``handle_output`` receives the :class:`~lvm_pipeline.store.artifacts.Build` an asset published (its
  ``build_id`` is also the materialization's ``DataVersion`` and its ``build_id`` metadata) and,
  now that the asset function has succeeded, points ``<kind>/CURRENT`` at it for readers outside
  a run (``lvm report``, ``lvm check``).
- ``load_input`` returns the upstream's build:
  - when the upstream step is part of this run (or of the run this one re-executes), the build
    that step's materialization recorded, found in the instance by run id;
  - otherwise the build of the upstream's latest materialization in the instance, resolved
    here, once, when the step starts loading its inputs.
  Either way the build id comes from Dagster's event log, and the files are re-hashed against
  their manifest as they are read.

Why not ``CURRENT``: two overlapping runs each moved it under the other's steps, and a step
read whatever it named at that moment (the trainers of one run trained on the other run's
sequences, and its report scored the other run's checkpoint), silently.
"""

import dagster as dg

from lvm_pipeline.defs.metadata import ARTIFACT_KIND, BUILD_ID
from lvm_pipeline.defs.resources import StorageResource, storage_from_environment
from lvm_pipeline.store import ArtifactError, Build

# The resource key of the loader for inputs that are None when their asset was never
# materialized (instead of an error): the other sequence set, in the leakage check.
OPTIONAL_INPUT = "optional_build_input"
# How many of an asset's newest materializations are searched for the one a run made: the
# producing run's is the newest unless others materialized the same asset since.
_PAGE = 100


def _recorded_build(entry: dg.EventLogEntry) -> tuple[str, str]:
    """(kind, build id) from a materialization's metadata."""
    materialization = entry.asset_materialization
    meta = materialization.metadata if materialization else {}
    if BUILD_ID not in meta or ARTIFACT_KIND not in meta:
        key = materialization.asset_key.to_user_string() if materialization else "?"
        raise ArtifactError(f"the materialization of {key} in run {entry.run_id} records no "
                            f"{ARTIFACT_KIND}/{BUILD_ID} (made by an older lvm-pipeline?); "
                            "rematerialize it")
    return str(meta[ARTIFACT_KIND].value), str(meta[BUILD_ID].value)


def materialization_in_run(instance: dg.DagsterInstance, key: dg.AssetKey,
                           run_id: str) -> dg.EventLogEntry | None:
    """The materialization of ``key`` that run ``run_id`` recorded (its last, if several)."""
    cursor = None
    while True:
        page = instance.fetch_materializations(key, limit=_PAGE, cursor=cursor)
        for record in page.records:
            if record.run_id == run_id:
                return record.event_log_entry
        if not page.has_more:
            return None
        cursor = page.cursor


def resolve_upstream(instance: dg.DagsterInstance, key: dg.AssetKey,
                     producer_run_id: str | None) -> tuple[str, str, str] | None:
    """(kind, build id, how it was resolved) of the build an input of ``key`` must read; None
    when the asset was never materialized in this instance."""
    if producer_run_id is not None:
        entry = materialization_in_run(instance, key, producer_run_id)
        if entry is None:
            raise ArtifactError(f"run {producer_run_id} recorded no materialization of "
                                f"{key.to_user_string()}, though this step depends on it there")
        how = f"materialized by run {producer_run_id}"
    else:
        entry = instance.get_latest_materialization_event(key)
        if entry is None:
            return None
        how = f"latest materialization (run {entry.run_id}), resolved at step start"
    return (*_recorded_build(entry), how)


def _producing_run(context: dg.InputContext) -> str | None:
    """The run whose step produced this input: this run, or the run a re-execution took the
    step's output from; None when the upstream is not a step of either (Dagster then hands the
    loader a stand-in output context whose run id names no run of the instance)."""
    try:
        run_id = context.upstream_output.run_id if context.upstream_output else None
    except dg.DagsterInvariantViolationError:  # a stand-in context without a run id
        return None
    if run_id is None or context.instance.get_run_by_id(run_id) is None:
        return None
    return run_id


class BuildIOManager(dg.ConfigurableIOManager):
    """Builds in the artifact store, found through the instance's materialization records.

    ``missing_is_none``: an input whose asset was never materialized loads as None rather than
    failing (the :data:`OPTIONAL_INPUT` loader).
    """

    storage: dg.ResourceDependency[StorageResource]
    missing_is_none: bool = False

    def handle_output(self, context: dg.OutputContext, obj: Build) -> None:
        if not isinstance(obj, Build):
            raise TypeError(f"{context.asset_key.to_user_string()} returned {type(obj).__name__}; "
                            "assets of this project return the Build they published")
        self.storage.store().set_current(obj)

    def load_input(self, context: dg.InputContext) -> Build | None:
        resolved = resolve_upstream(context.instance, context.asset_key,
                                    _producing_run(context))
        if resolved is None:
            if self.missing_is_none:
                return None
            raise ArtifactError(f"{context.asset_key.to_user_string()} was never materialized "
                                "in this Dagster instance; materialize it first (`lvm run` "
                                "builds everything)")
        kind, build_id, how = resolved
        build = self.storage.store().get(kind, build_id)
        # In the step's log, not as input metadata: Dagster records that as an observation of
        # the upstream asset, which its page then lists above its own materialization.
        context.log.info(f"input {context.asset_key.to_user_string()}: {kind} "
                         f"{build_id[:12]} ({how})")
        return build


def storage_resources(storage: StorageResource) -> dict[str, dg.ConfigurableResource]:
    """The storage resource and the two IO managers over it, which must share one root: what
    the command line and the tests bind to the data dir they run against."""
    return {"storage": storage,
            # Every asset's output and input: builds found through the instance's records.
            "io_manager": BuildIOManager(storage=storage),
            OPTIONAL_INPUT: BuildIOManager(storage=storage, missing_is_none=True)}


@dg.definitions
def io_managers() -> dg.Definitions:
    return dg.Definitions(resources=storage_resources(storage_from_environment()))
