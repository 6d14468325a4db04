"""The pipeline at scale on PostgreSQL: generate, anonymize + load, export, beside references.

Run with ``python -m benchmarks.scale [--rows 1000000] [--admin-url URL]`` (not part of the test
suite; about 5 minutes at a million rows on 2 cores). It recreates a database ``cloudwaste_scale``
on the server of ``--admin-url`` and measures, each stage in a process of its own so that its
peak RSS is its own:

- generate: simulated scan history, as the scanner's detections (one dict per detection,
  raw ids), in scans of ``--scan-size`` detections;
- load: what the ``ml_training_data`` asset does per partition (one scan): the real
  anonymization (``privacy.derive``) streamed in chunks into ``replace_scan_partition``'s
  ``COPY``, a transaction per scan, into ``ml_training_data`` with its indexes; beside it the
  predecessor's way (one ORM object per row, a commit per scan, on a sample) and the raw limit
  (COPY of the same rows pre-formatted as CSV, into a table with the same indexes and into one
  without);
- export: ``exports.export_window`` to Parquet; beside it ``pd.read_sql`` of the whole table then
  JSON (the predecessor's admin export) and the raw limit (COPY out as CSV straight into a
  Parquet writer).

It prints rows/s and peak RSS per stage and reference, and asserts nothing but row counts.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import resource
import secrets
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from datetime import UTC, date, datetime, timedelta
from typing import Any

DATABASE = "cloudwaste_scale"
SCENARIOS = {
    "ebs_volume": ("unattached_volume", "attached_to_stopped_instance", "idle_volume"),
    "ec2_instance": ("stopped_instance", "idle_instance"),
    "elastic_ip": ("unassociated_ip",),
    "ebs_snapshot": ("old_snapshot", "orphaned_snapshot"),
    "nat_gateway": ("no_traffic",),
}
REGIONS = ("us-east-1", "us-west-2", "eu-west-1", "eu-central-1", "ap-southeast-1", "sa-east-1")
CONFIDENCE = ("critical", "high", "medium", "low")
START = date(2026, 1, 1)


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


# --- generation ------------------------------------------------------------------------------


def scans(rows: int, scan_size: int, seed: int = 7) -> Iterator[tuple[date, list[dict[str, Any]]]]:
    """Scans of ``scan_size`` detections in the scanner's shape, spread over accounts and days.

    Random draws are made per scan with numpy and turned into Python lists once; timestamps are
    looked up among precomputed day strings: a detection costs a dict and a few f-strings.
    """
    import numpy as np

    rng = np.random.default_rng(seed)
    kinds = list(SCENARIOS)
    first_day = START - timedelta(days=1000)
    days = [(first_day + timedelta(days=n)).isoformat() for n in range(1400)]
    tags = {"env": "prod", "owner": "jane@example.com"}
    for number, first in enumerate(range(0, rows, scan_size)):
        size = min(scan_size, rows - first)
        day = START + timedelta(days=number % 300)
        today = (day - first_day).days
        account = f"{100000000000 + number % 97:012d}"
        detected = f"{day.isoformat()}T01:30:00+00:00"
        series_days = [days[today - 3 + k] for k in range(3)]
        kind_of = rng.integers(0, len(kinds), size).tolist()
        ages = rng.integers(1, 900, size).tolist()
        costs = rng.gamma(2.0, 15.0, size).round(2).tolist()
        regions = rng.integers(0, len(REGIONS), size).tolist()
        confidence = rng.integers(0, len(CONFIDENCE), size).tolist()
        cpu = (rng.random((size, 3)) * 20).tolist()
        detections = []
        for n in range(size):
            kind = kinds[kind_of[n]]
            scenarios = SCENARIOS[kind]
            region = REGIONS[regions[n]]
            usage = cpu[n]
            detections.append(
                {
                    "provider": "aws",
                    "account_id": account,
                    "region": region,
                    "resource_type": kind,
                    "resource_id": f"arn:aws:ec2:{region}:{account}:{kind}/r-{first + n:012x}",
                    "state": "available",
                    "name": f"web-{first + n}",
                    "created_at": f"{days[today - ages[n]]}T01:30:00+00:00",
                    "detected_at": detected,
                    "config": {"size_gb": ages[n] % 500 + 8, "volume_type": "gp3"},
                    "tags": tags,
                    "parent_id": None,
                    "parent_type": None,
                    "parent_state": None,
                    "cost_monthly": costs[n],
                    "cost_source": "aws-price-list-2026-01",
                    "metrics": {
                        "CPUUtilization": [
                            [series_days[0], usage[0]],
                            [series_days[1], usage[1]],
                            [series_days[2], usage[2]],
                        ]
                    },
                    "detection_scenario": scenarios[n % len(scenarios)],
                    "confidence_level": CONFIDENCE[confidence[n]],
                    "reason": "no attachment",
                    "cost_real_monthly": None,
                    "cost_real_reason": "not enabled",
                }
            )
        yield day, detections


def stage_generate(rows: int, scan_size: int) -> dict[str, float]:
    started = time.perf_counter()
    count = sum(len(d) for _, d in scans(rows, scan_size))
    return {"rows": count, "seconds": time.perf_counter() - started, "rss": peak_rss_mb()}


# --- load --------------------------------------------------------------------------------------


def _engine(url: str) -> Any:
    from cloudwaste_pipeline.warehouse.engine import make_engine

    return make_engine(url)


def stage_load(url: str, rows: int, scan_size: int) -> dict[str, float]:
    """Ours: derive (anonymize) each scan and load it as the asset does; generation untimed."""
    from cloudwaste_pipeline.privacy.anonymize import hash_id, load_key
    from cloudwaste_pipeline.privacy.derive import training_row_chunks
    from cloudwaste_pipeline.warehouse import schema
    from cloudwaste_pipeline.warehouse.queries import replace_scan_partition

    engine, key = _engine(url), load_key()
    collected = datetime(2026, 11, 1, tzinfo=UTC)
    spent, count = 0.0, 0
    for day, detections in scans(rows, scan_size):
        started = time.perf_counter()
        account = hash_id("account", "aws", detections[0]["account_id"], key)
        with engine.begin() as conn:  # as the ml_training_data asset loads a partition
            frames = training_row_chunks(detections, key, day, collected)
            _, inserted = replace_scan_partition(
                conn, schema.ml_training_data, day, account, frames
            )
            count += inserted
        spent += time.perf_counter() - started
    return {"rows": count, "seconds": spent, "rss": peak_rss_mb()}


def _reference_tables(schema_name: str, with_indexes: bool) -> Any:
    import sqlalchemy as sa

    from cloudwaste_pipeline.warehouse import schema

    metadata = sa.MetaData(schema=schema_name)
    if with_indexes:
        return schema.ml_training_data.to_metadata(metadata)
    columns = [c._copy() for c in schema.ml_training_data.columns]
    return sa.Table(schema.ml_training_data.name, metadata, *columns)


def stage_orm(url: str, rows: int, scan_size: int) -> dict[str, float]:
    """The predecessor's way: an ORM object per row, a commit per scan (a sample of rows)."""
    import sqlalchemy as sa
    from sqlalchemy.orm import Session, registry

    from cloudwaste_pipeline.privacy.anonymize import load_key
    from cloudwaste_pipeline.privacy.derive import training_rows
    from cloudwaste_pipeline.warehouse.load import records

    engine, key = _engine(url), load_key()
    table = _reference_tables("orm_ref", with_indexes=True)

    class Row:
        def __init__(self, **values: Any) -> None:
            for name, value in values.items():
                setattr(self, name, value)

    registry().map_imperatively(Row, table)
    with engine.begin() as conn:
        conn.execute(sa.text("CREATE SCHEMA IF NOT EXISTS orm_ref"))
        table.metadata.create_all(conn)
    collected = datetime(2026, 11, 1, tzinfo=UTC)
    spent, count = 0.0, 0
    with Session(engine) as session:
        for day, detections in scans(rows, scan_size):
            values = records(table, training_rows(detections, key, day, collected))
            started = time.perf_counter()
            for row in values:
                session.add(Row(**row))
            session.commit()
            spent += time.perf_counter() - started
            count += len(values)
    return {"rows": count, "seconds": spent, "rss": peak_rss_mb()}


