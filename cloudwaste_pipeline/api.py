"""The Python API for notebooks and for the CloudWaste app.

Every function works on the warehouse named by ``CLOUDWASTE_DATABASE_URL`` (else the embedded
SQLite file under ``CLOUDWASTE_HOME``) and needs no running Dagster.
"""

from __future__ import annotations

import uuid
from dataclasses import asdict
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pandas as pd
import sqlalchemy as sa

from cloudwaste_pipeline import settings
from cloudwaste_pipeline.accounts import GUID_PATTERN, Account, find_account, load_accounts
from cloudwaste_pipeline.exports import (
    ExportProgress,
    ExportResult,
    export_subfolder,
    resolve_window,
)
from cloudwaste_pipeline.privacy import erasure
from cloudwaste_pipeline.privacy.anonymize import hash_user, load_key
from cloudwaste_pipeline.privacy.derive import ACTIONS, validate_action_event
from cloudwaste_pipeline.quality import export_if_valid
from cloudwaste_pipeline.warehouse import schema
from cloudwaste_pipeline.warehouse.engine import make_engine, upgrade
from cloudwaste_pipeline.warehouse.load import insert_new, replace_rows


def engine(database_url: str | None = None) -> sa.Engine:
    """The warehouse engine, migrated to the latest schema; every setting is checked first."""
    settings.validate_all()
    built = make_engine(database_url or settings.database_url())
    upgrade(built)
    return built


def record_user_action(
    *,
    user_id: str,
    account_id: str,
    provider: str,
    resource_id: str,
    action: str,
    action_at: datetime | None = None,
    event_id: str | None = None,
    context: dict[str, Any] | None = None,
    database_url: str | None = None,
) -> str:
    """Append one user decision to the outbox; ``user_action_sensor`` picks it up.

    ``resource_id`` is the id the scan reports (the ARN for AWS, the full resource id for Azure).
    Returns the event id (a new UUID unless given); recording the same event id twice is a no-op.
    """
    when = action_at or settings.now()
    event = {
        "event_id": event_id or str(uuid.uuid4()),
        "user_id": user_id,
        "account_id": account_id,
        "provider": provider,
        "resource_id": resource_id,
        "action": action,
        "action_at": when,
    }
    problem = validate_action_event(event)
    if problem:
        raise ValueError(f"invalid user action: {problem}; actions are {', '.join(ACTIONS)}")
    row = {
        **event,
        "action_at": when.astimezone(UTC).replace(tzinfo=None) if when.tzinfo else when,
        "context": context,
        "received_at": settings.now().replace(tzinfo=None),
    }
    with engine(database_url).begin() as conn:
        insert_new(conn, schema.resource_action_events, pd.DataFrame([row]), ["event_id"])
    return event["event_id"]


COMPANY_SIZE_BUCKETS = ((10, "1-10"), (50, "11-50"), (200, "51-200"), (1000, "201-1000"))


def company_size_bucket(employees: int) -> str:
    """Coarse buckets: an exact head count can identify a company."""
    for limit, label in COMPANY_SIZE_BUCKETS:
        if employees <= limit:
            return label
    return "1000+"


def set_user_preferences(
    user_id: str,
    *,
    industry: str | None = None,
    employees: int | None = None,
    retention_years: int = 3,
    consent: bool = False,
    database_url: str | None = None,
) -> str:
    """Store (or replace) a user's ML preferences under their hash; returns the hash."""
    if not 1 <= retention_years <= 10:
        raise ValueError("retention_years must be between 1 and 10")
    key = load_key()
    user_hash = hash_user(user_id, key)
    now = settings.now().replace(tzinfo=None)
    table = schema.user_preferences
    row = {
        "user_hash": user_hash,
        "ml_data_collection_consent": consent,
        "ml_consent_date": now if consent else None,
        "anonymized_industry": industry.strip().lower()[:50] if industry else None,
        "anonymized_company_size": company_size_bucket(employees) if employees else None,
        "data_retention_years": retention_years,
        "updated_at": now,
    }
    with engine(database_url).begin() as conn:
        if erasure.is_erased(conn, "user", user_hash):
            # The pipeline drops an erased user's actions; preferences alone would be a trace.
            raise ValueError("this user was erased (GDPR); their preferences are not stored")
        replace_rows(conn, table, table.c.user_hash == user_hash, pd.DataFrame([row]))
    return user_hash


