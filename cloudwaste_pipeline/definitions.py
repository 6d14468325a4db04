"""The code location: every asset, check, job, schedule and sensor under ``defs/``.

Assembled explicitly (not from the source tree), so it loads the same from a checkout, an
editable install or a non-editable install in a Docker image.
"""

import dagster as dg

from cloudwaste_pipeline.defs import adhoc_exports, checks, jobs, schedules, sensors
from cloudwaste_pipeline.defs.assets import actions, costs, models, outputs, scans
from cloudwaste_pipeline.defs.resources import build_resources

defs = dg.Definitions(
    assets=dg.load_assets_from_modules([scans, actions, costs, outputs, models]),
    asset_checks=dg.load_asset_checks_from_modules([checks]),
    jobs=[
        jobs.scan_job,
        jobs.user_actions_job,
        jobs.cost_trends_job,
        jobs.weekly_export_job,
        adhoc_exports.adhoc_export_job,
        jobs.ml_cleanup_job,
        jobs.scan_freshness_job,
    ],
    schedules=[
        schedules.daily_scan_schedule,
        schedules.weekly_ml_export_schedule,
        schedules.monthly_ml_cleanup_schedule,
        schedules.scan_freshness_schedule,
    ],
    sensors=[
        sensors.failed_accounts_sensor,
        sensors.user_action_sensor,
        sensors.run_failure_alert_sensor,
    ],
    resources=build_resources(),
    # Automation and UI materializations run their steps in the run's process: scan and cost
    # steps are cheap beside loading the code location once per step process. The weekly
    # export job, whose steps are heavy, chooses multiprocess itself (defs/jobs.py).
    executor=dg.in_process_executor,
)
