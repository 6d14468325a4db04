"""Accounts from a query on the app's database: its table of connected cloud accounts.

The query (``CLOUDWASTE_ACCOUNTS_QUERY``) returns one row per account, its columns named as the
accounts file's fields (``name, provider, owner_user_id, account_id, regions, role_arn,
external_id, real_costs, tenant_id, subscription_id, workspace_id``; the first three are
required, the rest may be left out). NULL means the field is absent. ``regions`` is a JSON array
(``["us-east-1", "eu-west-1"]``, or a PostgreSQL array or JSON column) or comma-separated text
(``us-east-1,eu-west-1``); NULL or ``[]`` means every enabled region. ``real_costs`` is a boolean
(SQLite's 0/1 too). Ids must arrive as text: an account id stored as a number has lost its
leading zeros, so the row is refused, not padded.

Each row is checked as an entry of the accounts file is (``parse_account``); a bad row is a
``Rejection`` naming its row number, and the other rows are still scanned. A query of the wrong
shape (an unknown or missing column) or one that fails is an ``AccountSourceError``: that is the
configuration, not a row.

The query runs read-only: one statement (``SqlQuery``), in a transaction that is rolled back, on
PostgreSQL ``SET TRANSACTION READ ONLY`` with a ``statement_timeout``, on SQLite
``PRAGMA query_only``. Give it a read-only database user as well. It goes to the driver verbatim
(no bind-parameter parsing of ``:name`` or ``%``), and no error repeats the URL's password.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any
from uuid import UUID

from cloudwaste_pipeline.account_sources.model import (
    AccountSourceError,
    Found,
    Rejection,
    SourceResult,
)
from cloudwaste_pipeline.accounts import ALIAS_PATTERN, AccountsFileError, parse_account
from cloudwaste_pipeline.privacy.anonymize import scrub_text

SOURCE = "accounts query"
FIELDS = (
    "name",
    "provider",
    "owner_user_id",
    "account_id",
    "regions",
    "role_arn",
    "external_id",
    "real_costs",
    "tenant_id",
    "subscription_id",
    "workspace_id",
)
REQUIRED_COLUMNS = ("name", "provider", "owner_user_id")
TIMEOUT_SECONDS = 60
"""The query's statement timeout and the connection timeout: a scan should not wait on a lock."""
MAX_ROWS = 200_000
"""Far more accounts than a deployment scans; a query returning more is wrong (no WHERE)."""
FETCH_ROWS = 5_000


def query_accounts(url: str, query: str) -> SourceResult:
    """The accounts the query returns; bad rows rejected, each with its reason."""
    columns, rows = read_rows(url, query)
    return parse_rows(columns, rows)


# --- rows into accounts (pure) ------------------------------------------------------------------


