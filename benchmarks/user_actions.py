"""Benchmark of the user-action path: 100k outbox events through the sensor and its runs.

Run with ``python -m benchmarks.user_actions [--events 100000] [--database-url URL]`` (not part
of the test suite). It builds a warehouse (embedded SQLite in a temporary home unless
``--database-url`` names a PostgreSQL database, whose tables it drops and recreates) with one
detection per resource in ``ml_training_data``, appends the events to the outbox (1% of them
with an unknown action, 1% repeating an event id), then runs what the daemon would: sensor ticks
and the runs they launch, in process, until every event is stored or quarantined. It prints the
append rate, the events/s of the tick-and-run path, and the tick-to-visible latency of one more
event on the loaded warehouse. It prints figures and asserts nothing but its own bookkeeping.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import tempfile
import time
from datetime import datetime, timedelta
from typing import Any

ACCOUNTS = 20
RESOURCES = 25_000
ACTIONS = ("deleted", "ignored", "kept")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--database-url", help="a PostgreSQL database to use (tables recreated)")
    args = parser.parse_args()
    home = tempfile.mkdtemp(prefix="cloudwaste-bench-")
    os.environ.update(
        CLOUDWASTE_HOME=home,
        CLOUDWASTE_ANONYMIZATION_KEY=secrets.token_hex(32),
        CLOUDWASTE_NOW="2026-06-15T12:00:00+00:00",
        DAGSTER_HOME=home,
    )
    if args.database_url:
        os.environ["CLOUDWASTE_DATABASE_URL"] = args.database_url
    run(args.events, fresh=bool(args.database_url))


def resource_id(n: int) -> str:
    return f"arn:aws:ec2:us-east-1:{100000000000 + n % ACCOUNTS}:volume/vol-{n:017x}"


def seed_detections(engine: Any, key: bytes, now: datetime) -> None:
    """One ml_training_data row per resource, detected a week before ``now``."""
    import pandas as pd

    from cloudwaste_pipeline.privacy.anonymize import hash_id
    from cloudwaste_pipeline.warehouse import schema
    from cloudwaste_pipeline.warehouse.load import bulk_insert

    detected = (now - timedelta(days=7)).replace(tzinfo=None)
    rows = pd.DataFrame(
        {
            "account_hash": [
                hash_id("account", "aws", str(100000000000 + n % ACCOUNTS), key)
                for n in range(RESOURCES)
            ],
            "resource_hash": [
                hash_id("resource", "aws", resource_id(n), key) for n in range(RESOURCES)
            ],
            "resource_type": "ebs_volume",
            "provider": "aws",
            "region_anonymized": "us-east",
            "resource_age_days": 30,
            "detection_scenario": "unattached_volume",
            "confidence_level": "high",
            "cost_monthly": [round(1 + n % 97 * 0.8, 2) for n in range(RESOURCES)],
            "detected_at": detected,
            "scan_date": detected.date(),
        }
    )
    with engine.begin() as conn:
        bulk_insert(conn, schema.ml_training_data, rows)


def make_events(count: int, now: datetime) -> list[dict[str, Any]]:
    """``count`` events over the resources: users act, change their mind, repeat, mistype."""
    start = (now - timedelta(days=6)).replace(tzinfo=None)
    events = []
    for n in range(count):
        resource = n % RESOURCES
        action = ACTIONS[(n // RESOURCES + resource) % 3]
        if n % 100 == 7:
            action = "archived"  # quarantined: not an action
        events.append(
            {
                # 1% repeat the previous event id: the outbox keeps the first only.
                "event_id": f"evt-{n - 1 if n % 100 == 42 else n}",
                "user_id": f"user-{resource % 500}",
                "account_id": str(100000000000 + resource % ACCOUNTS),
                "provider": "aws",
                "resource_id": resource_id(resource),
                "action": action,
                "action_at": start + timedelta(seconds=4 * n),
                "received_at": now.replace(tzinfo=None),
            }
        )
    return events


def run(count: int, fresh: bool) -> None:
    import dagster as dg
    import pandas as pd
    import sqlalchemy as sa

    from cloudwaste_pipeline import api, settings
    from cloudwaste_pipeline.definitions import defs
    from cloudwaste_pipeline.privacy.anonymize import load_key
    from cloudwaste_pipeline.warehouse import schema
    from cloudwaste_pipeline.warehouse.load import insert_new

    engine = api.engine()
    if fresh:
        with engine.begin() as conn:
            conn.execute(sa.text("DROP SCHEMA IF EXISTS raw CASCADE"))
            schema.metadata.drop_all(conn)
            conn.execute(sa.text("DROP TABLE IF EXISTS cloudwaste_alembic_version"))
        engine = api.engine()
    engine = api.engine()  # migrated on first use
    key, now = load_key(), settings.now()
    seed_detections(engine, key, now)
    events = make_events(count, now)
    started = time.perf_counter()
    with engine.begin() as conn:
        appended = insert_new(
            conn, schema.resource_action_events, pd.DataFrame(events), ["event_id"]
        )
    took = time.perf_counter() - started
    print(f"warehouse: {engine.dialect.name}, {RESOURCES:,} detected resources")
    print(f"appended {appended:,} of {count:,} events to the outbox in {took:.1f} s "
          f"({appended / took:,.0f}/s; {count - appended:,} repeated ids ignored)")  # fmt: skip

    instance = dg.DagsterInstance.ephemeral()
    sensor = defs.resolve_sensor_def("user_action_sensor")
    job = defs.resolve_job_def("user_actions_job")

    def tick_and_run(cursor: str | None) -> tuple[str | None, int]:
        result = sensor.evaluate_tick(
            dg.build_sensor_context(instance=instance, cursor=cursor, resources=defs.resources)
        )
        for request in result.run_requests or []:
            run = job.execute_in_process(
                instance=instance, run_config=request.run_config, tags=request.tags
            )
            assert run.success, "the user_actions_job run failed"
        return result.cursor, len(result.run_requests or [])

    def settled() -> int:
        with engine.connect() as conn:
            stored = conn.execute(
                sa.select(sa.func.count()).select_from(schema.user_action_patterns)
            )
            quarantined = conn.execute(
                sa.select(sa.func.count()).select_from(schema.quarantine)
            )  # fmt: skip
            return stored.scalar() + quarantined.scalar()

    started = time.perf_counter()
    cursor, runs = tick_and_run(None)
    took = time.perf_counter() - started
    done = settled()
    assert done == appended, f"{done} of {appended} events settled"
    print(f"tick + {runs} run(s): {appended:,} events stored or quarantined in {took:.1f} s "
          f"= {appended / took:,.0f} events/s (target: 100k in < 60 s)")  # fmt: skip
    with engine.connect() as conn:
        labelled = conn.execute(
            sa.select(sa.func.count()).where(schema.ml_training_data.c.user_action.is_not(None))
        ).scalar()
        quarantined = conn.execute(sa.select(sa.func.count()).select_from(schema.quarantine))
        print(
            f"  training rows labelled: {labelled:,}; events quarantined: {quarantined.scalar():,}"
        )

    started = time.perf_counter()
    cursor, runs = tick_and_run(cursor)
    print(f"a tick with nothing new: {runs} run(s), {time.perf_counter() - started:.2f} s")

    event = api.record_user_action(
        user_id="user-1", account_id=str(100000000000 + 1 % ACCOUNTS), provider="aws",
        resource_id=resource_id(1), action="deleted", event_id="one-more",
    )  # fmt: skip
    started = time.perf_counter()
    cursor, runs = tick_and_run(cursor)
    latency = time.perf_counter() - started
    assert settled() == appended + 1, event
    print(f"tick-to-visible latency of one event on the loaded warehouse: {latency:.2f} s "
          f"(+ up to the sensor's 30 s interval)")  # fmt: skip
    print(json.dumps({"cursor": json.loads(cursor or "{}")}))


if __name__ == "__main__":
    main()
