"""``make demo``: the whole pipeline on a simulated cloud, an embedded warehouse and local files.

The simulated estate is replayed into moto day by day and each day goes through the real jobs,
exactly as production would run them: the daily scan of every account (with the clock pinned to
that day), the user actions of that day through the outbox and ``user_actions_job``; then the
monthly cost trends, the weekly exports, the model and the stats. Runs are recorded in a Dagster
instance under ``$CLOUDWASTE_HOME/dagster`` so ``make ui`` shows them.

The clock is pinned (``--date``, default 2026-11-16), so the demo gives the same figures every day
and running it twice leaves the same row counts.
"""

from __future__ import annotations

import argparse
import os
import secrets
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import dagster as dg
import sqlalchemy as sa
import yaml

from cloudwaste_pipeline import api, settings
from cloudwaste_pipeline.accounts import Account, parse_accounts
from cloudwaste_pipeline.defs.partitions import shard_key
from cloudwaste_pipeline.ml import registry
from cloudwaste_pipeline.sharding import shard_of
from cloudwaste_pipeline.simulation.azure_estate import (
    DEMO_SUBSCRIPTIONS,
    AzureResource,
    TenantSpec,
    plan_tenant,
)
from cloudwaste_pipeline.simulation.azure_fake import FakeAzure
from cloudwaste_pipeline.simulation.behaviour import Decision, decide
from cloudwaste_pipeline.simulation.fleet import FleetSpec, plan_fleet, scan_time
from cloudwaste_pipeline.simulation.replay import Replay, moto_cloud
from cloudwaste_pipeline.warehouse import queries, schema

# The console shows warnings and errors of the demo's runs; every event is in the UI (make ui).
QUIET = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}
EVENT_NAMESPACE = uuid.UUID("8a6f2d4e-3c1b-4f5a-9e7d-0b2c4d6e8f10")
DEMO_COMPANIES = (
    ("retail", 450),
    ("software", 35),
    ("finance", 2400),
    ("manufacturing", 900),
    ("healthcare", 120),
)


@dataclass
class DemoSummary:
    home: Path
    table_counts: dict[str, int]
    export_files: list[Path]
    model_metrics: dict[str, Any]
    failed_runs: list[str] = field(default_factory=list)
    active_model: str | None = None
    anomalies: tuple[int, int] = (0, 0)  # resources scored, flagged
    forecast_accounts: int = 0


def prepare_home(home: Path) -> settings.Paths:
    """Point every setting at ``home``; generate the demo's local key once (demo only)."""
    paths = settings.paths(home)
    paths.dagster_home.mkdir(parents=True, exist_ok=True)
    instance_yaml = paths.dagster_home / "dagster.yaml"
    if not instance_yaml.exists():
        instance_yaml.write_text("telemetry:\n  enabled: false\n")
    if not paths.demo_key.exists():
        paths.demo_key.write_text(secrets.token_hex(32))
        paths.demo_key.chmod(0o600)
    os.environ["CLOUDWASTE_HOME"] = str(paths.home)
    os.environ["DAGSTER_HOME"] = str(paths.dagster_home)
    os.environ["CLOUDWASTE_ANONYMIZATION_KEY"] = paths.demo_key.read_text().strip()
    return paths


def account_entries(spec: FleetSpec) -> list[dict[str, Any]]:
    """The demo's accounts-file entries: its AWS accounts, then its Azure subscriptions."""
    aws = [
        {
            "name": a.alias,
            "provider": "aws",
            "owner_user_id": a.owner_user_id,
            "account_id": a.account_id,
            "regions": list(a.regions),
            "role_arn": a.role_arn,
        }
        for a in spec.accounts
    ]
    return aws + [subscription.accounts_entry() for subscription in spec.azure_subscriptions]


def write_accounts_file(paths: settings.Paths, spec: FleetSpec) -> None:
    paths.accounts_file.parent.mkdir(parents=True, exist_ok=True)
    document = {"accounts": account_entries(spec)}
    paths.accounts_file.write_text(yaml.safe_dump(document, sort_keys=False))


def targets(spec: FleetSpec) -> list[Account]:
    """Every account the demo scans, whichever cloud it is in, as the pipeline reads them."""
    return parse_accounts({"accounts": account_entries(spec)}, "the demo's accounts")


def azure_plan(spec: FleetSpec) -> list[AzureResource]:
    """The simulated Azure tenant, its waste planted as of the demo date."""
    tenant = TenantSpec(
        seed=spec.seed,
        now=scan_time(spec.demo_date).replace(tzinfo=UTC),
        units_per_region=spec.azure_units,
        subscriptions=spec.azure_subscriptions,
    )
    return plan_tenant(tenant)


