"""Dataset exports: row-for-row equal to the warehouse in JSON, CSV and Parquet; a re-run
replaces; a failure leaves no partial file (locally and on S3, against moto); ad-hoc windows
stay in their own folder; gzip is readable; a window that fails data quality writes nothing."""

import csv
import gzip
import hashlib
import io
import json
import uuid
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any

import boto3
import dagster as dg
import pandas as pd
import pyarrow.parquet as pq
import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from cloudwaste_pipeline import cli, exports
from cloudwaste_pipeline.definitions import defs
from cloudwaste_pipeline.defs.adhoc_exports import adhoc_export_job
from cloudwaste_pipeline.defs.assets.outputs import ml_dataset_exports
from cloudwaste_pipeline.defs.resources import FilesResource, WarehouseResource
from cloudwaste_pipeline.exports import LocalDestination, export_window
from cloudwaste_pipeline.quality import validate_data_quality
from cloudwaste_pipeline.warehouse import schema

MONDAY = date(2026, 11, 9)
SUNDAY = MONDAY + timedelta(days=6)
STAMP = "20261115"


def digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def training_row(n: int, day: date, **overrides: Any) -> dict[str, Any]:
    at = datetime.combine(day, datetime.min.time()) + timedelta(hours=1 + n % 20, seconds=n)
    row = {
        "id": uuid.uuid4(),
        "account_hash": digest("account"),
        "resource_hash": digest(f"resource-{n}"),
        "resource_type": "ebs_volume",
        "provider": "aws",
        "region_anonymized": "eu-*",
        "resource_age_days": 10 + n,
        "detection_scenario": "unattached_volume",
        "confidence_level": ("critical", "high", "medium", "low")[n % 4],
        "metrics_summary": {"read_ops": {"avg": n / 3, "p95": None}},
        "cost_monthly": 1.5 * n,
        "user_action": ("deleted", "kept", None)[n % 3],
        "resource_config": {"size_gb": n, "tags": ["a", "b"]},
        "detected_at": at,
        "created_at": at,
        "cost_real_monthly": None if n % 2 else 2.25,
        "scan_date": day,
    }
    return {**row, **overrides}


def action_row(n: int, day: date, **overrides: Any) -> dict[str, Any]:
    at = datetime.combine(day, datetime.min.time()) + timedelta(hours=5, minutes=n)
    row = {
        "id": uuid.uuid4(),
        "user_hash": digest("user"),
        "account_hash": digest("account"),
        "resource_hash": digest(f"resource-{n}"),
        "resource_type": "ebs_volume",
        "provider": "aws",
        "region_anonymized": "eu-*",
        "detection_scenario": "unattached_volume",
        "confidence_level": "high",
        "action_taken": ("deleted", "kept", "ignored")[n % 3],
        "time_to_action_hours": n,
        "cost_monthly": 3.0,
        "cost_saved_monthly": 3.0 if n % 3 == 0 else 0.0,
        "detected_at": at - timedelta(hours=n),
        "action_at": at,
        "created_at": at,
        "event_hash": digest(f"event-{n}"),
    }
    return {**row, **overrides}


def cost_row(month: str, **overrides: Any) -> dict[str, Any]:
    row = {
        "id": uuid.uuid4(),
        "account_hash": digest("account"),
        "month": month,
        "provider": "aws",
        "total_spend": 1000.0,
        "waste_detected": 120.5,
        "waste_eliminated": 20.0,
        "waste_percentage": 12.05,
        "top_waste_categories": [{"resource_type": "ebs_volume", "cost": 120.5}],
        "regional_breakdown": None,
        "created_at": datetime(2026, 11, 1),
        "updated_at": datetime(2026, 11, 1),
    }
    return {**row, **overrides}


def insert(engine: Engine, table: sa.Table, rows: list[dict[str, Any]]) -> None:
    with engine.begin() as conn:
        conn.execute(table.insert(), rows)


