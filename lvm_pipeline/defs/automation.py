"""Declarative automation: when a changed payload is followed downstream, and only past passed
blocking checks.

When ``payload`` is rebuilt (a new corpus, another embedder), its dependents are requested, but
an asset is requested only while every *blocking* check of its upstream assets passed against
their latest materialization. A failed alignment check therefore stops the five trainings from
being requested at all, not just inside one run. Off until switched on (UI → Automation, or
``dagster sensor start default_automation_condition_sensor``), so ``lvm ui`` on a laptop never
starts a multi-hour retrain by surprise.
"""

import dagster as dg

# Requested when an upstream asset updated (or will be, in the same tick), and only while every
# blocking check on the upstream assets has passed against their latest materialization (or
# is requested in the same tick, in which case the run itself gates the child on the check).
REBUILD_AFTER_CHECKED_UPSTREAM = (
    dg.AutomationCondition.eager() & dg.AutomationCondition.all_deps_blocking_checks_passed()
).with_label("eager_after_blocking_checks_passed")

# Checks run whenever the asset they check is (re)materialized by automation, so the condition
# above has a fresh result to look at.
CHECK_WITH_ITS_ASSET = dg.AutomationCondition.eager()