def stage_raw_copy(url: str, rows: int, scan_size: int, with_indexes: bool) -> dict[str, float]:
    """The raw limit: COPY of rows already formatted as CSV (formatting not timed)."""
    import sqlalchemy as sa

    from cloudwaste_pipeline.privacy.anonymize import load_key
    from cloudwaste_pipeline.privacy.derive import training_rows
    from cloudwaste_pipeline.warehouse.load import csv_lines, prepare_columns

    engine, key = _engine(url), load_key()
    name = "copy_ref" if with_indexes else "copy_bare"
    table = _reference_tables(name, with_indexes)
    with engine.begin() as conn:
        conn.execute(sa.text(f"CREATE SCHEMA IF NOT EXISTS {name}"))
        table.metadata.create_all(conn)
    collected = datetime(2026, 11, 1, tzinfo=UTC)
    spent, count = 0.0, 0
    raw = engine.raw_connection()
    try:
        cursor = raw.cursor()
        for day, detections in scans(rows, scan_size):
            names, columns = prepare_columns(table, training_rows(detections, key, day, collected))
            text = csv_lines(table, names, columns)
            statement = f"COPY {name}.ml_training_data ({', '.join(names)}) FROM STDIN (FORMAT csv)"
            started = time.perf_counter()
            cursor.copy_expert(statement, io.StringIO(text))
            raw.commit()
            spent += time.perf_counter() - started
            count += len(columns[0])
    finally:
        raw.close()
    return {"rows": count, "seconds": spent, "rss": peak_rss_mb()}


