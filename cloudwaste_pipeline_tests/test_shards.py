"""Shards: partitions that do not grow with accounts, and one account never failing the others.

The acceptance scenario: a day's scan of 50 accounts across shards in which some accounts fail
(bad credentials, throttling that outlasts the retries, an exception on odd data), on SQLite and
PostgreSQL: every healthy account's rows land exactly once, every failure is listed by alias and
retried by the sensor with no human, and a re-run changes nothing.
"""

from __future__ import annotations

import dataclasses
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import dagster as dg
import pytest
import sqlalchemy as sa
from botocore.exceptions import ClientError

from cloudwaste_pipeline.accounts import Account
from cloudwaste_pipeline.scanning.model import RawScan
from cloudwaste_pipeline.sharding import (
    SHARD_COUNT,
    SHARDS,
    SelectionError,
    parse_selection,
    select,
    shard_of,
)
from cloudwaste_pipeline.warehouse import schema
from cloudwaste_pipeline.warehouse.engine import make_engine
from cloudwaste_pipeline_tests.slice_runs import FakeCloud, resources
from cloudwaste_pipeline_tests.slices import raw_scan

DAY = date(2026, 11, 16)

# --- pure ---------------------------------------------------------------------------------------


def test_an_alias_always_falls_in_the_same_shard() -> None:
    # Pinned: a change of the hash or the count moves accounts between shards (a migration).
    assert [shard_of(a) for a in ("prod-a", "prod-b", "acme-prod")] == [
        "shard-03",
        "shard-08",
        "shard-10",
    ]
    assert len(SHARDS) == SHARD_COUNT == len(set(SHARDS))


def test_ten_thousand_accounts_spread_over_every_shard() -> None:
    counts = {s: 0 for s in SHARDS}
    for i in range(10_000):
        counts[shard_of(f"customer-{i}")] += 1
    mean = 10_000 / SHARD_COUNT
    assert all(0.8 * mean < n < 1.2 * mean for n in counts.values()), counts


def test_partitions_per_asset_stay_under_dagster_advice_in_2030() -> None:
    from cloudwaste_pipeline.defs.partitions import cost_partitions, scan_days, scan_partitions

    at = datetime(2030, 1, 1, tzinfo=UTC)
    days = len(scan_days.get_partition_keys(current_time=at))
    assert days * SHARD_COUNT <= 100_000
    assert len(scan_partitions.get_partition_keys(current_time=at)) == days * SHARD_COUNT
    assert len(cost_partitions.get_partition_keys(current_time=at)) < 2_000


def test_a_selection_is_checked_against_the_shard() -> None:
    aliases = ["prod-a", "prod-b", "acme-prod"]
    assert select("shard-03", aliases, None) == ["prod-a"]
    assert select("shard-03", aliases, ["prod-a"]) == ["prod-a"]
    with pytest.raises(SelectionError, match=r"'prod-b' is in shard-08, not shard-03"):
        select("shard-03", aliases, ["prod-b"])
    with pytest.raises(SelectionError, match=r"'nope' is not an account"):
        select("shard-03", aliases, ["nope"])
    assert parse_selection(" prod-a, prod-b  prod-a ") == ["prod-a", "prod-b"]
    assert parse_selection("  ") is None


# --- 50 accounts, some failing --------------------------------------------------------------------

ACCOUNTS = [f"acct-{i:02d}" for i in range(50)]
BAD_CREDENTIALS = {"acct-03", "acct-17"}
THROTTLED = {"acct-25", "acct-41"}
ODD_DATA = {"acct-08"}
FAILING = BAD_CREDENTIALS | THROTTLED | ODD_DATA
DETECTIONS = 3


def account_id(alias: str) -> str:
    return f"{100000000000 + int(alias[-2:]):012d}"