@contextmanager
def azure_cloud(spec: FleetSpec) -> Iterator[FakeAzure | None]:
    """The simulated tenant served to the real Azure SDK clients (``None``: no Azure)."""
    if not spec.azure_subscriptions:
        yield None
        return
    fake = FakeAzure(azure_plan(spec), scan_time(spec.first_day).replace(tzinfo=UTC), spec.seed)
    with fake.serving():
        yield fake


def pin_clock(moment: datetime) -> None:
    os.environ["CLOUDWASTE_NOW"] = moment.isoformat()


def complete_weeks(first: date, last: date) -> list[date]:
    """Mondays starting a week that lies wholly inside [first, last]."""
    monday = first + timedelta(days=(7 - first.weekday()) % 7)
    weeks = []
    while monday + timedelta(days=6) <= last:
        weeks.append(monday)
        monday += timedelta(days=7)
    return weeks


class DemoRunner:
    """Replays the simulated history through the real jobs of the code location."""

    def __init__(self, spec: FleetSpec, progress: Callable[[str], None] = print) -> None:
        from cloudwaste_pipeline.definitions import defs

        self.spec = spec
        self.defs = defs
        self.progress = progress
        self.instance = dg.DagsterInstance.get()
        self.failed: list[str] = []
        self.decisions: dict[str, Decision | None] = {}

    def run_job(self, name: str, **kwargs: Any) -> bool:
        result = self.defs.resolve_job_def(name).execute_in_process(
            instance=self.instance, raise_on_error=False, run_config=QUIET, **kwargs
        )
        if not result.success:
            self.failed.append(f"{name} {kwargs.get('partition_key', '')}".strip())
        return result.success

    def materialize(self, asset: str, partition_key: str | None = None) -> bool:
        job = self.defs.resolve_implicit_global_asset_job_def()
        result = job.execute_in_process(
            instance=self.instance,
            asset_selection=[dg.AssetKey(asset)],
            partition_key=partition_key,
            raise_on_error=False,
            run_config=QUIET,
        )
        if not result.success:
            self.failed.append(f"{asset} {partition_key or ''}".strip())
        return result.success

    def replay_history(self, replay: Replay, azure: FakeAzure | None) -> None:
        engine = api.engine()
        days = self.spec.days()
        accounts = targets(self.spec)
        shards = sorted({shard_of(a.name) for a in accounts})
        for index, day in enumerate(days):
            moment = scan_time(day)
            pin_clock(moment)
            replay.advance_to(moment)
            if azure is not None:
                azure.now = moment.replace(tzinfo=UTC)
            for shard in shards:  # as the daily schedule does: one run per shard
                self.run_job("scan_job", partition_key=shard_key(day, shard))
            if day == self.spec.demo_date:
                break
            next_scan = scan_time(days[index + 1])
            with engine.connect() as conn:
                for account in accounts:
                    scan = queries.load_raw_scan(conn, account.provider, account.cloud_id, day)
                    for detection in (scan or {}).get("detections", []):
                        rid = detection["resource_id"]
                        if rid not in self.decisions:
                            first_seen = datetime.fromisoformat(detection["detected_at"])
                            self.decisions[rid] = decide(self.spec.seed, detection, first_seen)
                        self._act(replay, azure, account, rid, moment, next_scan)
            pin_clock(next_scan - timedelta(minutes=5))
            self.run_job("user_actions_job")
            self.progress(f"  {day}: scanned {len(accounts)} account(s)")

    def _act(
        self,
        replay: Replay,
        azure: FakeAzure | None,
        account: Account,
        rid: str,
        start: datetime,
        end: datetime,
    ) -> None:
        decision = self.decisions.get(rid)
        if decision is None:
            return
        when = decision.action_at.replace(tzinfo=None)
        if not start <= when < end:
            return
        api.record_user_action(
            event_id=str(uuid.uuid5(EVENT_NAMESPACE, f"{self.spec.seed}|{rid}|{decision.action}")),
            user_id=account.owner_user_id,
            account_id=account.cloud_id,
            provider=account.provider,
            resource_id=rid,
            action=decision.action,
            action_at=when,
        )
        if decision.action != "deleted":
            return
        if account.provider == "azure" and azure is not None:
            delete_azure(azure, rid, when)
        elif key := replay.key_for(rid):
            replay.schedule_deletion(key, when)

    def derive_outputs(self) -> None:
        first, last = self.spec.first_day, self.spec.demo_date
        pin_clock(scan_time(last) + timedelta(hours=2))
        months = sorted({date(d.year, d.month, 1) for d in self.spec.days()})
        shards = sorted({shard_of(a.name) for a in targets(self.spec)})
        for month in months:
            for shard in shards:
                key = dg.MultiPartitionKey({"month": str(month), "shard": shard})
                self.run_job("cost_trends_job", partition_key=key)
        weeks = complete_weeks(first, last)
        for monday in weeks[:-1]:
            self.materialize("ml_dataset_exports", str(monday))
        if weeks:
            self.run_job("weekly_export_job", partition_key=str(weeks[-1]))
        else:
            if self.materialize("waste_prediction_model"):
                self.materialize("active_waste_model")
            for asset in ("resource_anomaly_model", "cost_forecast", "ml_collection_stats"):
                self.materialize(asset)