# --- export ------------------------------------------------------------------------------------


def stage_export(url: str) -> dict[str, float]:
    """Ours: the streaming export of every row, to Parquet."""
    from pathlib import Path

    from cloudwaste_pipeline.exports import LocalDestination, export_window

    engine = _engine(url)
    with tempfile.TemporaryDirectory() as folder:
        started = time.perf_counter()
        result = export_window(
            engine, LocalDestination(Path(folder)), START, date(2027, 12, 31), ("parquet",)
        )
        seconds = time.perf_counter() - started
    return {
        "rows": result.row_counts["ml_training_data"],
        "seconds": seconds,
        "rss": peak_rss_mb(),
    }


def stage_read_sql(url: str) -> dict[str, float]:
    """The predecessor's admin export: the whole table in memory, then JSON."""
    import pandas as pd

    engine = _engine(url)
    with tempfile.TemporaryDirectory() as folder:
        started = time.perf_counter()
        frame = pd.read_sql("SELECT * FROM ml_training_data", engine)
        frame.to_json(
            f"{folder}/ml_training_data.json",
            orient="records",
            date_format="iso",
            default_handler=str,
        )
        seconds = time.perf_counter() - started
    return {"rows": len(frame), "seconds": seconds, "rss": peak_rss_mb()}


def stage_copy_parquet(url: str) -> dict[str, float]:
    """The raw limit: COPY out as CSV, parsed by Arrow and written to Parquet as it streams."""
    import threading

    import pyarrow.csv as pacsv
    import pyarrow.parquet as pq

    engine = _engine(url)
    raw = engine.raw_connection()
    read_fd, write_fd = os.pipe()
    rows = 0
    with tempfile.TemporaryDirectory() as folder:
        started = time.perf_counter()

        def produce() -> None:
            with os.fdopen(write_fd, "wb") as sink:
                raw.cursor().copy_expert(
                    "COPY ml_training_data TO STDOUT WITH (FORMAT csv, HEADER true)", sink
                )

        producer = threading.Thread(target=produce)
        producer.start()
        with os.fdopen(read_fd, "rb") as source:
            reader = pacsv.open_csv(source)
            writer = None
            for batch in reader:
                writer = writer or pq.ParquetWriter(f"{folder}/ml.parquet", batch.schema)
                writer.write_batch(batch)
                rows += batch.num_rows
            if writer:
                writer.close()
        producer.join()
        seconds = time.perf_counter() - started
    raw.close()
    return {"rows": rows, "seconds": seconds, "rss": peak_rss_mb()}


# --- driver ------------------------------------------------------------------------------------


STAGES: dict[str, Callable[..., dict[str, float]]] = {
    "generate": lambda a: stage_generate(a.rows, a.scan_size),
    "load": lambda a: stage_load(a.url, a.rows, a.scan_size),
    "orm": lambda a: stage_orm(a.url, min(a.orm_rows, a.rows), a.scan_size),
    "copy_indexed": lambda a: stage_raw_copy(a.url, a.rows, a.scan_size, True),
    "copy_bare": lambda a: stage_raw_copy(a.url, a.rows, a.scan_size, False),
    "export": lambda a: stage_export(a.url),
    "read_sql": lambda a: stage_read_sql(a.url),
    "copy_parquet": lambda a: stage_copy_parquet(a.url),
}


