"""Partitions: scans by day x account shard, cost trends by month x shard, exports by week.

An account is in one of ``SHARD_COUNT`` shards (a stable hash of its alias, ``sharding.py``), so
the number of partitions grows with days only, never with accounts. A run of a shard partition
works on every account of the shard, or on those its ``cloudwaste/accounts`` tag names (one
account for one day, a backfill of chosen accounts). Keys never carry raw ids. Weeks start on
Monday.
"""

from datetime import date

import dagster as dg

from cloudwaste_pipeline.sharding import SHARDS, shard_of

START_DATE = "2025-01-01"
ACCOUNTS_TAG = "cloudwaste/accounts"
"""Comma-separated account aliases a shard run is limited to (all of the shard's without it)."""

account_shards = dg.StaticPartitionsDefinition(list(SHARDS))

# end_offset=1: today's partition exists, because a scan captures the cloud as it is now.
scan_days = dg.DailyPartitionsDefinition(start_date=START_DATE, end_offset=1)
scan_partitions = dg.MultiPartitionsDefinition({"date": scan_days, "shard": account_shards})

cost_months = dg.MonthlyPartitionsDefinition(start_date=START_DATE, end_offset=1)
cost_partitions = dg.MultiPartitionsDefinition({"month": cost_months, "shard": account_shards})

# A week is exported once it is complete (Monday 03:00 UTC for the week that just ended).
export_weeks = dg.WeeklyPartitionsDefinition(start_date="2025-01-06", day_offset=1)

scan_to_month = dg.MultiPartitionMapping(
    {
        "date": dg.DimensionPartitionMapping("month", dg.TimeWindowPartitionMapping()),
        "shard": dg.DimensionPartitionMapping("shard", dg.IdentityPartitionMapping()),
    }
)


def shard_key(day: date | str, shard: str) -> dg.MultiPartitionKey:
    return dg.MultiPartitionKey({"date": str(day), "shard": shard})


def scan_key(day: date | str, alias: str) -> dg.MultiPartitionKey:
    """The scan partition holding ``alias`` on ``day`` (its shard's)."""
    return shard_key(day, shard_of(alias))


def month_key(month_start: date | str, alias: str) -> dg.MultiPartitionKey:
    """The cost-trend partition holding ``alias``'s month (its shard's)."""
    return dg.MultiPartitionKey({"month": str(month_start)[:8] + "01", "shard": shard_of(alias)})


def account_tags(aliases: list[str]) -> dict[str, str]:
    """The run tags that limit a shard run to ``aliases``."""
    return {ACCOUNTS_TAG: ",".join(aliases)}
