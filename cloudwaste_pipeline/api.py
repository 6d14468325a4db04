"""The Python API for notebooks and for the CloudWaste app.

Every function works on the warehouse named by ``CLOUDWASTE_DATABASE_URL`` (else the embedded
SQLite file under ``CLOUDWASTE_HOME``) and needs no running Dagster.
"""

from __future__ import annotations

import uuid
from dataclasses import asdict, replace
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pandas as pd
import sqlalchemy as sa

from cloudwaste_pipeline import settings
from cloudwaste_pipeline.account_runs import failing_accounts, scan_accounts  # noqa: F401
from cloudwaste_pipeline.accounts import Account, find_account, parse_account
from cloudwaste_pipeline.errors import CloudWasteError
from cloudwaste_pipeline.exports import (
    COMPRESSIONS,
    FORMATS,
    ExportProgress,
    ExportResult,
    as_day,
    export_subfolder,
    resolve_window,
)
from cloudwaste_pipeline.privacy import erasure, export_erasure, keyring, rotation
from cloudwaste_pipeline.privacy.anonymize import hash_user
from cloudwaste_pipeline.privacy.events import (
    CONFLICTING_DUPLICATE,
    check_action_event,
    same_event,
)
from cloudwaste_pipeline.privacy.export_rows import Wanted
from cloudwaste_pipeline.quality import export_if_valid
from cloudwaste_pipeline.sharding import shard_of  # noqa: F401 (per-account control)
from cloudwaste_pipeline.warehouse import schema
from cloudwaste_pipeline.warehouse.engine import make_engine, upgrade
from cloudwaste_pipeline.warehouse.load import insert_new, replace_rows


class ExportWriteError(CloudWasteError):
    """The export folder cannot be written (no permission, disk full...)."""


def engine(database_url: str | None = None) -> sa.Engine:
    """The warehouse engine, migrated to the latest schema; every setting is checked first.

    A malformed URL, a driver not installed or a database that cannot be reached raise
    ``WarehouseUnavailable`` (a ``CloudWasteError``), the password hidden.
    """
    settings.validate_all()
    built = make_engine(database_url or settings.database_url())
    upgrade(built)
    return built


def _checked_key(built: sa.Engine) -> bytes:
    """The key chain from the environment, checked against the warehouse's key history: every
    call that hashes stops here (``KeyMismatchError``) before writing, if the key is not the
    warehouse's."""
    return keyring.checked_key(built)


def record_user_action(
    *,
    user_id: str,
    account_id: str,
    provider: str,
    resource_id: str,
    action: str,
    action_at: datetime | str | None = None,
    event_id: str | uuid.UUID | None = None,
    context: dict[str, Any] | None = None,
    database_url: str | None = None,
) -> str:
    """Append one user decision to the outbox; ``user_action_sensor`` picks it up.

    ``resource_id`` is the id the scan reports (the ARN for AWS, the full resource id for Azure);
    ``action_at`` a datetime (naive = UTC) or ISO text, at most a day ahead; ``context`` a JSON
    object of at most 16 KiB. Returns the event id (a new UUID unless given). Recording the same
    event twice is a no-op; the same event id with other content raises ``CloudWasteError``, as
    does any field the drop folder would quarantine (the message names the field, never its
    value).
    """
    now = settings.now()
    event = {
        "event_id": str(event_id) if isinstance(event_id, uuid.UUID) else event_id,
        "user_id": user_id,
        "account_id": account_id,
        "provider": provider,
        "resource_id": resource_id,
        "action": action,
        "action_at": now if action_at is None else action_at,
        "context": context,
    }
    if event["event_id"] is None:
        event["event_id"] = str(uuid.uuid4())
    row, problem = check_action_event(event, now)
    if row is None:
        raise CloudWasteError(f"invalid user action: {problem}")
    table = schema.resource_action_events
    with engine(database_url).begin() as conn:
        received = {**row, "received_at": now.astimezone(UTC).replace(tzinfo=None)}
        insert_new(conn, table, pd.DataFrame([received]), ["event_id"])
        stored = conn.execute(sa.select(table).where(table.c.event_id == row["event_id"])).first()
        if stored is not None and not same_event(stored._mapping, row):
            raise CloudWasteError(
                f"invalid user action: {CONFLICTING_DUPLICATE}; "
                "give a new event id for a new decision"
            )
    return row["event_id"]


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
    warehouse = engine(database_url)
    user_hash = hash_user(user_id, _checked_key(warehouse))
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
    with warehouse.begin() as conn:
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