def scan_of(alias: str, day: date, odd: bool = False) -> RawScan:
    scan = raw_scan(day, detections=DETECTIONS, errors=0)
    raw_id = account_id(alias)
    detections = [
        {
            **d,
            "account_id": raw_id,
            "resource_id": d["resource_id"].replace(scan.account_id, raw_id),
        }
        for d in scan.detections
    ]
    if odd:  # a value no cloud should send: the derivation raises on it
        detections[0]["created_at"] = "last tuesday"
    return dataclasses.replace(scan, account_id=raw_id, detections=detections)


class FlakyCloud(FakeCloud):
    """Fifty accounts; some fail as real clouds fail, until ``healed``."""

    healed: bool = False

    def scan(self, account: Account) -> RawScan:
        from cloudwaste_pipeline import settings

        if not self.healed and account.name in BAD_CREDENTIALS:
            raise ClientError(
                {
                    "Error": {
                        "Code": "AccessDenied",
                        "Message": f"User: arn:aws:sts::{account.cloud_id}:assumed-role/x is "
                        "not authorized to perform: sts:AssumeRole",
                    }
                },
                "AssumeRole",
            )
        if not self.healed and account.name in THROTTLED:
            raise ClientError(
                {"Error": {"Code": "Throttling", "Message": "Rate exceeded"}}, "DescribeVolumes"
            )
        odd = not self.healed and account.name in ODD_DATA
        return scan_of(account.name, settings.today(), odd)


def write_accounts(folder: Path) -> Path:
    path = folder / "accounts.yaml"
    lines = ["accounts:"]
    for alias in ACCOUNTS:
        lines += [
            f"  - name: {alias}",
            "    provider: aws",
            "    owner_user_id: user-1",
            f'    account_id: "{account_id(alias)}"',
            "    regions: [eu-west-1]",
        ]
    path.write_text("\n".join(lines) + "\n")
    return path


SCAN_ASSETS = ("raw_cloud_scans", "ml_training_data", "resource_lifecycle_events")


def run_partition(
    instance: dg.DagsterInstance,
    res: dict[str, Any],
    shard: str,
    tags: dict[str, str] | None = None,
) -> dg.ExecuteInProcessResult:
    from cloudwaste_pipeline.defs.assets import scans
    from cloudwaste_pipeline.defs.partitions import shard_key

    return dg.materialize(
        [scans.raw_cloud_scans, scans.ml_training_data, scans.resource_lifecycle_events],
        partition_key=shard_key(DAY, shard),
        resources=res,
        instance=instance,
        tags=tags,
        raise_on_error=False,
    )


def ml_rows(url: str) -> dict[str, int]:
    """ML rows per account hash, and that no (day, resource) appears twice."""
    engine = make_engine(url)
    table = schema.ml_training_data
    with engine.connect() as conn:
        rows = conn.execute(
            sa.select(table.c.account_hash, table.c.resource_hash, table.c.scan_date)
        ).all()
    assert len(rows) == len({(r.scan_date, r.resource_hash) for r in rows}), "duplicate rows"
    counts: dict[str, int] = {}
    for r in rows:
        counts[r.account_hash] = counts.get(r.account_hash, 0) + 1
    return counts


def open_failures(url: str) -> dict[str, list[str]]:
    """Each failing alias's open failures, as "asset: message", sorted."""
    engine = make_engine(url)
    table = schema.account_failures
    with engine.connect() as conn:
        rows = conn.execute(
            sa.select(table.c.account_alias, table.c.asset, table.c.message).where(
                table.c.resolved_at.is_(None)
            )
        ).all()
    found: dict[str, list[str]] = {}
    for r in rows:
        found.setdefault(r.account_alias, []).append(f"{r.asset}: {r.message}")
    return {alias: sorted(texts) for alias, texts in found.items()}


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def warehouse_url(request: pytest.FixtureRequest) -> str:
    return request.getfixturevalue(f"{request.param}_url")


