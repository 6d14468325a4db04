"""Erasure in the exports: published files (local and S3, JSON/CSV/Parquet, gzip or not) are
rewritten without the subject's rows, equal to an export of the warehouse without them, with a
manifest that describes them; staging debris goes; what cannot be rewritten is listed; a rewrite
killed half-way is settled by the next erasure."""

from __future__ import annotations

import errno
import gzip
import hashlib
import io
import json
import os
import re
import subprocess
import sys
import textwrap
from datetime import datetime
from pathlib import Path
from typing import Any

import boto3
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import sqlalchemy as sa
from botocore.exceptions import ClientError
from sqlalchemy.engine import Engine

from cloudwaste_pipeline import api, exports
from cloudwaste_pipeline.exports import LocalDestination, S3Destination, export_window
from cloudwaste_pipeline.faults import CRASH_ENV, CRASH_EXIT_CODE
from cloudwaste_pipeline.manifests import base_name, published_name, verify_export
from cloudwaste_pipeline.privacy import export_erasure
from cloudwaste_pipeline.privacy.anonymize import hash_id, hash_user
from cloudwaste_pipeline.privacy.export_rows import Wanted, sha256
from cloudwaste_pipeline.privacy.export_stores import LocalFolder
from cloudwaste_pipeline.warehouse import schema
from cloudwaste_pipeline_tests.test_exports import (
    MONDAY,
    STAMP,
    SUNDAY,
    action_row,
    cost_row,
    insert,
    published,
    read_export,
    training_row,
)

KEY = "export-erasure-key-0123456789abcdef"
NOW = datetime(2026, 11, 16, 9, 0)
ERASED = hash_id("account", "aws", "210987654321", KEY.encode())
KEPT = hash_id("account", "aws", "123456789012", KEY.encode())
ERASED_USER = hash_user("user-1", KEY.encode())
KEPT_USER = hash_user("user-2", KEY.encode())
DATASETS = ("ml_training_data", "user_action_patterns", "cost_trends")


def fill(engine: Engine) -> None:
    """Each dataset holds rows of the erased account (or user) and rows of others."""
    day = MONDAY
    insert(
        engine,
        schema.ml_training_data,
        [training_row(n, day, account_hash=ERASED if n % 3 == 0 else KEPT) for n in range(9)],
    )
    actions = [
        action_row(n, day, account_hash=KEPT, user_hash=ERASED_USER if n % 2 else KEPT_USER)
        for n in range(6)
    ]
    insert(engine, schema.user_action_patterns, actions)
    insert(
        engine,
        schema.cost_trend_data,
        [cost_row("2026-11", account_hash=ERASED), cost_row("2026-11", account_hash=KEPT)],
    )


def drop_subjects(engine: Engine, wanted: Wanted) -> None:
    """What the warehouse erasure does to the exported tables, for the expected export."""
    with engine.begin() as conn:
        for table in (schema.ml_training_data, schema.cost_trend_data, schema.user_action_patterns):
            conn.execute(sa.delete(table).where(table.c.account_hash.in_(wanted.accounts)))
        actions = schema.user_action_patterns
        conn.execute(sa.delete(actions).where(actions.c.user_hash.in_(wanted.users)))


def local_files(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file()}


def assert_same_export(actual: dict[str, bytes], expected: dict[str, bytes]) -> None:
    """The same export, file by manifest entry: text formats byte for byte, Parquet as equal
    tables in equal schemas (row groups may be cut elsewhere, so its content name may differ);
    the manifest describes each file as it is, and lists every data file of the folder."""
    manifest = json.loads(actual[f"manifest_{STAMP}.json"])
    wanted = json.loads(expected[f"manifest_{STAMP}.json"])
    assert manifest["row_counts"] == wanted["row_counts"]
    assert sorted(manifest["files"]) == sorted(wanted["files"])
    listed = {e["name"] for e in manifest["files"].values()}
    assert listed == {n for n in actual if not n.startswith("manifest_")}
    for key, entry in manifest["files"].items():
        body, want = actual[entry["name"]], expected[wanted["files"][key]["name"]]
        if entry["name"].endswith(".parquet"):
            got, exp = (pq.read_table(io.BytesIO(b)) for b in (body, want))
            assert got.schema == exp.schema and got.equals(exp), key
        else:
            assert body == want, key
            assert entry["name"] == wanted["files"][key]["name"], key
        assert entry["sha256"] == hashlib.sha256(body).hexdigest(), key
        assert entry["bytes"] == len(body), key
        assert entry["rows"] == wanted["files"][key]["rows"], key