def parse_rows(columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> SourceResult:
    """Rows of the query (``columns`` as the query named them) checked one by one."""
    names = _column_names(columns)
    found, rejected = [], []
    for number, row in enumerate(rows, start=1):
        where = f"row {number} of the {SOURCE}"
        entry = {name: value for name, value in zip(names, row, strict=True) if value is not None}
        try:
            account = parse_account(_as_entry(entry, _named(where, entry)), where)
        except AccountsFileError as exc:
            rejected.append(Rejection(SOURCE, number, str(exc), _alias(entry)))
            continue
        found.append(Found(number, where, account))
    return SourceResult(SOURCE, found, rejected)


def _column_names(columns: Sequence[str]) -> list[str]:
    """The query's columns as field names (any case); a column that is none stops the read."""
    names = [str(c).lower() for c in columns]
    unknown = [c for c in names if c not in FIELDS]
    if unknown:
        shown = ", ".join(repr(c) if c.isidentifier() and len(c) <= 40 else "?" for c in unknown)
        raise AccountSourceError(
            f"the {SOURCE} returns column(s) {shown} that are not accounts-file fields; "
            f"name its columns {', '.join(FIELDS)} (AS ...)"
        )
    repeated = sorted({c for c in names if names.count(c) > 1})
    missing = [c for c in REQUIRED_COLUMNS if c not in names]
    if repeated or missing:
        raise AccountSourceError(
            f"the {SOURCE} must return each of {', '.join(REQUIRED_COLUMNS)} once "
            f"(repeated: {repeated or 'none'}, missing: {missing or 'none'})"
        )
    return names


def _alias(entry: dict[str, Any]) -> str | None:
    name = entry.get("name")
    return name if isinstance(name, str) and ALIAS_PATTERN.match(name) else None


def _named(where: str, entry: dict[str, Any]) -> str:
    """``where`` with the alias, as ``parse_account`` names an entry once its alias is valid."""
    alias = _alias(entry)
    return f"{where} ({alias})" if alias else where


def _as_entry(entry: dict[str, Any], where: str) -> dict[str, Any]:
    """A row's values as the file's YAML would give them: text, a list of regions, a boolean.

    Values of other types are refused here, so ``parse_account`` never speaks of quoting YAML.
    """
    for key, value in entry.items():
        if key == "regions":
            entry[key] = _regions(value, where)
        elif key == "real_costs":
            if isinstance(value, int) and value in (0, 1):  # SQLite's booleans; True is an int
                entry[key] = bool(value)
            else:
                raise AccountsFileError(f"{where}: real_costs must be a boolean (or 0/1)")
        elif isinstance(value, UUID):
            entry[key] = str(value)
        elif not isinstance(value, str):
            raise AccountsFileError(
                f"{where}: {key} must be text, but the query returned a {type(value).__name__}; "
                "cast it to text in the query"
            )
    return entry


def _regions(value: Any, where: str) -> list[Any]:
    if isinstance(value, str):
        text = value.strip()
        if not text:
            raise AccountsFileError(f"{where}: regions is empty text; NULL means every region")
        if text[0] not in '[{"':  # JSON starts so; a region name never does
            return [part.strip() for part in text.split(",")]
        try:
            value = json.loads(text)
        except ValueError:
            raise AccountsFileError(f"{where}: regions is not a valid JSON array") from None
    if not isinstance(value, list) or not all(isinstance(r, str) for r in value):
        raise AccountsFileError(
            f"{where}: regions must be a JSON array of region names or comma-separated names"
        )
    return value


# --- the query (I/O) ----------------------------------------------------------------------------


def read_rows(url: str, query: str) -> tuple[list[str], list[tuple[Any, ...]]]:
    """The query's column names and rows, read in a read-only transaction that is rolled back."""
    import sqlalchemy as sa
    from sqlalchemy.pool import NullPool

    from cloudwaste_pipeline.setting_parsers import SqlQuery

    try:
        query = SqlQuery().parse(query)
        target = sa.make_url(url)
    except (ValueError, sa.exc.ArgumentError) as exc:
        raise AccountSourceError(f"the {SOURCE} cannot run: {exc}") from None
    backend = target.get_backend_name()
    if backend not in ("postgresql", "sqlite"):
        raise AccountSourceError(f"the {SOURCE} runs on PostgreSQL or SQLite, not {backend}")
    if backend == "sqlite" and not Path(target.database or "").is_file():
        # sqlite3 would create an empty database where none is, and find no accounts in it.
        raise AccountSourceError(f"the {SOURCE}'s SQLite database {target.database} is not a file")
    connect_args = {"connect_timeout": TIMEOUT_SECONDS} if backend == "postgresql" else {}
    engine = sa.create_engine(target, poolclass=NullPool, connect_args=connect_args)
    try:
        connection = engine.raw_connection()  # the driver's own: the query is sent verbatim
        try:
            cursor = connection.cursor()
            if backend == "postgresql":
                cursor.execute("SET TRANSACTION READ ONLY")
                cursor.execute(f"SET LOCAL statement_timeout = {TIMEOUT_SECONDS * 1000}")
            else:
                cursor.execute("PRAGMA query_only = ON")
            cursor.execute(query)
            columns = [d[0] for d in cursor.description or ()]
            rows = _fetch(cursor)
        finally:
            connection.rollback()
            connection.close()
    except (sa.exc.SQLAlchemyError, engine.dialect.loaded_dbapi.Error) as exc:
        raise AccountSourceError(
            f"the {SOURCE} on {_where(target)} failed: {_reason(exc, target.password)}"
        ) from None
    finally:
        engine.dispose()
    return columns, rows


def _fetch(cursor: Any) -> list[tuple[Any, ...]]:
    rows: list[tuple[Any, ...]] = []
    while batch := cursor.fetchmany(FETCH_ROWS):
        rows.extend(batch)
        if len(rows) > MAX_ROWS:
            raise AccountSourceError(f"the {SOURCE} returns more than {MAX_ROWS} rows")
    return rows


def _where(target: Any) -> str:
    """The database, by backend, host and name: the URL's user, password and options left out."""
    if target.get_backend_name() == "sqlite":
        return f"SQLite {target.database}"
    return f"PostgreSQL {target.host or 'localhost'}:{target.port or 5432}/{target.database}"


def _reason(exc: Exception, password: str | None) -> str:
    """The driver's first line (the rest quotes the query), ids scrubbed, no password."""
    error = getattr(exc, "orig", None) or exc
    lines = str(error).strip().splitlines()
    line = lines[0] if lines else type(error).__name__
    if password:
        line = line.replace(str(password), "***")
    return scrub_text(line)[:300]
