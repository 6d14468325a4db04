"""One small materialized demo instance, shared by every test that needs one (session scope).

Short history and a small estate, the in-process executor, a temporary CLOUDWASTE_HOME and a
generated key; the environment is restored afterwards.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import date
from pathlib import Path

import pytest

from cloudwaste_pipeline.demo import DemoSummary, run_demo
from cloudwaste_pipeline.simulation.azure_estate import DEMO_SUBSCRIPTIONS, AzureResource
from cloudwaste_pipeline.simulation.fleet import DEMO_ACCOUNTS, FleetSpec, PlannedResource

TEST_SPEC = FleetSpec(
    seed=11,
    demo_date=date(2026, 11, 16),
    history_days=9,
    resources_per_region=20,
    accounts=DEMO_ACCOUNTS[:2],
    azure_subscriptions=DEMO_SUBSCRIPTIONS[1:],  # one region, no workspace: instance views
)
ENV_KEYS = (
    "CLOUDWASTE_HOME",
    "DAGSTER_HOME",
    "CLOUDWASTE_ANONYMIZATION_KEY",
    "CLOUDWASTE_NOW",
    "CLOUDWASTE_DATABASE_URL",
    "CLOUDWASTE_ACCOUNTS_FILE",
)


@dataclass
class DemoInstance:
    home: Path
    summary: DemoSummary
    planned: list[PlannedResource]
    azure: list[AzureResource]


@contextmanager
def isolated_environment() -> Iterator[None]:
    """The demo points settings at its home through the environment: restore it afterwards."""
    saved = {k: os.environ.get(k) for k in ENV_KEYS}
    for key in ENV_KEYS:
        os.environ.pop(key, None)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


@pytest.fixture(scope="session")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DemoInstance]:
    with isolated_environment():
        home = tmp_path_factory.mktemp("demo-home")
        planned: list[PlannedResource] = []
        azure: list[AzureResource] = []
        summary = run_demo(
            home, TEST_SPEC, progress=lambda _: None, planned_out=planned, azure_out=azure
        )
        yield DemoInstance(home, summary, planned, azure)


@contextmanager
def demo_copy(demo: DemoInstance, destination: Path) -> Iterator[dict[str, str]]:
    """A private copy of the demo's home (warehouse, Dagster instance, exports, models, key), for
    tests that change what they run against (a UI materialization, a notebook recording an
    action) without touching the shared instance. Yields the environment that points at the
    copy (the demo's pinned clock included); ``os.environ`` holds it inside the block and is
    restored afterwards."""
    import shutil

    from cloudwaste_pipeline import settings

    paths = settings.paths(destination / "home")
    shutil.copytree(demo.home, paths.home)
    clock = os.environ.get("CLOUDWASTE_NOW")
    with isolated_environment():
        env = {
            "CLOUDWASTE_HOME": str(paths.home),
            "DAGSTER_HOME": str(paths.dagster_home),
            "CLOUDWASTE_ANONYMIZATION_KEY": paths.demo_key.read_text().strip(),
        }
        if clock:
            env["CLOUDWASTE_NOW"] = clock
        os.environ.update(env)
        yield env
