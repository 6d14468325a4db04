"""Dagster runs of one scan partition for the slice tests: resources, a fake cloud, results."""

from __future__ import annotations

from datetime import date
from pathlib import Path
from typing import Any

import dagster as dg

from cloudwaste_pipeline.accounts import Account
from cloudwaste_pipeline.defs.resources import AnonymizerResource, CloudResource, WarehouseResource
from cloudwaste_pipeline.scanning.model import RawScan
from cloudwaste_pipeline_tests.slices import ACCOUNT_ID, ALIAS, KEY, raw_scan


class FakeCloud(CloudResource):
    """The accounts file's accounts, scanned as ``raw_scan`` of the pipeline's today."""

    def scan(self, account: Account) -> RawScan:
        from cloudwaste_pipeline import settings

        return raw_scan(settings.today())


def write_accounts(folder: Path) -> Path:
    path = folder / "accounts.yaml"
    path.write_text(
        "accounts:\n"
        f"  - name: {ALIAS}\n"
        "    provider: aws\n"
        "    owner_user_id: user-1\n"
        f'    account_id: "{ACCOUNT_ID}"\n'
        "    regions: [eu-west-1]\n"
    )
    return path


def resources(url: str, accounts: Path) -> dict[str, Any]:
    return {
        "warehouse": WarehouseResource(database_url=url),
        "anonymizer": AnonymizerResource(key=KEY),
        "cloud": FakeCloud(accounts_file=str(accounts)),
    }


def materialize(
    asset: Any, day: date | None, url: str, accounts: Path, *, month: bool = False
) -> dg.ExecuteInProcessResult:
    """One run of ``asset`` (of its partition of ``day``, or its month, and ALIAS if ``day``)
    on an instance of its own."""
    from cloudwaste_pipeline.defs.partitions import month_key, scan_key

    instance = dg.DagsterInstance.ephemeral()
    key = None if day is None else (month_key if month else scan_key)(day, ALIAS)
    return dg.materialize(
        [asset],
        partition_key=key,
        resources=resources(url, accounts),
        instance=instance,
        raise_on_error=False,
    )


def failure_text(result: dg.ExecuteInProcessResult) -> str:
    """Every message and cause Dagster stored for the run's failed steps."""
    texts = []
    for event in result.get_step_failure_events():
        error = event.event_specific_data.error
        while error is not None:
            texts.append(error.message + "".join(error.stack))
            error = error.cause or error.context
    return "\n".join(texts)