def fill_week(engine: Engine, first: int = 0, count: int = 12) -> None:
    """Rows inside the week, plus one row each side of it that must not be exported."""
    insert(
        engine,
        schema.ml_training_data,
        [training_row(n, MONDAY + timedelta(days=n % 7)) for n in range(first, first + count)]
        + [training_row(900 + first, MONDAY - timedelta(days=1))],
    )
    insert(
        engine,
        schema.user_action_patterns,
        [action_row(n, MONDAY + timedelta(days=n % 7)) for n in range(first, first + count)]
        + [action_row(900 + first, SUNDAY + timedelta(days=1))],
    )


@pytest.fixture
def week(sqlite_engine: Engine) -> Engine:
    fill_week(sqlite_engine)
    insert(sqlite_engine, schema.cost_trend_data, [cost_row("2026-11"), cost_row("2026-09")])
    return sqlite_engine


def warehouse_rows(engine: Engine, dataset: exports.Dataset) -> list[dict[str, Any]]:
    with engine.connect() as conn:
        query = exports.window_query(dataset, MONDAY, SUNDAY)
        return [dict(r._mapping) for r in conn.execute(query)]


def cell(value: Any) -> str:
    """One text form for a value from any format, to compare them with the warehouse."""
    if value is None or (isinstance(value, float) and value != value):
        return ""
    if isinstance(value, dict | list):
        return json.dumps(value, sort_keys=True, separators=(",", ":"))
    if isinstance(value, pd.Timestamp):
        value = value.to_pydatetime()
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, str) and value.startswith(("[", "{")):
        return json.dumps(json.loads(value), sort_keys=True, separators=(",", ":"))
    return str(value)


def normalized(rows: list[dict[str, Any]]) -> list[dict[str, str]]:
    return [{k: cell(v) for k, v in row.items()} for row in rows]


def read_export(path: Path) -> list[dict[str, Any]]:
    opener = gzip.open if path.name.endswith(".gz") else open
    if ".json" in path.name:
        with opener(path, "rt", encoding="utf-8") as handle:
            return json.load(handle)
    if ".csv" in path.name:
        with opener(path, "rt", encoding="utf-8", newline="") as handle:
            return list(csv.DictReader(handle))
    return pq.read_table(path).to_pylist()


def published(folder: Path, dataset: str, fmt: str) -> Path:
    """The file of ``dataset`` in ``fmt`` that the folder's manifest lists (published names
    carry a content id: readers find files through the manifest)."""
    manifest = json.loads((folder / f"manifest_{STAMP}.json").read_text())
    return folder / manifest["files"][f"{dataset}.{fmt}"]["name"]


def exported_files(folder: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(folder)): p.read_bytes()
        for p in sorted(folder.rglob("*"))
        if p.is_file() and not p.name.startswith("manifest_")
    }


# --- local files ------------------------------------------------------------------------------