def run_demo(
    home: Path,
    spec: FleetSpec,
    progress: Callable[[str], None] = print,
    planned_out: list | None = None,
    database_url: str | None = None,
    azure_out: list | None = None,
) -> DemoSummary:
    """Run the whole demo into ``home`` (the embedded SQLite warehouse unless ``database_url``).

    ``planned_out`` receives the replayed AWS plan and ``azure_out`` the Azure one (with the
    users' deletions), for tests that check the scans against them.
    """
    paths = prepare_home(home)
    if database_url:
        os.environ["CLOUDWASTE_DATABASE_URL"] = database_url
    else:
        os.environ.pop("CLOUDWASTE_DATABASE_URL", None)
    write_accounts_file(paths, spec)
    runner = DemoRunner(spec, progress)
    pin_clock(scan_time(spec.first_day))
    for account, (industry, employees) in zip(targets(spec), DEMO_COMPANIES, strict=False):
        api.set_user_preferences(account.owner_user_id, industry=industry, employees=employees)
    clouds = "AWS estate into moto" + (
        " and an Azure tenant into a local fake of its APIs" if spec.azure_subscriptions else ""
    )
    progress(f"Replaying {spec.history_days} days of a simulated {clouds} ...")
    with moto_cloud(), azure_cloud(spec) as azure:
        replay = Replay(spec, plan_fleet(spec))
        runner.replay_history(replay, azure)
        if planned_out is not None:
            planned_out.extend(replay.planned)
        if azure_out is not None and azure is not None:
            azure_out.extend(azure.resources)
    progress("Cost trends, weekly exports, model, stats ...")
    runner.derive_outputs()
    with api.engine().connect() as conn:
        counts = queries.table_counts(conn)
        scores = schema.resource_anomaly_scores
        scored, flagged = conn.execute(
            sa.select(sa.func.count(), sa.func.count().filter(scores.c.is_anomaly))
        ).one()
        forecasts = conn.execute(
            sa.select(sa.func.count(sa.distinct(schema.cost_forecasts.c.account_hash)))
        ).scalar_one()
    models = sorted(paths.models.glob("waste_prediction_model-*.json"))
    metrics = yaml.safe_load(models[-1].read_text())["metrics"] if models else {}
    return DemoSummary(
        home=paths.home,
        table_counts=counts,
        export_files=sorted(p for p in paths.exports.rglob("*") if p.is_file()),
        model_metrics=metrics,
        failed_runs=runner.failed,
        active_model=(registry.active(paths.models) or {}).get("version"),
        anomalies=(int(scored), int(flagged or 0)),
        forecast_accounts=int(forecasts),
    )


def print_summary(summary: DemoSummary) -> None:
    print("\nCloudWaste demo: done.\n")
    print("Rows per table (anonymized ML store):")
    for table, count in summary.table_counts.items():
        print(f"  {table:<28} {count:>8,}")
    print(f"\nExport files ({len(summary.export_files)}) under {summary.home / 'ml_datasets'}:")
    for path in summary.export_files[-7:]:
        print(f"  {path.relative_to(summary.home)}")
    m = summary.model_metrics
    if m:
        print(
            f"\nwaste_prediction_model: accuracy {m.get('accuracy')} "
            f"(majority baseline {m.get('baseline_accuracy')}), ROC AUC {m.get('roc_auc')}, "
            f"trained on {m.get('train_rows')} resources, tested on {m.get('test_rows')} newer ones"
            f"\nactive_waste_model (used by api.predict_waste): {summary.active_model or 'none'}"
        )
    print(
        f"\nresource_anomaly_model: {summary.anomalies[0]} resources scored, "
        f"{summary.anomalies[1]} flagged (table resource_anomaly_scores)"
        f"\ncost_forecast: {summary.forecast_accounts} account(s) forecast (table cost_forecasts; "
        "an account needs 3 months of cost trends)"
    )
    if summary.failed_runs:
        print(f"\nFailed runs ({len(summary.failed_runs)}): {', '.join(summary.failed_runs[:10])}")
    print(
        f"\nWarehouse: {summary.home / 'warehouse'} (warehouse.db = ML store, raw.db = raw store)"
        f"\nModels:    {summary.home / 'models'}"
        "\nUI:        make ui   then open http://127.0.0.1:3000 (same instance, every run above)"
    )


