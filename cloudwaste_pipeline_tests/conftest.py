"""Shared fixtures: migrated SQLite and PostgreSQL warehouses, and the small demo instance."""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from cloudwaste_pipeline.warehouse.engine import dispose_engines, make_engine, upgrade
from cloudwaste_pipeline_tests.demo_instance import demo  # noqa: F401  (session fixture)

PG_ADMIN_URL = os.environ.get(
    "CLOUDWASTE_TEST_POSTGRES_URL", "postgresql+psycopg2://postgres@127.0.0.1:5432/test"
)


@pytest.fixture
def sqlite_engine(tmp_path) -> Iterator[Engine]:
    engine = make_engine(f"sqlite:///{tmp_path}/warehouse/warehouse.db")
    upgrade(engine)
    yield engine
    engine.dispose()


def _postgres_unreachable(reason: str) -> None:
    message = f"PostgreSQL unreachable at {PG_ADMIN_URL.split('@')[-1]}: {reason}"
    if os.environ.get("CLOUDWASTE_REQUIRE_POSTGRES") == "1":
        pytest.fail(message + " (CLOUDWASTE_REQUIRE_POSTGRES=1)")
    pytest.skip(message)


@pytest.fixture
def postgres_url() -> Iterator[str]:
    """A fresh, empty database on the local PostgreSQL, dropped afterwards."""
    admin = sa.create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    name = f"cw_test_{secrets.token_hex(6)}"
    try:
        with admin.connect() as conn:
            conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    except sa.exc.OperationalError as exc:
        admin.dispose()
        _postgres_unreachable(str(exc.orig).strip().splitlines()[0])
    url = sa.make_url(PG_ADMIN_URL).set(database=name).render_as_string(hide_password=False)
    try:
        yield url
    finally:
        dispose_engines()
        with admin.connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@pytest.fixture
def postgres_engine(postgres_url: str) -> Engine:
    engine = make_engine(postgres_url)
    upgrade(engine)
    return engine


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def engine(request) -> Engine:
    return request.getfixturevalue(f"{request.param}_engine")
