"""Which executor runs the steps of a run: a deployment's choice (``LVM_EXECUTOR``), not code's.

- unset / ``default``: Dagster's default, one process per step on this machine (``execution:
  config: in_process: {}`` in run config runs a whole run in one process instead);
- ``k8s``: one Kubernetes Job per step (``dagster_k8s.k8s_job_executor``, extra ``[k8s]``);
  per-step resources (a GPU for each training) come from run config, deploy/k8s/run_config.yaml.

An unknown name, or ``k8s`` without its package, raises with the fix instead of quietly running
everything on the local machine.
"""

import os
from collections.abc import Mapping

import dagster as dg

EXECUTORS = ("default", "in_process", "multiprocess", "k8s")


def executor_from_env(env: Mapping[str, str] | None = None) -> dg.ExecutorDefinition | None:
    """The executor ``LVM_EXECUTOR`` names in ``env`` (default: ``os.environ``); None = Dagster's
    default."""
    name = (os.environ if env is None else env).get("LVM_EXECUTOR", "default")
    if name == "default":
        return None
    if name == "in_process":
        return dg.in_process_executor
    if name == "multiprocess":
        return dg.multiprocess_executor
    if name == "k8s":
        try:
            from dagster_k8s import k8s_job_executor
        except ImportError:
            raise ImportError("LVM_EXECUTOR=k8s needs dagster-k8s: pip install -e '.[k8s]'"
                              ) from None
        return k8s_job_executor
    raise ValueError(f"LVM_EXECUTOR={name!r}; valid: {', '.join(EXECUTORS)}")


@dg.definitions
def executor() -> dg.Definitions:
    chosen = executor_from_env()
    return dg.Definitions(executor=chosen) if chosen is not None else dg.Definitions()