def replay_estate(spec: FleetSpec) -> Replay:
    """Rebuild the demo's estate in moto as it stands at the demo date, without scanning.

    Ids are seeded per day, so replaying the same plan with the deletions the demo's users made
    (read back from the outbox) gives the same resource ids the demo scanned.
    """
    deleted = deleted_resources()
    replay = Replay(spec, plan_fleet(spec))
    for day in spec.days():
        moment = scan_time(day)
        for resource_id, when in deleted:
            key = replay.key_for(resource_id)
            if key and when < moment:
                replay.schedule_deletion(key, when)
        replay.advance_to(moment)
    return replay


def delete_azure(azure: FakeAzure, resource_id: str, when: datetime) -> None:
    """Delete a resource from the simulated tenant, with the disks of a deleted VM: the portal
    deletes a VM's disks with it by default (``deleteOption: Delete``), and a disk whose VM is
    gone would otherwise keep claiming a manager that no longer exists."""
    target = resource_id.lower()
    for resource in azure.resources:
        owner = resource.owner.resource_id.lower() if resource.owner is not None else None
        if target in (resource.resource_id.lower(), owner) and resource.deleted_at is None:
            resource.deleted_at = when.replace(tzinfo=UTC)


def deleted_resources() -> list[tuple[str, datetime]]:
    """(raw resource id, when) of every deletion the demo's users recorded."""
    events = schema.resource_action_events
    with api.engine().connect() as conn:
        return [
            (row.resource_id, row.action_at)
            for row in conn.execute(
                sa.select(events.c.resource_id, events.c.action_at).where(
                    events.c.action == "deleted"
                )
            )
        ]


def launch_ui(home: Path, port: int, spec: FleetSpec) -> None:
    """``dagster dev`` on the demo's instance, key, accounts, clock and simulated cloud.

    The simulated estate is served by moto from this process for as long as the UI runs, so
    materializing today's scan from the UI scans it for real.
    """
    prepare_home(home)
    os.environ.pop("CLOUDWASTE_DATABASE_URL", None)
    pin_clock(scan_time(spec.demo_date) + timedelta(hours=2))
    workspace = Path(__file__).resolve().parent.parent / "workspace.yaml"
    command = [sys.executable, "-m", "dagster", "dev", "-h", "127.0.0.1", "-p", str(port)]
    command += (
        ["-w", str(workspace)] if workspace.exists() else ["-m", "cloudwaste_pipeline.definitions"]
    )
    with moto_cloud(), azure_cloud(spec) as azure:
        replay_estate(spec)
        if azure is not None:
            azure.now = scan_time(spec.demo_date).replace(tzinfo=UTC)
            for resource_id, when in deleted_resources():
                delete_azure(azure, resource_id, when)
        print(f"Simulated cloud ready; the UI opens at http://127.0.0.1:{port} (Ctrl-C to stop)")
        raise SystemExit(subprocess.call(command))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--home", default=settings.get("CLOUDWASTE_HOME"))
    parser.add_argument("--date", type=date.fromisoformat, default=FleetSpec.demo_date)
    parser.add_argument("--days", type=int, default=FleetSpec.history_days)
    parser.add_argument("--seed", type=int, default=FleetSpec.seed)
    parser.add_argument("--ui", action="store_true", help="open the Dagster UI on the demo")
    parser.add_argument("--port", type=int, default=3000)
    args = parser.parse_args(argv)
    home = Path(args.home).expanduser().resolve()
    spec = FleetSpec(
        seed=args.seed,
        demo_date=args.date,
        history_days=args.days,
        azure_subscriptions=DEMO_SUBSCRIPTIONS,
    )
    if args.ui:
        launch_ui(home, args.port, spec)
    summary = run_demo(home, spec)
    print_summary(summary)
    if summary.failed_runs:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
