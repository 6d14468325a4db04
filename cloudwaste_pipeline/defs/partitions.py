"""Partitions: scans by day x account alias, cost trends by month x account, exports by week.

Partition keys are account *aliases* from the accounts file (they show in the UI); raw account
ids never do. Weeks start on Monday.
"""

from datetime import date

import dagster as dg

START_DATE = "2025-01-01"

cloud_accounts = dg.DynamicPartitionsDefinition(name="cloud_accounts")

# end_offset=1: today's partition exists, because a scan captures the cloud as it is now.
scan_days = dg.DailyPartitionsDefinition(start_date=START_DATE, end_offset=1)
scan_partitions = dg.MultiPartitionsDefinition({"date": scan_days, "account": cloud_accounts})

cost_months = dg.MonthlyPartitionsDefinition(start_date=START_DATE, end_offset=1)
cost_partitions = dg.MultiPartitionsDefinition({"month": cost_months, "account": cloud_accounts})

# A week is exported once it is complete (Monday 03:00 UTC for the week that just ended).
export_weeks = dg.WeeklyPartitionsDefinition(start_date="2025-01-06", day_offset=1)

scan_to_month = dg.MultiPartitionMapping(
    {
        "date": dg.DimensionPartitionMapping("month", dg.TimeWindowPartitionMapping()),
        "account": dg.DimensionPartitionMapping("account", dg.IdentityPartitionMapping()),
    }
)


def scan_key(day: date | str, alias: str) -> dg.MultiPartitionKey:
    return dg.MultiPartitionKey({"date": str(day), "account": alias})


def month_key(month_start: date | str, alias: str) -> dg.MultiPartitionKey:
    return dg.MultiPartitionKey({"month": str(month_start)[:8] + "01", "account": alias})
