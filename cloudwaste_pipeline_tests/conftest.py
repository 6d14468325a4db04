"""Shared fixtures: migrated SQLite and PostgreSQL warehouses, and the small demo instance.

PostgreSQL tests get a database of their own (``cw_test_<hex>``) created on the local server and
dropped afterwards. When the server is unreachable they skip with the reason, except under
``CLOUDWASTE_REQUIRE_POSTGRES=1`` (CI), where an unreachable server is a failure.
"""

from __future__ import annotations

import logging
import os
import secrets
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from moto.server import ThreadedMotoServer
from sqlalchemy.engine import Engine

from cloudwaste_pipeline.warehouse.engine import dispose_engines, make_engine, upgrade
from cloudwaste_pipeline_tests.demo_instance import demo  # noqa: F401  (session fixture)

PG_ADMIN_URL = os.environ.get(
    "CLOUDWASTE_TEST_POSTGRES_URL", "postgresql+psycopg2://postgres@127.0.0.1:5432/test"
)
"""An existing database to connect to while creating and dropping the per-test ones."""

POSTGRES_FIXTURES = frozenset({"postgres_admin", "postgres_url", "postgres_engine"})


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark every test that uses a PostgreSQL fixture ``postgres`` (``-m 'not postgres'``)."""
    for item in items:
        if POSTGRES_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.postgres)


# --- SQLite -------------------------------------------------------------------------------------


@pytest.fixture
def sqlite_url(tmp_path: Path) -> Iterator[str]:
    """A SQLite warehouse URL in a fresh folder (not migrated); ``raw.db`` lands beside it."""
    url = f"sqlite:///{tmp_path / 'warehouse' / 'warehouse.db'}"
    yield url
    dispose_engines(url)


@pytest.fixture
def sqlite_engine(sqlite_url: str) -> Engine:
    engine = make_engine(sqlite_url)
    upgrade(engine)
    return engine


# --- PostgreSQL ---------------------------------------------------------------------------------


def _unreachable(reason: str) -> None:
    where = sa.make_url(PG_ADMIN_URL)
    message = f"PostgreSQL unreachable at {where.host}:{where.port or 5432}: {reason}"
    if os.environ.get("CLOUDWASTE_REQUIRE_POSTGRES") == "1":
        pytest.fail(f"{message} (CLOUDWASTE_REQUIRE_POSTGRES=1)", pytrace=False)
    pytest.skip(message)


@pytest.fixture(scope="session")
def postgres_admin() -> Iterator[Engine]:
    """An autocommit engine on the admin database, checked once per session."""
    admin = sa.create_engine(
        PG_ADMIN_URL, isolation_level="AUTOCOMMIT", connect_args={"connect_timeout": 5}
    )
    try:
        with admin.connect() as conn:
            conn.execute(sa.text("SELECT 1"))
    except sa.exc.OperationalError as exc:
        admin.dispose()
        _unreachable(str(exc.orig).strip().splitlines()[0])
    yield admin
    admin.dispose()


@pytest.fixture
def postgres_url(postgres_admin: Engine) -> Iterator[str]:
    """A fresh, empty database (not migrated), dropped afterwards."""
    name = f"cw_test_{secrets.token_hex(6)}"
    with postgres_admin.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    url = sa.make_url(PG_ADMIN_URL).set(database=name).render_as_string(hide_password=False)
    try:
        yield url
    finally:
        dispose_engines(url)
        with postgres_admin.connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@pytest.fixture
def postgres_engine(postgres_url: str) -> Engine:
    engine = make_engine(postgres_url)
    upgrade(engine)
    return engine


# --- both ---------------------------------------------------------------------------------------


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def engine(request: pytest.FixtureRequest) -> Engine:
    """A migrated warehouse, once on SQLite and once on PostgreSQL."""
    return request.getfixturevalue(f"{request.param}_engine")


# --- AWS (moto) ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def moto_url() -> Iterator[str]:
    """A moto server per test module, boto3 pointed at it through the environment (as in
    production: ``AWS_ENDPOINT_URL``), with fake credentials and no profile or role."""
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    request_log = logging.getLogger("werkzeug")  # one line per request: noise on failures
    level = request_log.level
    request_log.setLevel(logging.WARNING)
    host, port = server.get_host_and_port()
    url = f"http://{host}:{port}"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("AWS_ENDPOINT_URL", url)
        mp.setenv("AWS_ACCESS_KEY_ID", "testing")
        mp.setenv("AWS_SECRET_ACCESS_KEY", "testing")
        mp.setenv("AWS_DEFAULT_REGION", "us-east-1")
        mp.setenv("AWS_CONFIG_FILE", "/nonexistent/aws-config")
        mp.setenv("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent/aws-credentials")
        for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ROLE_ARN", "AWS_ENDPOINT_URL_S3"):
            mp.delenv(name, raising=False)
        yield url
    server.stop()
    request_log.setLevel(level)