def assert_committed(files: dict[str, bytes], problems: list[str]) -> None:
    """The export verifies against its manifest (``problems``: ``verify_export``'s), and the
    manifest lists every other file of the folder: no superseded version (which still names
    the subject), no journal, no scratch file is left beside it."""
    assert problems == []
    manifest = json.loads(files[f"manifest_{STAMP}.json"])
    listed = {entry["name"] for entry in manifest["files"].values()}
    assert listed == {n for n in files if not n.startswith("manifest_")}


def by_base_name(files_rewritten: list[dict[str, Any]]) -> dict[str, int]:
    """A report's rewritten files without their content ids (which depend on the new bytes)."""
    named = ((*f["file"].rpartition("/"), f["rows_removed"]) for f in files_rewritten)
    return {f"{folder}/{base_name(name)}": rows for folder, _, name, rows in named}


def holds_subject(path: Path) -> bool:
    """Any value of the file (any format) is an erased hash."""
    text = json.dumps(read_export(path), default=str)
    return ERASED in text or ERASED_USER in text


WANTED = Wanted(frozenset({ERASED}), frozenset({ERASED_USER}))
REMOVED = {"ml_training_data": 3, "user_action_patterns": 3, "cost_trends": 1}


@pytest.mark.parametrize("compression", ["none", "gzip"])
def test_local_exports_are_rewritten_without_the_subject(
    sqlite_engine: Engine, tmp_path: Path, compression: str
) -> None:
    fill(sqlite_engine)
    published = tmp_path / "exports" / "weekly" / str(MONDAY)
    export_window(
        sqlite_engine, LocalDestination(published), MONDAY, SUNDAY, compression=compression
    )

    done = export_erasure.erase_local_exports(tmp_path / "exports", WANTED, NOW)

    drop_subjects(sqlite_engine, WANTED)
    expected = tmp_path / "expected"
    export_window(
        sqlite_engine, LocalDestination(expected), MONDAY, SUNDAY, compression=compression
    )
    assert_same_export(local_files(published), local_files(expected))
    assert_committed(local_files(published), verify_export(published))
    assert done.remaining == [] and done.staging_removed == []
    assert len(done.files_rewritten) == 9  # three datasets, three formats
    assert {
        Path(f["file"]).name.split(f"_{STAMP}")[0]: f["rows_removed"] for f in done.files_rewritten
    } == REMOVED
    manifest = json.loads((published / f"manifest_{STAMP}.json").read_text())
    assert manifest["erasures"] == [
        {"erased_at": NOW.isoformat(), "files_rewritten": 9, "rows_removed": REMOVED}
    ]
    assert ERASED not in json.dumps(manifest) and ERASED_USER not in json.dumps(manifest)
    before = local_files(published)
    again = export_erasure.erase_local_exports(tmp_path / "exports", WANTED, NOW)
    assert again.files_rewritten == [] and again.remaining == []
    assert local_files(published) == before  # idempotent: nothing rewritten


@pytest.fixture
def bucket(moto_url: str) -> str:
    name = f"erasure-{os.urandom(6).hex()}"
    boto3.client("s3").create_bucket(Bucket=name)
    return name


def s3_files(bucket: str, prefix: str) -> dict[str, bytes]:
    s3 = boto3.client("s3")
    listing = s3.list_objects_v2(Bucket=bucket, Prefix=prefix).get("Contents", [])
    return {
        o["Key"][len(prefix) :]: s3.get_object(Bucket=bucket, Key=o["Key"])["Body"].read()
        for o in listing
    }


