"""Declarative automation: when a changed payload is followed downstream, and only past passed
blocking checks.

When ``payload`` is rebuilt (a new corpus, another embedder), its dependents are requested, but
an asset is requested only while every *blocking* check of its upstream assets passed against
their latest materialization. A failed alignment check therefore stops the five trainings from
being requested at all, not just inside one run. The sensor that evaluates it,
:data:`rebuild_after_checked_upstream`, is off until switched on (UI → Automation, or
``dagster sensor start rebuild_after_checked_upstream``), so ``lvm ui`` on a laptop never starts a
multi-hour retrain by surprise.
"""

import dagster as dg

# Requested when an upstream asset updated (or will be, in the same tick), and only while every
# blocking check on the upstream assets has passed against their latest materialization (or
# is requested in the same tick, in which case the run itself gates the child on the check).
REBUILD_AFTER_CHECKED_UPSTREAM = (
    dg.AutomationCondition.eager() & dg.AutomationCondition.all_deps_blocking_checks_passed()
).with_label("rebuild when an upstream asset updated, once its blocking checks passed")

# Checks run whenever the asset they check is (re)materialized by automation, so the condition
# above has a fresh result to look at.
CHECK_WITH_ITS_ASSET = dg.AutomationCondition.eager().with_label(
    "run when its asset is materialized")

# The pipeline's own groups, by name: the UI shows a sensor's target as its selection's text.
PIPELINE = dg.AssetSelection.groups("data", "sequences", "models", "evaluation")

rebuild_after_checked_upstream = dg.AutomationConditionSensorDefinition(
    "rebuild_after_checked_upstream", target=PIPELINE,
    description="Follows a rebuilt payload (a new corpus, another embedder) downstream: requests "
                "the sequences, the five trainings, the index and the report once an asset they "
                "read was rebuilt, each only while every blocking check on what it reads has "
                "passed, and runs each asset's checks with it. Off until switched on here.")