def in_process(stage: str, argv: list[str]) -> dict[str, float]:
    """Run a stage in a fresh interpreter, so its peak RSS is its own; it prints one JSON line."""
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks.scale", *argv, "--stage", stage],
        capture_output=True, text=True,
    )  # fmt: skip
    if done.returncode:
        raise SystemExit(f"stage {stage} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def line(label: str, figures: dict[str, float], against: dict[str, float] | None = None) -> str:
    rate = figures["rows"] / figures["seconds"]
    text = f"  {label:44s} {int(figures['rows']):>10,} rows {rate:>10,.0f} rows/s"
    text += f"  peak RSS {figures['rss']:7.0f} MB"
    if against:
        text += f"  ({rate / (against['rows'] / against['seconds']):.2f}x)"
    return text


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--scan-size", type=int, default=1_000, help="detections per scan")
    parser.add_argument("--orm-rows", type=int, default=50_000, help="sample for the ORM way")
    parser.add_argument("--admin-url", default="postgresql+psycopg2://postgres@127.0.0.1:5432/test")
    parser.add_argument("--stage", choices=sorted(STAGES), help=argparse.SUPPRESS)
    parser.add_argument("--url", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.stage:  # a child: one stage, one JSON line
        print(json.dumps(STAGES[args.stage](args)))
        return

    import sqlalchemy as sa

    os.environ.setdefault("CLOUDWASTE_ANONYMIZATION_KEY", secrets.token_hex(32))  # children too
    admin = sa.create_engine(args.admin_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f"DROP DATABASE IF EXISTS {DATABASE} WITH (FORCE)"))
        conn.execute(sa.text(f"CREATE DATABASE {DATABASE}"))
    admin.dispose()
    url = args.admin_url.rsplit("/", 1)[0] + f"/{DATABASE}"
    from cloudwaste_pipeline.warehouse.engine import upgrade

    upgrade(_engine(url))
    rows, size = args.rows, args.scan_size
    argv = ["--rows", str(rows), "--scan-size", str(size), "--orm-rows", str(args.orm_rows)]
    argv += ["--url", url]

    def run(stage: str) -> dict[str, float]:
        return in_process(stage, argv)

    print(f"PostgreSQL, {rows:,} rows in scans of {size:,}; each stage in its own process")
    print("generate (simulated scan history, as detections):")
    print(line("ours", run("generate")))
    print("anonymize + load into ml_training_data (with its indexes):")
    ours = run("load")
    orm = run("orm")
    copy_indexed = run("copy_indexed")
    copy_bare = run("copy_bare")
    print(line("ours (derive, streamed into the COPY)", ours))
    print(line("predecessor: ORM object per row (sample)", orm, ours))
    print(line("raw COPY, pre-formatted, same indexes", copy_indexed, ours))
    print(line("raw COPY, pre-formatted, no index", copy_bare, ours))
    print("  (x) is the reference's rate over ours")
    # What autovacuum does after a large insert (it is off on some servers, ours included):
    # without it the first reader of the new rows, whichever stage runs first, also pays for
    # setting their hint bits (writing every page back) and for the ANALYZE.
    vacuum = sa.create_engine(url, isolation_level="AUTOCOMMIT")
    with vacuum.connect() as conn:
        conn.execute(sa.text("VACUUM (ANALYZE) ml_training_data"))
    vacuum.dispose()
    print("export ml_training_data to Parquet (after VACUUM ANALYZE, as autovacuum would):")
    exported = run("export")
    read_sql = run("read_sql")
    copy_out = run("copy_parquet")
    print(line("ours (export_window, streamed)", exported))
    print(line("predecessor: pd.read_sql whole table + JSON", read_sql, exported))
    print(line("raw COPY out -> Arrow CSV -> Parquet", copy_out, exported))
    for name, figures in (("load", ours), ("export", exported)):
        assert figures["rows"] == rows, f"{name}: {figures['rows']} rows, expected {rows}"


if __name__ == "__main__":
    main()