def test_failing_accounts_never_fail_the_others_and_are_retried_automatically(
    warehouse_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from cloudwaste_pipeline.defs.checks import failing_accounts_result
    from cloudwaste_pipeline.defs.sensors import failed_accounts_sensor
    from cloudwaste_pipeline.privacy.anonymize import hash_id
    from cloudwaste_pipeline_tests.slices import KEY

    monkeypatch.setenv("CLOUDWASTE_NOW", f"{DAY}T02:00:00+00:00")
    accounts = write_accounts(tmp_path)
    res = resources(warehouse_url, accounts)
    cloud = FlakyCloud(accounts_file=str(accounts))
    res["cloud"] = cloud
    instance = dg.DagsterInstance.ephemeral()
    shards = sorted({shard_of(a) for a in ACCOUNTS})
    assert len(shards) >= 12  # the 50 accounts really are spread over shards

    for shard in shards:
        result = run_partition(instance, res, shard)
        # A shard whose accounts all failed is a red run; any other shard succeeds.
        mine = {a for a in ACCOUNTS if shard_of(a) == shard}
        assert result.success == bool(mine - FAILING), shard

    def hashed(alias: str) -> str:
        return hash_id("account", "aws", account_id(alias), KEY.encode())

    rows = ml_rows(warehouse_url)
    for alias in ACCOUNTS:
        expected = 0 if alias in FAILING else DETECTIONS
        assert rows.get(hashed(alias), 0) == expected, alias
    failed = open_failures(warehouse_url)
    assert set(failed) == FAILING
    for alias in BAD_CREDENTIALS | THROTTLED:  # the derived steps skip, they do not fail
        assert [t.split(":")[0] for t in failed[alias]] == ["raw_cloud_scans"]
    assert "ml_training_data" in [t.split(":")[0] for t in failed["acct-08"]]
    for alias in BAD_CREDENTIALS:
        assert account_id(alias) not in failed[alias][0]  # scrubbed
        assert "AccessDenied" in failed[alias][0]

    # The check lists every failing alias.
    evaluation = failing_accounts_result(res["warehouse"])
    assert not evaluation.passed
    assert all(alias in evaluation.description for alias in FAILING)

    # Before the back-off is over the sensor asks for nothing; after it, one run per day and
    # shard of the failing accounts, limited to them.
    sensor_resources = {"warehouse": res["warehouse"], "cloud": cloud}
    with dg.build_sensor_context(instance=instance, resources=sensor_resources) as context:
        assert isinstance(failed_accounts_sensor(context), dg.SkipReason)
    monkeypatch.setenv("CLOUDWASTE_NOW", f"{DAY}T02:30:00+00:00")
    cloud_healed = FlakyCloud(accounts_file=str(accounts), healed=True)
    res["cloud"] = cloud_healed
    with dg.build_sensor_context(
        instance=instance, resources={"warehouse": res["warehouse"], "cloud": cloud_healed}
    ) as context:
        requests = failed_accounts_sensor(context)
    assert sorted(r.partition_key.keys_by_dimension["shard"] for r in requests) == sorted(
        {shard_of(a) for a in FAILING}
    )
    for request in requests:
        shard = request.partition_key.keys_by_dimension["shard"]
        named = request.tags["cloudwaste/accounts"].split(",")
        assert named == sorted(a for a in FAILING if shard_of(a) == shard)
    for request in requests:
        shard = request.partition_key.keys_by_dimension["shard"]
        result = run_partition(instance, res, shard, request.tags)
        assert result.success
        scanned = result.asset_materializations_for_node("raw_cloud_scans")[0].metadata
        assert scanned["accounts"].value == len([a for a in FAILING if shard_of(a) == shard])
    assert open_failures(warehouse_url) == {}
    after_retry = ml_rows(warehouse_url)
    assert all(after_retry[hashed(a)] == DETECTIONS for a in ACCOUNTS)

    # A re-run of the whole day changes no count.
    for shard in shards:
        assert run_partition(instance, res, shard).success
    assert ml_rows(warehouse_url) == after_retry
    assert failing_accounts_result(res["warehouse"]).passed