def test_export_matches_the_warehouse_row_for_row_in_every_format(engine: Engine, tmp_path):
    fill_week(engine)
    insert(engine, schema.cost_trend_data, [cost_row("2026-11"), cost_row("2026-09")])
    result = export_window(engine, LocalDestination(tmp_path), MONDAY, SUNDAY)
    assert result.row_counts == {
        "ml_training_data": 12,
        "user_action_patterns": 12,
        "cost_trends": 1,
    }
    manifest = json.loads(Path(result.manifest).read_text())
    assert manifest["window"] == {"start": "2026-11-09", "end": "2026-11-15"}
    assert manifest["code_version"] not in ("", None)
    for dataset in exports.datasets():
        expected = normalized(warehouse_rows(engine, dataset))
        assert len(expected) == result.row_counts[dataset.name]
        columns = [c["name"] for c in manifest["schema"][dataset.name]]
        assert columns == [c.name for c in dataset.table.columns]
        for fmt in exports.FORMATS:
            path = published(tmp_path, dataset.name, fmt)
            assert path.name.startswith(f"{dataset.name}_{STAMP}_") and path.suffix == f".{fmt}"
            assert normalized(read_export(path)) == expected, (dataset.name, fmt)
            entry = manifest["files"][f"{dataset.name}.{fmt}"]
            assert entry["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
            assert entry["rows"] == len(expected)


def test_an_empty_window_exports_empty_files_on_both_engines(engine: Engine, tmp_path):
    """No row in the window (PostgreSQL's COPY path then gets no CSV at all): empty datasets,
    each file still a valid empty document, and the manifest says 0 rows."""
    result = export_window(engine, LocalDestination(tmp_path), MONDAY, SUNDAY)
    assert result.row_counts == {"ml_training_data": 0, "user_action_patterns": 0, "cost_trends": 0}
    for dataset in exports.datasets():
        for fmt in exports.FORMATS:
            assert read_export(published(tmp_path, dataset.name, fmt)) == []


def test_a_rerun_replaces_the_files_and_a_failure_mid_export_leaves_none(
    week: Engine, tmp_path, monkeypatch
):
    out = tmp_path / "out"
    destination = LocalDestination(out)
    export_window(week, destination, MONDAY, SUNDAY)
    fill_week(week, first=100, count=5)
    again = export_window(week, destination, MONDAY, SUNDAY)
    assert again.row_counts["ml_training_data"] == 17
    names = sorted(p.name for p in out.iterdir())
    assert len(names) == 10 and all(STAMP in n for n in names), names  # 3 x 3 + manifest
    assert len(read_export(published(out, "ml_training_data", "parquet"))) == 17
    before = exported_files(out)
    manifest_before = (out / f"manifest_{STAMP}.json").read_bytes()

    fill_week(week, first=200, count=5)
    monkeypatch.setattr(exports, "CHUNK_ROWS", 4)
    real_write = exports._Writers.write

    def write_then_fail(self, rows):
        real_write(self, rows)
        if self.columns == [c.name for c in schema.user_action_patterns.columns]:
            raise RuntimeError("disk full (injected)")

    monkeypatch.setattr(exports._Writers, "write", write_then_fail)
    with pytest.raises(RuntimeError, match="injected"):
        export_window(week, destination, MONDAY, SUNDAY)
    assert exported_files(out) == before  # not one byte of the failed run published
    assert (out / f"manifest_{STAMP}.json").read_bytes() == manifest_before
    assert sorted(p.name for p in out.iterdir()) == names  # no staging folder left
    with pytest.raises(RuntimeError, match="injected"):
        export_window(week, LocalDestination(tmp_path / "fresh"), MONDAY, SUNDAY)
    assert list((tmp_path / "fresh").iterdir()) == []


def test_gzip_files_are_readable_and_replace_the_plain_ones(week: Engine, tmp_path):
    out = tmp_path / "out"
    destination = LocalDestination(out)
    export_window(week, destination, MONDAY, SUNDAY)
    result = export_window(week, destination, MONDAY, SUNDAY, compression="gzip")
    names = {p.name for p in out.iterdir()}
    assert names == {e["name"] for e in result.files.values()} | {f"manifest_{STAMP}.json"}
    assert not any(n.endswith((".json", ".csv")) for n in names - {f"manifest_{STAMP}.json"})
    expected = normalized(warehouse_rows(week, exports.datasets()[0]))
    for fmt, suffix in (("json", ".json.gz"), ("csv", ".csv.gz"), ("parquet", ".parquet")):
        path = published(out, "ml_training_data", fmt)
        assert path.name.endswith(suffix)
        assert normalized(read_export(path)) == expected
    parquet = pq.ParquetFile(published(out, "ml_training_data", "parquet"))
    assert parquet.metadata.row_group(0).column(0).compression == "GZIP"
    assert result.files["ml_training_data.json"]["compression"] == "gzip"
    again = export_window(week, destination, MONDAY, SUNDAY, compression="gzip")
    assert again.files == result.files  # same rows, same bytes: gzip carries no timestamp


# --- Dagster: the weekly asset, the ad-hoc job, the API and the CLI ----------------------------


def resources(sqlite_url: str, exports_dir: Path, **files: Any) -> dict[str, Any]:
    return {
        "warehouse": WarehouseResource(database_url=sqlite_url),
        "files": FilesResource(exports_dir=str(exports_dir), **files),
    }


def test_adhoc_windows_go_to_their_own_folder_and_leave_the_weekly_files_alone(
    week: Engine, sqlite_url: str, tmp_path, monkeypatch, capsys
):
    out = tmp_path / "ml_datasets"
    instance = dg.DagsterInstance.ephemeral()
    weekly = dg.materialize(
        [ml_dataset_exports],
        partition_key=str(MONDAY),
        resources=resources(sqlite_url, out),
        instance=instance,
    )
    assert weekly.success
    assert {e.passed for e in weekly.get_asset_check_evaluations()} == {True}
    weekly_files = exported_files(out / "weekly" / str(MONDAY))
    assert len(weekly_files) == 9

    adhoc = adhoc_export_job.execute_in_process(
        run_config={
            "ops": {"export_adhoc_window": {"config": {"start": "2026-11-10", "end": str(SUNDAY)}}}
        },
        resources=resources(sqlite_url, out),
        instance=instance,
    )
    assert adhoc.success
    assert adhoc.output_for_node("export_adhoc_window")["ml_training_data"] < 12
    assert published(out / "adhoc" / f"2026-11-10_{SUNDAY}", "ml_training_data", "csv").exists()

    monkeypatch.setenv("CLOUDWASTE_DATABASE_URL", sqlite_url)
    monkeypatch.setenv("CLOUDWASTE_NOW", f"{SUNDAY}T23:00:00+00:00")
    capsys.readouterr()  # the Dagster runs' logs
    code = cli.main(["export", "--last-days", "7", "--gzip", "--output-dir", str(out)])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert "ml_training_data: 12 rows" in captured.out
    assert captured.err == ""  # progress bars only on a terminal (test_cli checks them)
    cli_folder = out / "adhoc" / f"{MONDAY}_{SUNDAY}"
    gzipped = published(cli_folder, "user_action_patterns", "json")
    assert gzipped.exists() and gzipped.name.endswith(".json.gz")
    assert exported_files(out / "weekly" / str(MONDAY)) == weekly_files


def test_a_window_failing_quality_writes_nothing_and_says_why(
    week: Engine, sqlite_url: str, tmp_path
):
    insert(
        week,
        schema.ml_training_data,
        [training_row(0, MONDAY, id=uuid.uuid4(), confidence_level="bogus")],  # also a duplicate
    )
    out = tmp_path / "ml_datasets"
    instance = dg.DagsterInstance.ephemeral()
    result = dg.materialize(
        [ml_dataset_exports],
        partition_key=str(MONDAY),
        resources=resources(sqlite_url, out),
        instance=instance,
        raise_on_error=False,
    )
    assert not result.success
    failed = {e.check_name for e in result.get_asset_check_evaluations() if not e.passed}
    assert failed == {"values_in_domain", "no_duplicates"}
    assert instance.get_latest_materialization_event(dg.AssetKey("ml_dataset_exports")) is None
    assert not out.exists() or not any(p.is_file() for p in out.rglob("*"))

    adhoc = adhoc_export_job.execute_in_process(
        run_config={"ops": {"export_adhoc_window": {"config": {"start": str(MONDAY)}}}},
        resources=resources(sqlite_url, out),
        instance=instance,
        raise_on_error=False,
    )
    assert not adhoc.success
    assert not out.exists() or not any(p.is_file() for p in out.rglob("*"))


def test_the_weekly_job_runs_the_blocking_checks_and_the_adhoc_job_is_registered():
    job = defs.resolve_job_def("weekly_export_job")
    checks = {k.name for k in job.asset_layer.asset_graph.asset_check_keys}
    assert {"values_in_domain", "no_duplicates", "no_null_critical_fields"} <= checks
    assert defs.resolve_job_def("adhoc_export_job").partitions_def is None


# --- data quality ------------------------------------------------------------------------------


def unconstrained(tmp_path: Path) -> Engine:
    """The three exported tables without NOT NULL: rows that bypassed the schema's constraints."""
    engine = sa.create_engine(f"sqlite:///{tmp_path / 'loose.db'}")
    loose = sa.MetaData()
    for dataset in exports.datasets():
        columns = [
            sa.Column(c.name, c.type, primary_key=c.primary_key, nullable=True)
            for c in dataset.table.columns
        ]
        sa.Table(dataset.table.name, loose, *columns)
    loose.create_all(engine)
    return engine


def test_quality_flags_each_kind_of_bad_row_with_its_severity(week: Engine, tmp_path):
    with week.connect() as conn:
        clean = validate_data_quality(conn, MONDAY, SUNDAY)
    assert clean.ok and all(c.passed for c in clean.checks), clean.summary()

    loose = unconstrained(tmp_path)
    insert(loose, schema.ml_training_data, [training_row(1, MONDAY, cost_monthly=None)])
    insert(loose, schema.user_action_patterns, [action_row(1, MONDAY, action_taken="archived")])
    with loose.connect() as conn:
        report = validate_data_quality(conn, MONDAY, SUNDAY)
    by_name = {c.name: c for c in report.checks}
    assert by_name["no_null_critical_fields"].details["ml_training_data.cost_monthly"] == 1
    assert by_name["values_in_domain"].details["user_action_patterns.action_taken"] == 1
    assert {c.name for c in report.blocking} == {"no_null_critical_fields", "values_in_domain"}

    skewed = [training_row(n, MONDAY, user_action="kept") for n in range(30, 50)]
    insert(loose, schema.ml_training_data, skewed)
    with loose.connect() as conn:
        balance = {c.name: c for c in validate_data_quality(conn, MONDAY, SUNDAY).checks}
    assert not balance["label_balance"].passed and not balance["label_balance"].blocks
    assert balance["label_balance"].details["minority_share"] == 0.0


# --- S3 (moto) ---------------------------------------------------------------------------------


@pytest.fixture
def bucket(moto_url: str) -> str:
    name = f"exports-{uuid.uuid4().hex[:12]}"
    boto3.client("s3").create_bucket(Bucket=name)
    return name


def s3_keys(bucket: str) -> set[str]:
    pages = boto3.client("s3").get_paginator("list_objects_v2").paginate(Bucket=bucket)
    return {o["Key"] for page in pages for o in page.get("Contents", [])}


def test_s3_export_uploads_complete_files_then_the_manifest(
    week: Engine, sqlite_url: str, bucket: str, tmp_path
):
    files = FilesResource(exports_dir=str(tmp_path / "local"), exports_uri=f"s3://{bucket}/ml")
    result = dg.materialize(
        [ml_dataset_exports],
        partition_key=str(MONDAY),
        resources={"warehouse": WarehouseResource(database_url=sqlite_url), "files": files},
        instance=dg.DagsterInstance.ephemeral(),
    )
    assert result.success
    prefix = f"ml/weekly/{MONDAY}/"
    keys = s3_keys(bucket)
    assert len(keys) == 10 and all(k.startswith(prefix) for k in keys), keys
    s3 = boto3.client("s3")
    manifest = json.loads(
        s3.get_object(Bucket=bucket, Key=f"{prefix}manifest_{STAMP}.json")["Body"].read()
    )
    for entry in manifest["files"].values():
        body = s3.get_object(Bucket=bucket, Key=prefix + entry["name"])["Body"].read()
        assert hashlib.sha256(body).hexdigest() == entry["sha256"]
    csv_key = prefix + manifest["files"]["cost_trends.csv"]["name"]
    csv_body = s3.get_object(Bucket=bucket, Key=csv_key)["Body"].read()
    assert len(list(csv.DictReader(io.StringIO(csv_body.decode())))) == 1
    assert not (tmp_path / "local").exists()  # S3 only: nothing kept locally


class FailingUploads:
    """The real client, except that the third ``upload_file`` fails."""

    def __init__(self, client: Any) -> None:
        self.client = client
        self.uploads = 0

    def upload_file(self, *args: Any, **kwargs: Any) -> None:
        self.uploads += 1
        if self.uploads == 3:
            raise ConnectionError("connection reset (injected)")
        self.client.upload_file(*args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.client, name)


def test_s3_failure_mid_upload_leaves_no_object(week: Engine, bucket: str):
    destination = exports.S3Destination(FailingUploads(boto3.client("s3")), bucket, "adhoc/x/")
    with pytest.raises(ConnectionError, match="injected"):
        export_window(week, destination, MONDAY, SUNDAY)
    assert destination.client.uploads == 3
    assert s3_keys(bucket) == set()


def test_stale_planner_statistics_are_refreshed_before_a_postgres_export(
    postgres_engine: Engine,
) -> None:
    """Right after a load (autovacuum off, or not there yet) the table is analyzed once, so the
    ordered read uses the time index; with fresh statistics it is left alone."""
    table = schema.ml_training_data
    with postgres_engine.begin() as conn:
        conn.execute(table.insert(), [training_row(n, MONDAY) for n in range(200)])
        # A backend publishes its counts when idle, at most once a second: ask for it now.
        conn.execute(sa.text("SELECT pg_stat_force_next_flush()"))
    assert exports.refresh_statistics(postgres_engine, table) is True
    with postgres_engine.connect() as conn:
        analyzed = conn.execute(
            sa.text(
                "SELECT last_analyze IS NOT NULL, n_mod_since_analyze FROM pg_stat_user_tables "
                "WHERE relname = 'ml_training_data'"
            )
        ).one()
    assert tuple(analyzed) == (True, 0)
    assert exports.refresh_statistics(postgres_engine, table) is False


def test_the_export_reads_with_a_serial_plan_and_leaves_the_session_as_it_was(
    postgres_engine: Engine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Parallel workers and JIT are off for the export's COPY only: the pooled connection it
    used comes back with the server's settings."""
    fill_week(postgres_engine)
    settings_query = (
        "SELECT current_setting('max_parallel_workers_per_gather'), current_setting('jit')"
    )
    with postgres_engine.connect() as conn:
        before = tuple(conn.exec_driver_sql(settings_query).one())
    assert before != ("0", "off")  # the server's defaults, or the test proves nothing
    during: list[tuple[str, str]] = []
    pids: list[int] = []
    real_raw_connection = postgres_engine.raw_connection

    class Cursor:
        def __init__(self, cursor: Any) -> None:
            self.cursor = cursor

        def __getattr__(self, name: str) -> Any:
            return getattr(self.cursor, name)

        def copy_expert(self, sql: str, file: Any, *args: Any) -> Any:
            self.cursor.execute(settings_query)
            during.append(tuple(self.cursor.fetchone()))
            return self.cursor.copy_expert(sql, file, *args)

    def raw_connection() -> Any:
        raw = real_raw_connection()
        pids.append(raw.dbapi_connection.get_backend_pid())
        real_cursor = raw.cursor
        monkeypatch.setattr(raw, "cursor", lambda: Cursor(real_cursor()))
        return raw

    monkeypatch.setattr(postgres_engine, "raw_connection", raw_connection)
    export_window(postgres_engine, LocalDestination(tmp_path), MONDAY, SUNDAY, ("parquet",))
    assert during and set(during) == {("0", "off")}
    with postgres_engine.connect() as conn:
        assert conn.exec_driver_sql("SELECT pg_backend_pid()").scalar() in pids
        assert tuple(conn.exec_driver_sql(settings_query).one()) == before