def _known_accounts(accounts_file: str | None) -> list[Account]:
    """Every account of the account sources (file, accounts query, AWS Organizations), or none
    when nothing is configured: a user's erasure covers the accounts they own in any source."""
    from cloudwaste_pipeline.account_sources import load_account_list

    path = Path(accounts_file) if accounts_file else settings.paths().accounts_file
    remote = settings.get("CLOUDWASTE_ACCOUNTS_DATABASE_URL") or settings.get(
        "CLOUDWASTE_ACCOUNTS_AWS_ORG_PARENTS"
    )
    if not path.exists() and not remote:
        return []
    return load_account_list(path).accounts


def _resolve_account(
    provider: str, account: str, regions: list[str] | None, accounts_file: str | None
) -> Account:
    path = Path(accounts_file) if accounts_file else settings.paths().accounts_file
    known = _known_accounts(accounts_file)
    if any(a.name == account for a in known):
        return find_account(known, account)
    # An ad-hoc account is checked as an entry of the accounts file is.
    entry: dict[str, Any] = {"name": "adhoc", "provider": provider, "owner_user_id": "adhoc"}
    if provider == "aws":
        entry |= {"account_id": account, "regions": regions}
    elif provider == "azure":
        # Read with ``DefaultAzureCredential`` whatever its tenant: the GUID only passes the check.
        entry |= {"subscription_id": account, "tenant_id": str(uuid.UUID(int=0))}
    checked = parse_account(entry, f"account (not an alias of {path})")
    return replace(checked, tenant_id=None) if checked.provider == "azure" else checked


def load_dataset(
    name: str, start: date | str | None = None, end: date | str | None = None
) -> pd.DataFrame:
    """One ML table or model output (anonymized) as a DataFrame, optionally limited to a date
    window (dates or ``YYYY-MM-DD``): e.g. ``load_dataset("resource_anomaly_scores")``."""
    tables = {t.name: t for t in (*schema.ML_TABLES, *schema.MODEL_TABLES)}
    if name not in tables:
        raise CloudWasteError(f"unknown dataset {name!r}; choose from {sorted(tables)}")
    start = None if start is None else as_day(start, "start")
    end = None if end is None else as_day(end, "end")
    table = tables[name]
    query = sa.select(table)
    stamp = schema.ROW_TIME.get(name)
    if stamp and start:
        query = query.where(table.c[stamp] >= datetime.combine(start, datetime.min.time()))
    if stamp and end and end < date.max:
        query = query.where(
            table.c[stamp] < datetime.combine(end + timedelta(days=1), datetime.min.time())
        )
    with engine().connect() as conn:
        return pd.read_sql(query, conn)