@pytest.mark.parametrize("compression", ["none", "gzip"])
def test_s3_exports_are_rewritten_without_the_subject(
    sqlite_engine: Engine, tmp_path: Path, bucket: str, compression: str
) -> None:
    fill(sqlite_engine)
    s3 = boto3.client("s3")
    prefix = f"ml/weekly/{MONDAY}/"
    export_window(
        sqlite_engine, S3Destination(s3, bucket, prefix), MONDAY, SUNDAY, compression=compression
    )
    s3.put_object(Bucket=bucket, Key="ml/notes/readme.txt", Body=ERASED.encode())  # not an export

    done = export_erasure.erase_s3_exports(s3, bucket, "ml/", WANTED, NOW)

    drop_subjects(sqlite_engine, WANTED)
    expected = tmp_path / "expected"
    export_window(
        sqlite_engine, LocalDestination(expected), MONDAY, SUNDAY, compression=compression
    )
    assert_same_export(s3_files(bucket, prefix), local_files(expected))
    assert_committed(
        s3_files(bucket, prefix), verify_export(f"s3://{bucket}/{prefix}manifest_{STAMP}.json", s3)
    )
    assert sorted(by_base_name(done.files_rewritten)) == sorted(
        f"s3://{bucket}/{prefix}{base_name(name)}"
        for name in local_files(expected)
        if "manifest" not in name
    )
    assert done.remaining == []
    assert s3_files(bucket, "ml/notes/") == {"readme.txt": ERASED.encode()}
    again = export_erasure.erase_s3_exports(s3, bucket, "ml/", WANTED, NOW)
    assert again.files_rewritten == [] and again.remaining == []


def test_api_erase_rewrites_local_and_s3_exports_once_committed(
    sqlite_engine: Engine, sqlite_url: str, bucket: str, tmp_path: Path, monkeypatch
) -> None:
    monkeypatch.setenv("CLOUDWASTE_ANONYMIZATION_KEY", KEY)
    monkeypatch.setenv("CLOUDWASTE_HOME", str(tmp_path))
    monkeypatch.setenv("CLOUDWASTE_EXPORTS_S3_URI", f"s3://{bucket}/ml/")
    fill(sqlite_engine)
    s3 = boto3.client("s3")
    export_window(sqlite_engine, S3Destination(s3, bucket, "ml/adhoc/x/"), MONDAY, SUNDAY)
    local = tmp_path / "ml_datasets" / "adhoc" / "x"
    export_window(sqlite_engine, LocalDestination(local), MONDAY, SUNDAY, ("csv",))

    report = api.erase(account_id=" 210987654321\n", database_url=sqlite_url)

    assert report.removed["ml_training_data"] == 3 and report.complete
    assert by_base_name(report.exports.files_rewritten) == {
        **{f"s3://{bucket}/ml/adhoc/x/ml_training_data_{STAMP}.{x}": 3 for x in exports.FORMATS},
        f"s3://{bucket}/ml/adhoc/x/cost_trends_{STAMP}.parquet": 1,
        f"s3://{bucket}/ml/adhoc/x/cost_trends_{STAMP}.csv": 1,
        f"s3://{bucket}/ml/adhoc/x/cost_trends_{STAMP}.json": 1,
        f"{local}/ml_training_data_{STAMP}.csv": 3,
        f"{local}/cost_trends_{STAMP}.csv": 1,
    }
    printed = json.dumps(report.as_dict())
    assert "210987654321" not in printed and report.as_dict()["export_rows_removed"] == 16
    rows = read_export(published(local, "ml_training_data", "csv"))
    assert len(rows) == 6 and {r["account_hash"] for r in rows} == {KEPT}
    assert_committed(local_files(local), verify_export(local))
    manifest = f"s3://{bucket}/ml/adhoc/x/manifest_{STAMP}.json"
    assert_committed(s3_files(bucket, "ml/adhoc/x/"), verify_export(manifest, s3))
    reported = {f["file"] for f in report.exports.files_rewritten}
    assert {f"{local}/{n}" for n in local_files(local) if not n.startswith("manifest_")} | {
        f"s3://{bucket}/ml/adhoc/x/{n}" for n in s3_files(bucket, "ml/adhoc/x/")
    } >= reported  # the report names the files now published


