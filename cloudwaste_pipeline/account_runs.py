"""Per-account control from Python and the CLI: scan or re-derive chosen accounts for chosen
days, and list the accounts that are failing.

Partitions are day x account shard; a run of one shard partition limited to some accounts by
the ``cloudwaste/accounts`` run tag is exactly what a user launches from the UI (Launchpad or
backfill dialog, with that tag). Here the runs execute in this process on the Dagster instance
of ``DAGSTER_HOME`` (else ``$CLOUDWASTE_HOME/dagster``), so they show in the UI like any other.
"""

from __future__ import annotations

from dataclasses import asdict
from datetime import date, timedelta
from typing import TYPE_CHECKING, Any

import pandas as pd

from cloudwaste_pipeline import settings
from cloudwaste_pipeline.errors import CloudWasteError
from cloudwaste_pipeline.sharding import shard_of

if TYPE_CHECKING:
    import dagster as dg

MAX_DAYS = 366
"""One call covers at most a year: a longer backfill belongs in the UI's backfill dialog."""


def _day(value: date | str, name: str) -> date:
    try:
        day = value if isinstance(value, date) else date.fromisoformat(str(value))
    except ValueError:
        raise CloudWasteError(f"{name} {value!r} is not a date (YYYY-MM-DD)") from None
    if not date(2000, 1, 1) <= day <= settings.today():
        raise CloudWasteError(
            f"{name} {day} is outside 2000-01-01..{settings.today()} (today): a cloud cannot be "
            "scanned in the future"
        )
    return day


def _instance() -> dg.DagsterInstance:
    """``DAGSTER_HOME``'s instance, else the one under ``$CLOUDWASTE_HOME/dagster`` (the demo's)."""
    import dagster as dg
    from dagster._core.errors import DagsterHomeNotSetError

    try:
        return dg.DagsterInstance.get()
    except DagsterHomeNotSetError:
        home = settings.paths().dagster_home
        home.mkdir(parents=True, exist_ok=True)
        return dg.DagsterInstance.from_config(str(home))


def scan_accounts(
    accounts: list[str],
    start: date | str | None = None,
    end: date | str | None = None,
    *,
    instance: dg.DagsterInstance | None = None,
) -> pd.DataFrame:
    """Scan (today) or re-derive from the stored raw scans (past days) the ``accounts`` (aliases)
    for every day of ``start``..``end`` (default: today only; ``end`` defaults to ``start``).

    One ``scan_job`` run per day and shard, limited to the named accounts of that shard; a
    frame with one row per run: day, shard, accounts, run id, success, and the accounts that
    failed (also in ``failing_accounts()``). An unknown alias raises before anything runs.
    """
    from cloudwaste_pipeline.definitions import defs
    from cloudwaste_pipeline.defs.partitions import account_tags, shard_key
    from cloudwaste_pipeline.defs.resources import CloudResource

    if isinstance(accounts, str) or not accounts:
        raise CloudWasteError("give accounts=[<alias>, ...]: a non-empty list of account aliases")
    first = _day(start if start is not None else settings.today(), "start")
    last = _day(end, "end") if end is not None else first
    if last < first:
        raise CloudWasteError(f"end {last} is before start {first}")
    if (last - first).days + 1 > MAX_DAYS:
        raise CloudWasteError(
            f"{(last - first).days + 1} days asked for; at most {MAX_DAYS} per call"
        )
    known = {a.name for a in CloudResource().accounts()}
    unknown = sorted(set(accounts) - known)
    if unknown:
        raise CloudWasteError(
            f"not in the accounts sources: {', '.join(repr(a) for a in unknown[:10])}"
        )
    by_shard: dict[str, list[str]] = {}
    for alias in dict.fromkeys(accounts):
        by_shard.setdefault(shard_of(alias), []).append(alias)
    job = defs.resolve_job_def("scan_job")
    instance = instance or _instance()
    rows = []
    day = first
    while day <= last:
        for shard, aliases in sorted(by_shard.items()):
            result = job.execute_in_process(
                instance=instance,
                partition_key=shard_key(day, shard),
                tags=account_tags(aliases),
                raise_on_error=False,
            )
            rows.append(
                {
                    "day": day,
                    "shard": shard,
                    "accounts": ",".join(aliases),
                    "run_id": result.run_id,
                    "success": result.success,
                    "failed_accounts": ",".join(_failed(result)),
                }
            )
        day += timedelta(days=1)
    return pd.DataFrame(rows)


def _failed(result: Any) -> list[str]:
    """The aliases the run's steps reported failing (from their metadata)."""
    names: set[str] = set()
    for event in result.get_asset_materialization_events():
        value = event.materialization.metadata.get("failed_accounts")
        if value is not None and value.value != "none":
            names.update(n.strip() for n in str(value.value).split(","))
    for event in result.get_step_failure_events():
        data = event.event_specific_data
        if data and data.user_failure_data:
            value = data.user_failure_data.metadata.get("failed_accounts")
            if value is not None and value.value != "none":
                names.update(n.strip() for n in str(value.value).split(","))
    return sorted(n for n in names if n)


def failing_accounts(database_url: str | None = None) -> pd.DataFrame:
    """Open per-account failures within raw retention, newest day first: alias, asset, day,
    attempts, next automatic retry (None: listed only) and the error (ids scrubbed)."""
    from cloudwaste_pipeline import api
    from cloudwaste_pipeline.warehouse import failures

    since = settings.today() - timedelta(days=settings.raw_retention_days())
    with api.engine(database_url).connect() as conn:
        found = failures.open_failures(conn, since)
    columns = list(failures.Failure.__dataclass_fields__)
    return pd.DataFrame([asdict(f) for f in found], columns=columns)