def export_datasets(
    last_days: int | None = None,
    start: date | str | None = None,
    end: date | str | None = None,
    formats: tuple[str, ...] = FORMATS,
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

    Every argument is checked before anything is read or written: a bad window, format or
    compression, or an export folder that cannot be written, is a ``CloudWasteError`` whose
    message says what to change.
    """
    from cloudwaste_pipeline.defs.resources import FilesResource

    if days is not None and last_days is not None and days != last_days:
        raise CloudWasteError("give last_days or its old name days, not both")
    window_start, window_end = resolve_window(
        last_days if last_days is not None else days, start, end
    )
    formats = _export_formats(formats)
    if compression not in COMPRESSIONS:
        raise CloudWasteError(f"compression must be one of {', '.join(COMPRESSIONS)}")
    files = FilesResource(exports_dir=str(output_dir) if output_dir else None, exports_uri=s3_uri)
    warehouse = engine()
    where = output_dir or s3_uri or "the export folder"
    try:
        destination = files.export_destination(export_subfolder("adhoc", window_start, window_end))
        where = destination.location
        result, _ = export_if_valid(
            warehouse,
            destination,
            window_start,
            window_end,
            formats=formats,
            compression=compression,
            progress=progress,
            kind="adhoc",
        )
    except OSError as exc:
        raise ExportWriteError(
            f"cannot write the export to {where}: {exc.strerror or exc}"
        ) from exc
    return result


def _export_formats(formats: Any) -> tuple[str, ...]:
    """The formats asked for, each once; one format may be given as a plain string."""
    if isinstance(formats, str):
        chosen: tuple[Any, ...] = (formats,)
    else:
        chosen = tuple(formats) if isinstance(formats, list | tuple | set | frozenset) else ()
    if not chosen or any(not isinstance(f, str) or f not in FORMATS for f in chosen):
        raise CloudWasteError(f"formats must be one or more of {', '.join(FORMATS)}")
    return tuple(dict.fromkeys(chosen))


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
    they own per the accounts file), records a tombstone so no re-run brings them back, then
    rewrites the published export files that hold the subject without its rows (local, and under
    the S3 exports prefix when ``CLOUDWASTE_EXPORTS_S3_URI`` is set) and removes export staging
    debris. The report lists per store what was removed and what remains (``complete``); it
    carries hashes, paths and counts only, never the ids given.
    """
    from cloudwaste_pipeline.defs.resources import FilesResource, s3_client

    accounts = _known_accounts(accounts_file)
    now = settings.now()
    warehouse = engine(database_url)
    # A wrong key would hash to rows that do not exist: erase nothing and report success.
    key = _checked_key(warehouse)
    with warehouse.begin() as conn:
        report = erasure.erase(
            conn,
            key,
            user_id=user_id,
            account_id=account_id,
            provider=provider,
            accounts=accounts,
            reason=reason,
            now=now,
        )
    # After the commit: rewriting the exports (large, maybe remote) must not hold row locks.
    # Exports published before a key rotation hold the hashes of their epoch (their manifest
    # records it): the subject is searched under every epoch's hashes, which never collide.
    earlier = [
        {"kind": s.kind, "hash": s.hash}
        for chain in keyring.earlier_chains(key)
        for s in erasure.subjects_for(
            chain, user_id=user_id, account_id=account_id, provider=provider, accounts=accounts
        )
    ]
    wanted = Wanted.of([*report.subjects, *earlier])
    report.exports = export_erasure.erase_local_exports(settings.paths().exports, wanted, now)
    files = FilesResource()
    location = files.exports_s3_location()
    if location is not None:
        bucket, prefix = location
        report.exports.extend(
            export_erasure.erase_s3_exports(s3_client(files), bucket, prefix, wanted, now)
        )
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
            # Unchecked on purpose: nothing is written and no feature uses a hash, so the
            # prediction does not depend on the key (nor need a warehouse).
            key = keyring.load_keychain()
            rows = training_rows(list(detections), key, now.date(), now)
        except KeyError as exc:
            raise ValueError(f"a detection lacks the scanner's field {exc}") from exc
    if rows.empty:
        return []
    return [float(p) for p in model.predict_proba(build_features(rows))[:, 1]]


def rotate_key(new_key: str, *, database_url: str | None = None) -> rotation.RotationReport:
    """Re-key the warehouse to ``new_key``: every stored hash becomes HMAC(new key, hash), in one
    transaction, and the new key epoch is recorded (see ``privacy/rotation.py``).

    The current key chain comes from the environment and must be the warehouse's (else
    ``KeyMismatchError``, nothing changed). Afterwards set ``CLOUDWASTE_ANONYMIZATION_KEY`` to
    the new key and append the old one to ``CLOUDWASTE_ANONYMIZATION_PREVIOUS_KEYS``.
    """
    old = keyring.load_keychain()
    new = rotation.new_key_from_text(new_key)
    return rotation.rotate(engine(database_url), old, new, settings.now())