def scan(
    provider: str = "aws",
    account: str | None = None,
    regions: list[str] | None = None,
    accounts_file: str | None = None,
) -> pd.DataFrame:
    """Scan one account now and return its detections (raw ids: for the account's owner only).

    ``account`` is an alias from the accounts file or, for ad-hoc use, a raw AWS account id or
    Azure subscription id scanned with the default credentials (boto3's chain,
    ``DefaultAzureCredential``). ``frame.attrs["errors"]`` lists what could not be read.
    """
    if account is None:
        raise ValueError("give account=<alias from the accounts file or a raw account id>")
    target = _resolve_account(provider, account, regions, accounts_file)
    if target.provider == "azure":
        from cloudwaste_pipeline.scanning import azure

        result = azure.run_scan(target, settings.now())
    else:
        from cloudwaste_pipeline.scanning.aws import run_scan

        result = run_scan(target, settings.now(), regions=regions)
    frame = pd.DataFrame(result.detections)
    frame.attrs["errors"] = [asdict(e) for e in result.errors]
    return frame


def _resolve_account(
    provider: str, account: str, regions: list[str] | None, accounts_file: str | None
) -> Account:
    path = Path(accounts_file) if accounts_file else settings.paths().accounts_file
    if path.exists():
        known = load_accounts(path)
        if any(a.name == account for a in known):
            return find_account(known, account)
    if provider == "aws":
        return Account(
            name="adhoc",
            provider="aws",
            owner_user_id="adhoc",
            account_id=account,
            regions=tuple(regions or ()),
        )
    if provider == "azure" and GUID_PATTERN.match(account):
        return Account(
            name="adhoc", provider="azure", owner_user_id="adhoc", subscription_id=account
        )
    raise ValueError(f"{account!r} is not an alias of the accounts file at {path}")


def load_dataset(name: str, start: date | None = None, end: date | None = None) -> pd.DataFrame:
    """One ML table or model output (anonymized) as a DataFrame, optionally limited to a date
    window: e.g. ``load_dataset("resource_anomaly_scores")`` or ``"cost_forecasts"``."""
    tables = {t.name: t for t in (*schema.ML_TABLES, *schema.MODEL_TABLES)}
    if name not in tables:
        raise ValueError(f"unknown dataset {name!r}; choose from {sorted(tables)}")
    table = tables[name]
    query = sa.select(table)
    stamp = schema.ROW_TIME.get(name)
    if stamp and start:
        query = query.where(table.c[stamp] >= datetime.combine(start, datetime.min.time()))
    if stamp and end:
        query = query.where(
            table.c[stamp] < datetime.combine(end + timedelta(days=1), datetime.min.time())
        )
    with engine().connect() as conn:
        return pd.read_sql(query, conn)


def export_datasets(
    last_days: int | None = None,
    start: date | None = None,
    end: date | None = None,
    formats: tuple[str, ...] = ("json", "csv", "parquet"),
    compression: str = "none",
    output_dir: str | Path | None = None,
    s3_uri: str | None = None,
    progress: ExportProgress | None = None,
    *,
    days: int | None = None,
) -> ExportResult:
    """Ad-hoc export of a window under ``adhoc/<start>_<end>/``: the last ``last_days`` days
    (default 90) or [start, end]; ``compression="gzip"`` for .json.gz / .csv.gz and gzip Parquet.

    The same function as the ``adhoc_export_job`` of the UI: data quality first (an ERROR check
    that fails raises ``DataQualityError`` and writes nothing), then the files, the manifest
    last. Ad-hoc windows get their own folder, so they never overwrite a scheduled week's files.
    Local files under ``output_dir`` (default ``$CLOUDWASTE_HOME/ml_datasets``), or S3 when
    ``s3_uri`` or ``CLOUDWASTE_EXPORTS_S3_URI`` is set. ``days`` is the old name of ``last_days``.
    """
    from cloudwaste_pipeline.defs.resources import FilesResource

    window_start, window_end = resolve_window(last_days or days, start, end)
    files = FilesResource(exports_dir=str(output_dir) if output_dir else None, exports_uri=s3_uri)
    destination = files.export_destination(export_subfolder("adhoc", window_start, window_end))
    result, _ = export_if_valid(
        engine(),
        destination,
        window_start,
        window_end,
        formats=formats,
        compression=compression,
        progress=progress,
        kind="adhoc",
    )
    return result