def test_staging_debris_is_removed(sqlite_engine: Engine, tmp_path: Path) -> None:
    """A killed export's staging folder holds the subject (a complete file, and a Parquet file
    cut short, unreadable): the folder goes, and the report says so."""
    fill(sqlite_engine)
    week = tmp_path / "exports" / "weekly" / str(MONDAY)
    export_window(sqlite_engine, LocalDestination(week), MONDAY, SUNDAY, ("csv", "parquet"))
    staging = week / ".staging-killed"
    staging.mkdir()
    (staging / f"cost_trends_{STAMP}.csv").write_bytes(
        published(week, "cost_trends", "csv").read_bytes()
    )
    cut = published(week, "ml_training_data", "parquet").read_bytes()
    (staging / f"ml_training_data_{STAMP}.parquet").write_bytes(cut[: len(cut) // 2])

    done = export_erasure.erase_local_exports(tmp_path / "exports", WANTED, NOW)

    assert done.staging_removed == [str(staging)] and not staging.exists()
    assert done.remaining == []
    assert_committed(local_files(week), verify_export(week))
    for path in week.iterdir():
        assert path.name.startswith("manifest_") or not holds_subject(path), path.name


def test_an_incomplete_s3_upload_is_aborted(bucket: str) -> None:
    """A killed S3 export leaves the parts of a multipart upload: stored, holding rows, but no
    object lists them."""
    s3 = boto3.client("s3")
    key = f"ml/weekly/{MONDAY}/ml_training_data_{STAMP}.csv"
    upload = s3.create_multipart_upload(Bucket=bucket, Key=key)["UploadId"]
    s3.upload_part(Bucket=bucket, Key=key, UploadId=upload, PartNumber=1, Body=ERASED.encode())

    done = export_erasure.erase_s3_exports(s3, bucket, "ml/", WANTED, NOW)

    assert done.staging_removed == [f"s3://{bucket}/{key} (incomplete upload)"]
    assert s3.list_multipart_uploads(Bucket=bucket).get("Uploads", []) == []
    assert done.remaining == []


def test_what_cannot_be_rewritten_is_listed_as_remaining(tmp_path: Path) -> None:
    """A hand-made folder: a Parquet and a gzipped CSV file are rewritten; a JSON file not in
    the exporter's layout, a file of an unknown format and a listed file that is missing are
    reported as remaining, left as they are, and their manifest entries kept."""
    week = tmp_path / "weekly" / str(MONDAY)
    week.mkdir(parents=True)
    pq.write_table(
        pa.table({"account_hash": [ERASED, KEPT], "cost": [1.0, 2.0]}),
        week / "ml_training_data_x.parquet",
        compression="none",  # not the exporter's codec: the rewrite keeps the file's own
    )
    with gzip.open(week / "ml_training_data_x.csv.gz", "wt", newline="") as handle:
        handle.write(f"account_hash,cost\r\n{ERASED},1.0\r\n{KEPT},2.0\r\n")
    one_line = json.dumps([{"user_hash": ERASED_USER}, {"user_hash": KEPT_USER}]).encode()
    (week / "user_action_patterns_x.json").write_bytes(one_line)
    (week / "cost_trends_x.xlsx").write_bytes(b"PK" + ERASED.encode())
    files = {
        "ml_training_data.parquet": "ml_training_data_x.parquet",
        "ml_training_data.csv": "ml_training_data_x.csv.gz",
        "user_action_patterns.json": "user_action_patterns_x.json",
        "cost_trends.xlsx": "cost_trends_x.xlsx",
        "cost_trends.csv": "cost_trends_x.csv",  # missing
    }
    entries = {k: {"name": v, "rows": 2, "sha256": "old"} for k, v in files.items()}
    (week / "manifest_x.json").write_text(json.dumps({"files": entries}))

    done = export_erasure.erase_local_exports(tmp_path, WANTED, NOW)

    rewritten = sorted(Path(f["file"]).name for f in done.files_rewritten)
    assert [base_name(name) for name in rewritten] == [
        "ml_training_data_x.csv.gz",
        "ml_training_data_x.parquet",
    ]
    assert all(re.fullmatch(r"ml_training_data_x_[0-9a-f]{8}\..+", n) for n in rewritten)
    remaining = {Path(r["item"]).name: r["reason"] for r in done.remaining}
    assert set(remaining) == {
        "user_action_patterns_x.json",
        "cost_trends_x.xlsx",
        "cost_trends_x.csv",
    }
    assert "missing" in remaining["cost_trends_x.csv"]
    assert "unknown export format" in remaining["cost_trends_x.xlsx"]
    assert "layout" in remaining["user_action_patterns_x.json"]
    assert (week / "user_action_patterns_x.json").read_bytes() == one_line
    manifest = json.loads((week / "manifest_x.json").read_text())
    for key in ("user_action_patterns.json", "cost_trends.xlsx", "cost_trends.csv"):
        assert manifest["files"][key] == entries[key]
    assert manifest["files"]["ml_training_data.csv"]["rows"] == 1
    for key in ("ml_training_data.csv", "ml_training_data.parquet"):
        entry = manifest["files"][key]
        assert entry["name"] in rewritten and sha256(week / entry["name"]) == entry["sha256"]
        assert not (week / files[key]).exists()  # the superseded version, with the subject
    parquet = pq.ParquetFile(week / manifest["files"]["ml_training_data.parquet"]["name"])
    assert parquet.metadata.row_group(0).column(0).compression == "UNCOMPRESSED"
    assert parquet.read().to_pylist() == [{"account_hash": KEPT, "cost": 2.0}]
    assert read_export(week / manifest["files"]["ml_training_data.csv"]["name"]) == [
        {"account_hash": KEPT, "cost": "2.0"}
    ]


def test_a_write_error_leaves_the_file_and_its_entry_and_is_listed(
    sqlite_engine: Engine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Disk full while replacing the CSV file: the CSV stays as it was, with its own manifest
    entry; the other formats are rewritten; the CSV is listed as remaining."""
    fill(sqlite_engine)
    week = tmp_path / "weekly" / str(MONDAY)
    export_window(sqlite_engine, LocalDestination(week), MONDAY, SUNDAY)
    old_csvs = {published(week, d, "csv").name for d in DATASETS}
    old_csv = published(week, "ml_training_data", "csv").read_bytes()
    real_install = LocalFolder.install

    def install(self: LocalFolder, scratch: Path, name: str) -> None:
        if name.endswith(".csv"):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        real_install(self, scratch, name)

    monkeypatch.setattr(LocalFolder, "install", install)
    done = export_erasure.erase_local_exports(tmp_path, WANTED, NOW)

    # the report names the files that still hold the subject: the old versions
    assert {Path(r["item"]).name for r in done.remaining} == old_csvs
    assert all("No space left" in r["reason"] for r in done.remaining)
    assert {published(week, d, "csv").name for d in DATASETS} == old_csvs
    assert published(week, "ml_training_data", "csv").read_bytes() == old_csv
    assert by_base_name(done.files_rewritten) == {
        f"{week}/{d}_{STAMP}.{fmt}": n for d, n in REMOVED.items() for fmt in ("json", "parquet")
    }
    assert_committed(local_files(week), [])  # no scratch, no superseded JSON or Parquet left
    manifest = json.loads((week / f"manifest_{STAMP}.json").read_text())
    for entry in manifest["files"].values():
        assert sha256(week / entry["name"]) == entry["sha256"]
    assert manifest["row_counts"]["ml_training_data"] == 9  # the formats disagree: kept


def test_an_s3_permission_error_is_listed(sqlite_engine: Engine, bucket: str) -> None:
    fill(sqlite_engine)
    s3 = boto3.client("s3")
    export_window(sqlite_engine, S3Destination(s3, bucket, "ml/x/"), MONDAY, SUNDAY, ("json",))

    class ReadOnly:
        def __getattr__(self, name: str) -> Any:
            return getattr(s3, name)

        def upload_file(self, *args: Any, **kwargs: Any) -> None:
            error = {"Error": {"Code": "AccessDenied", "Message": "Access Denied"}}
            raise ClientError(error, "PutObject")

    before = s3_files(bucket, "ml/x/")
    done = export_erasure.erase_s3_exports(ReadOnly(), bucket, "ml/", WANTED, NOW)

    assert done.files_rewritten == []
    assert {r["reason"] for r in done.remaining} == {"S3 AccessDenied"}
    assert len(done.remaining) == 3
    assert s3_files(bucket, "ml/x/") == before  # journal written then settled back: no change


CHILD = textwrap.dedent(
    """
    import sys
    from datetime import datetime
    from pathlib import Path
    from cloudwaste_pipeline.privacy import export_erasure
    from cloudwaste_pipeline.privacy.export_rows import Wanted
    wanted = Wanted(frozenset([sys.argv[2]]), frozenset())
    export_erasure.erase_local_exports(Path(sys.argv[1]), wanted, datetime(2026, 11, 16))
    """
)


@pytest.mark.parametrize(
    "point", ["erasure.export_file", "erasure.export_manifest", "erasure.export_committed"]
)
def test_a_rewrite_killed_before_its_manifest_is_settled_by_the_next_erasure(
    sqlite_engine: Engine, tmp_path: Path, point: str
) -> None:
    """Killed after a rewritten file is put in place (or all of them) but before the manifest:
    the old manifest still describes the old files, whole; the new files are there, unlisted.
    Killed after the manifest: the new export is committed, the superseded files still there.
    The next erasure completes the rewrite: every file listed, described, without the subject,
    and nothing else left."""
    fill(sqlite_engine)
    week = tmp_path / "weekly" / str(MONDAY)
    export_window(sqlite_engine, LocalDestination(week), MONDAY, SUNDAY)
    before = json.loads((week / f"manifest_{STAMP}.json").read_text())
    env = {**os.environ, CRASH_ENV: point}
    killed = subprocess.run(
        [sys.executable, "-c", CHILD, str(tmp_path), ERASED], env=env, check=False
    )
    assert killed.returncode == CRASH_EXIT_CODE
    assert verify_export(week) == []  # a reader still trusts the export it sees
    manifest = json.loads((week / f"manifest_{STAMP}.json").read_text())
    listed = {entry["name"] for entry in manifest["files"].values()}
    unlisted = {n for n in local_files(week) if n not in listed and not n.startswith(".")}
    unlisted.discard(f"manifest_{STAMP}.json")
    assert f".erasure-journal-manifest_{STAMP}.json" in local_files(week)
    if point == "erasure.export_committed":
        assert manifest["files"] != before["files"]
        assert unlisted and all(holds_subject(week / n) for n in unlisted)  # superseded
    else:
        assert manifest == before  # the old files, whole, still what the manifest says
        assert unlisted and not any(holds_subject(week / n) for n in unlisted)  # new, unlisted

    done = export_erasure.erase_local_exports(tmp_path, WANTED, NOW)

    assert done.remaining == []
    assert_committed(local_files(week), verify_export(week))
    manifest = json.loads((week / f"manifest_{STAMP}.json").read_text())
    for entry in manifest["files"].values():
        assert len(read_export(week / entry["name"])) == entry["rows"]
        assert not holds_subject(week / entry["name"]), entry["name"]
    assert manifest["row_counts"] == {
        "ml_training_data": 6,
        "user_action_patterns": 3,
        "cost_trends": 1,
    }


@pytest.mark.parametrize(
    ("name", "base"),
    [
        (f"ml_training_data_{STAMP}.csv", f"ml_training_data_{STAMP}.csv"),
        (f"ml_training_data_{STAMP}_3fa9c2e1.csv.gz", f"ml_training_data_{STAMP}.csv.gz"),
        (f"ml_training_data_{STAMP}_12345678.json", f"ml_training_data_{STAMP}.json"),
        ("ml_training_data_x.parquet", "ml_training_data_x.parquet"),
        ("ml_training_data_x_3fa9c2e1.parquet", "ml_training_data_x.parquet"),
    ],
)
def test_a_new_content_id_replaces_the_old_one(name: str, base: str) -> None:
    """A file rewritten again (by each erasure) keeps one content id: names never grow."""
    digest = hashlib.sha256(name.encode()).hexdigest()
    assert base_name(name) == base
    assert published_name(name, digest) == published_name(base, digest)
    assert base_name(published_name(name, digest)) == base


def test_a_hand_named_file_erased_twice_keeps_one_content_id(tmp_path: Path) -> None:
    """A listed file without a date stamp gets a content id at its first rewrite, and a new one
    instead of it at the next."""
    week = tmp_path / "weekly" / str(MONDAY)
    week.mkdir(parents=True)
    body = f"account_hash,cost\r\n{ERASED},1.0\r\n{KEPT},2.0\r\n{ERASED_USER},3.0\r\n"
    (week / "ml_training_data_x.csv").write_text(body, newline="")
    entry = {"name": "ml_training_data_x.csv", "rows": 3, "bytes": 0, "sha256": "old"}
    (week / "manifest_x.json").write_text(json.dumps({"files": {"ml_training_data.csv": entry}}))

    for wanted in (
        Wanted(frozenset({ERASED}), frozenset()),
        Wanted(frozenset({KEPT}), frozenset()),
    ):
        done = export_erasure.erase_local_exports(tmp_path, wanted, NOW)
        assert done.remaining == [] and len(done.files_rewritten) == 1

    manifest = json.loads((week / "manifest_x.json").read_text())
    name = manifest["files"]["ml_training_data.csv"]["name"]
    assert re.fullmatch(r"ml_training_data_x_[0-9a-f]{8}\.csv", name)
    assert sorted(p.name for p in week.iterdir()) == ["manifest_x.json", name]
    assert read_export(week / name) == [{"account_hash": ERASED_USER, "cost": "3.0"}]


def test_the_cli_exits_1_when_an_export_file_remains(
    sqlite_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    from cloudwaste_pipeline import cli

    monkeypatch.setenv("CLOUDWASTE_HOME", str(tmp_path))
    monkeypatch.setenv("CLOUDWASTE_DATABASE_URL", sqlite_url)
    monkeypatch.setenv("CLOUDWASTE_ANONYMIZATION_KEY", KEY)
    monkeypatch.delenv("CLOUDWASTE_EXPORTS_S3_URI", raising=False)
    folder = tmp_path / "ml_datasets" / "adhoc" / "x"
    folder.mkdir(parents=True)
    (folder / "ml_training_data_x.xlsx").write_bytes(b"PK" + ERASED.encode())
    entry = {"ml_training_data.xlsx": {"name": "ml_training_data_x.xlsx"}}
    (folder / "manifest_x.json").write_text(json.dumps({"files": entry}))

    assert cli.main(["erase", "--account-id", "210987654321"]) == 1

    printed = capsys.readouterr()
    report = json.loads(printed.out)
    assert report["complete"] is False
    assert [Path(r["item"]).name for r in report["remaining"]] == ["ml_training_data_x.xlsx"]
    assert printed.err.startswith("cloudwaste: erasure incomplete: 1 export item")
    assert "210987654321" not in printed.out + printed.err
