"""Engines and migrations for the warehouse, on PostgreSQL or embedded SQLite.

On SQLite the raw store is a separate file (``raw.db`` beside ``warehouse.db``) attached as
schema ``raw`` on every connection, so the same ``raw.*`` table names work on both engines while
raw ids never sit in the file that holds the ML tables (the one that gets copied around).

Migrations are alembic's, run in code (``upgrade``): no ``alembic.ini`` needs to be found at run
time, so an installed wheel, the Dagster code server and the API all migrate the same way.
alembic is imported when a migration runs, not at load: the code location imports this module
in every process, and a process that never opens the warehouse need not pay for alembic.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from cloudwaste_pipeline import settings
from cloudwaste_pipeline.errors import CloudWasteError
from cloudwaste_pipeline.warehouse.schema import RAW_SCHEMA, dumps_json, metadata

if TYPE_CHECKING:
    from alembic.config import Config

MIGRATIONS = Path(__file__).resolve().parent / "migrations"
VERSION_TABLE = "cloudwaste_alembic_version"
"""Not alembic's default ``alembic_version``: Dagster's storage may share the database."""

MIGRATION_LOCK = 7_300_417
"""``pg_advisory_xact_lock`` key: one migrator at a time per PostgreSQL database."""

SQLITE_BUSY_TIMEOUT_MS = 30_000
POSTGRES_CONNECT_TIMEOUT_S = 15
"""libpq waits forever for a host that drops packets; a command should say so in seconds."""
URL_EXAMPLE = "postgresql+psycopg2://user:password@host:5432/database"

_ENGINES: dict[str, Engine] = {}
_LOCK = threading.Lock()


class WarehouseUnavailable(CloudWasteError):
    """The warehouse URL is malformed, names a driver not installed, or cannot be connected to.

    The message shows the URL with its password hidden (or not at all when it does not parse).
    """


def raw_store_path(database: str | None) -> str:
    """The raw store beside the main SQLite file (``:memory:`` for an in-memory main db)."""
    if not database or database == ":memory:":
        return ":memory:"
    return str(Path(database).with_name("raw.db"))


def make_engine(url: str | None = None) -> Engine:
    """One engine (and so one pool) per URL per process, shared by resources, sensors and API.

    ``url`` defaults to ``settings.database_url()`` (read now, not at import).
    """
    url = url or settings.database_url()
    with _LOCK:
        engine = _ENGINES.get(url)
        if engine is None:
            engine = _ENGINES[url] = _create(url)
        return engine


def parse_url(url: str) -> sa.URL:
    """``url`` as SQLAlchemy's URL; a malformed one is a ``WarehouseUnavailable`` that does not
    quote it (the text may hold a password in a place the parser could not recognise)."""
    try:
        return sa.make_url(url)
    except (sa.exc.ArgumentError, ValueError, TypeError):
        raise WarehouseUnavailable(
            "the warehouse database URL (CLOUDWASTE_DATABASE_URL) is not a database URL such as "
            f"{URL_EXAMPLE}"
        ) from None


def shown_url(url: sa.URL) -> str:
    return url.render_as_string(hide_password=True)


def _create(url: str) -> Engine:
    parsed = parse_url(url)
    try:
        return _create_engine(parsed)
    except (sa.exc.ArgumentError, ImportError):
        raise WarehouseUnavailable(
            f"the warehouse URL {shown_url(parsed)} names a database driver that is not "
            f"installed here; use one such as {URL_EXAMPLE}"
        ) from None
    except OSError as exc:
        raise WarehouseUnavailable(
            f"cannot create the folder of the SQLite warehouse {shown_url(parsed)}: "
            f"{exc.strerror or exc}"
        ) from None


def _create_engine(parsed: sa.URL) -> Engine:
    if parsed.get_backend_name() != "sqlite":
        connect_args = {}
        if parsed.get_driver_name() == "psycopg2" and "connect_timeout" not in parsed.query:
            connect_args["connect_timeout"] = POSTGRES_CONNECT_TIMEOUT_S
        # pre_ping: a code server lives for days and PostgreSQL restarts under it.
        return sa.create_engine(
            parsed, pool_pre_ping=True, json_serializer=dumps_json, connect_args=connect_args
        )
    database = parsed.database
    if database and database != ":memory:":
        Path(database).parent.mkdir(parents=True, exist_ok=True)
    engine = sa.create_engine(
        parsed,
        # check_same_thread off: a shard run's accounts run on worker threads, and the pool hands
        # a connection to one thread at a time, but may close it (dispose, exit) from another.
        connect_args={"timeout": SQLITE_BUSY_TIMEOUT_MS / 1000, "check_same_thread": False},
        json_serializer=dumps_json,
    )
    sa.event.listen(engine, "connect", _sqlite_on_connect(raw_store_path(database)))
    return engine


def _sqlite_on_connect(raw_path: str) -> Any:
    """Per-connection SQLite setup: ATTACH is per connection, so it must run on every connect."""
    in_memory = raw_path == ":memory:"

    def on_connect(dbapi_connection: Any, _record: Any) -> None:
        cursor = dbapi_connection.cursor()
        try:
            cursor.execute(f"PRAGMA busy_timeout = {SQLITE_BUSY_TIMEOUT_MS}")
            cursor.execute("PRAGMA foreign_keys = ON")
            cursor.execute(f"ATTACH DATABASE ? AS {RAW_SCHEMA}", (raw_path,))
            if not in_memory:
                # WAL: the sensor and the API read while a run writes. Journal mode is per file,
                # so the attached store needs its own pragma.
                cursor.execute("PRAGMA main.journal_mode = WAL")
                cursor.execute(f"PRAGMA {RAW_SCHEMA}.journal_mode = WAL")
        finally:
            cursor.close()

    return on_connect


def dispose_engines(url: str | None = None) -> None:
    """Close and forget the cached pool of ``url``, or of every URL.

    Tests call it before dropping a database (open pooled connections would block the drop) and
    to get a fresh engine after changing the environment.
    """
    with _LOCK:
        urls = [url] if url is not None else list(_ENGINES)
        for key in urls:
            engine = _ENGINES.pop(key, None)
            if engine is not None:
                engine.dispose()


def is_postgres(bind: Engine | Connection) -> bool:
    return bind.dialect.name == "postgresql"


_OWN_TABLES = frozenset(t.name for t in metadata.tables.values() if t.schema is None)


def include_name(name: str | None, type_: str, parent_names: dict[str, Any]) -> bool:
    """What alembic may compare: our two schemas, and only our tables in the default schema.

    The default schema can be shared (Dagster's run storage on the same PostgreSQL database), so
    tables that are not ours there are neither "removed" by autogenerate nor reported as drift.
    The ``raw`` schema is ours alone and is compared whole.
    """
    if type_ == "schema":
        return name is None or name == RAW_SCHEMA
    if type_ == "table":
        return parent_names.get("schema_name") == RAW_SCHEMA or name in _OWN_TABLES
    return True


def alembic_config(connection: Connection) -> Config:
    """An alembic ``Config`` built in code, pointing at the migrations shipped in the package."""
    from alembic.config import Config

    config = Config()
    # configparser interpolation: a literal % in the path must be doubled.
    config.set_main_option("script_location", str(MIGRATIONS).replace("%", "%%"))
    config.attributes["connection"] = connection
    return config


def _lock_for_migration(connection: Connection) -> None:
    """Serialize migrators, so two processes starting at once do not both create tables.

    PostgreSQL: a transaction-scoped advisory lock. SQLite: ``BEGIN IMMEDIATE`` takes the write
    lock on the main and the attached file up front (and makes the DDL transactional), and the
    busy timeout makes the second migrator wait for the first.
    """
    if is_postgres(connection):
        connection.execute(sa.text("SELECT pg_advisory_xact_lock(:key)"), {"key": MIGRATION_LOCK})
    elif connection.dialect.name == "sqlite":
        connection.exec_driver_sql("BEGIN IMMEDIATE")


@contextlib.contextmanager
def begin(engine: Engine) -> Iterator[Connection]:
    """``engine.begin()``, where failing to connect is a ``WarehouseUnavailable`` sentence.

    Only the connect is translated: an error inside the transaction is not "unreachable".
    """
    try:
        connection = engine.connect()
    except sa.exc.DBAPIError as exc:
        reason = str(exc.orig if exc.orig is not None else exc).strip()
        reason = reason.splitlines()[0] if reason else type(exc).__name__
        if engine.url.password:
            reason = reason.replace(str(engine.url.password), "***")
        raise WarehouseUnavailable(
            f"cannot connect to the warehouse at {shown_url(engine.url)}: {reason}"
        ) from None
    with connection, connection.begin():
        yield connection


def upgrade(engine: Engine, revision: str = "head") -> None:
    """Migrate to ``revision`` (idempotent: at head it does nothing) in one transaction."""
    from alembic import command

    with begin(engine) as connection:
        _lock_for_migration(connection)
        command.upgrade(alembic_config(connection), revision)


def downgrade(engine: Engine, revision: str) -> None:
    """Migrate down to ``revision`` (``"base"`` drops everything); for tests and operators."""
    from alembic import command

    with begin(engine) as connection:
        _lock_for_migration(connection)
        command.downgrade(alembic_config(connection), revision)


def current_revision(engine: Engine) -> str | None:
    """The revision the database is at (None when never migrated)."""
    from alembic.runtime.migration import MigrationContext

    with engine.connect() as connection:
        context = MigrationContext.configure(connection, opts={"version_table": VERSION_TABLE})
        return context.get_current_revision()