def stats() -> dict[str, Any]:
    """The collection figures of the admin widget (the ``ml_collection_stats`` asset's)."""
    from cloudwaste_pipeline.defs.assets.outputs import collection_stats
    from cloudwaste_pipeline.defs.resources import WarehouseResource

    return collection_stats(WarehouseResource())


def erase(
    *,
    user_id: str | None = None,
    account_id: str | None = None,
    provider: str = "aws",
    reason: str | None = None,
    accounts_file: str | None = None,
    database_url: str | None = None,
) -> erasure.ErasureReport:
    """GDPR erasure of a user and/or a cloud account (see ``privacy/erasure.py``).

    Removes every row derived from the subject from every table (for a user, also the accounts
    they own per the accounts file), records a tombstone so no re-run brings them back, and
    reports rows removed per table and the export files already written that hold the subject
    (local, and under the S3 exports prefix when ``CLOUDWASTE_EXPORTS_S3_URI`` is set).
    The report carries hashes and counts only, never the ids given.
    """
    from cloudwaste_pipeline.defs.resources import FilesResource, s3_client

    path = Path(accounts_file) if accounts_file else settings.paths().accounts_file
    accounts = load_accounts(path) if path.exists() else []
    with engine(database_url).begin() as conn:
        report = erasure.erase(
            conn,
            load_key(),
            user_id=user_id,
            account_id=account_id,
            provider=provider,
            accounts=accounts,
            reason=reason,
            now=settings.now(),
        )
    # After the commit: searching the exports (large, maybe remote) must not hold row locks.
    hashes = [s["hash"] for s in report.subjects]
    report.exported_files = erasure.exported_files(settings.paths().exports, hashes)
    files = FilesResource()
    location = files.exports_s3_location()
    if location is not None:
        report.exported_files += erasure.exported_objects(s3_client(files), *location, hashes)
    return report


def predict_waste(
    detections: list[dict[str, Any]] | pd.DataFrame, *, models_dir: str | Path | None = None
) -> list[float]:
    """P(the user deletes it) for each detection, by the active model, in the input's order.

    ``detections``: detections as the scanner reports them (dicts with ``provider``,
    ``account_id``, ``resource_id``, ``resource_type``, ``detection_scenario``,
    ``confidence_level``, ``cost_monthly``, ``detected_at``... as in ``raw_cloud_scans``), which
    are anonymized exactly as for training; or ``ml_training_data`` rows (a DataFrame from
    ``load_dataset``). The model is the one ``active_waste_model`` promoted; ``NoActiveModel`` if
    none has been. "0.87" is CloudWaste's "87% chance this resource will become waste".
    """
    from cloudwaste_pipeline.ml import registry
    from cloudwaste_pipeline.ml.features import build_features
    from cloudwaste_pipeline.privacy.derive import training_rows

    folder = Path(models_dir) if models_dir else settings.paths().models
    model, _ = registry.load_active(folder)
    if isinstance(detections, pd.DataFrame):
        rows = detections
    else:
        if not detections:
            return []
        now = settings.now()
        try:
            rows = training_rows(list(detections), load_key(), now.date(), now)
        except KeyError as exc:
            raise ValueError(f"a detection lacks the scanner's field {exc}") from exc
    if rows.empty:
        return []
    return [float(p) for p in model.predict_proba(build_features(rows))[:, 1]]
