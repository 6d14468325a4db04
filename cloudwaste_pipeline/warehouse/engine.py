"""Engines and migrations for the warehouse, on PostgreSQL or embedded SQLite.

On SQLite the raw store is a separate file (``raw.db`` beside ``warehouse.db``) attached as
schema ``raw`` on every connection, so the same ``raw.*`` table names work on both engines and
raw ids never sit in the file that holds the ML tables.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from sqlalchemy.engine import Connection, Engine

from cloudwaste_pipeline import settings
from cloudwaste_pipeline.warehouse.schema import RAW_SCHEMA

MIGRATIONS = Path(__file__).resolve().parent / "migrations"
VERSION_TABLE = "cloudwaste_alembic_version"
MIGRATION_LOCK = 7_300_417  # pg_advisory_xact_lock key: one migrator at a time


def _raw_store_path(database: str | None) -> str:
    if not database or database == ":memory:":
        return ":memory:"
    return str(Path(database).with_name("raw.db"))


_ENGINES: dict[str, Engine] = {}
_LOCK = threading.Lock()


def make_engine(url: str | None = None) -> Engine:
    """One engine (and pool) per URL per process, shared by resources, sensors and the API."""
    url = url or settings.database_url()
    with _LOCK:
        if url not in _ENGINES:
            _ENGINES[url] = _create(url)
        return _ENGINES[url]


def _create(url: str) -> Engine:
    parsed = sa.make_url(url)
    if parsed.get_backend_name() != "sqlite":
        return sa.create_engine(url, pool_pre_ping=True)
    database = parsed.database
    if database and database != ":memory:":
        Path(database).parent.mkdir(parents=True, exist_ok=True)
    engine = sa.create_engine(url, connect_args={"timeout": 30})
    raw_path = _raw_store_path(database)

    @sa.event.listens_for(engine, "connect")
    def _connect(dbapi_connection: Any, _record: Any) -> None:
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA busy_timeout = 30000")
        cursor.execute("PRAGMA foreign_keys = ON")
        if raw_path != ":memory:":
            cursor.execute("PRAGMA journal_mode = WAL")
        cursor.execute(f"ATTACH DATABASE '{raw_path}' AS {RAW_SCHEMA}")
        if raw_path != ":memory:":
            cursor.execute(f"PRAGMA {RAW_SCHEMA}.journal_mode = WAL")
        cursor.close()

    return engine


def dispose_engines() -> None:
    """Close every cached pool (tests that drop databases call this)."""
    with _LOCK:
        for engine in _ENGINES.values():
            engine.dispose()
        _ENGINES.clear()


def is_postgres(bind: Engine | Connection) -> bool:
    return bind.dialect.name == "postgresql"


def alembic_config(connection: Connection) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.attributes["connection"] = connection
    return config


def upgrade(engine: Engine, revision: str = "head") -> None:
    """Migrate to ``revision``; idempotent, and serialized across processes on PostgreSQL."""
    with engine.begin() as connection:
        if is_postgres(connection):
            connection.execute(sa.text("SELECT pg_advisory_xact_lock(:k)"), {"k": MIGRATION_LOCK})
        command.upgrade(alembic_config(connection), revision)


def downgrade(engine: Engine, revision: str) -> None:
    with engine.begin() as connection:
        command.downgrade(alembic_config(connection), revision)
