"""GDPR erasure and retention.

Erasure removes every trace of a subject from every table (ML and raw store), keeps it removed
through re-materializations, and reports the export files that hold it. Retention removes exactly
the rows past it (boundary rows stay), honours shorter per-user retention and deletes in batches.
"""

from __future__ import annotations

import gzip
import json
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any

import dagster as dg
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from cloudwaste_pipeline import api
from cloudwaste_pipeline.accounts import Account
from cloudwaste_pipeline.privacy import erasure
from cloudwaste_pipeline.privacy.anonymize import hash_event, hash_id, hash_user
from cloudwaste_pipeline.privacy.retention import account_owners, cleanup, ml_cutoff
from cloudwaste_pipeline.warehouse import schema
from cloudwaste_pipeline.warehouse.load import bulk_insert

KEY = b"erasure-test-key-0123456789abcdef"
TODAY = date(2026, 11, 16)
NOW = datetime(2026, 11, 16, 9, 0)
ACCOUNT_A = Account("acct-a", "aws", "user-1", account_id="111111111111")
ACCOUNT_B = Account("acct-b", "aws", "user-10", account_id="222222222222")
ACCOUNTS = [ACCOUNT_A, ACCOUNT_B]


def a_hash(account: Account) -> str:
    return hash_id("account", account.provider, account.cloud_id, KEY)


def arn(account: Account, n: int) -> str:
    return f"arn:aws:ec2:us-east-1:{account.account_id}:volume/vol-{n:04d}"


def r_hash(account: Account, n: int) -> str:
    return hash_id("resource", "aws", arn(account, n), KEY)


FILLERS: dict[type, Any] = {
    sa.String: "x",
    sa.Text: "x",
    sa.Integer: 1,
    sa.BigInteger: 1,
    sa.Float: 1.0,
    sa.Boolean: False,
    sa.DateTime: NOW,
    sa.Date: TODAY,
    sa.JSON: {},
}


def row(table: sa.Table, **values: Any) -> dict[str, Any]:
    """``values`` plus a plain value for every other required column, so each test row only
    says what matters to the test."""
    filled = dict(values)
    for column in table.columns:
        if column.name in filled or column.nullable or column.primary_key or column.default:
            continue
        filled[column.name] = next(v for t, v in FILLERS.items() if isinstance(column.type, t))
    return filled


def insert(conn: sa.Connection, table: sa.Table, *rows: dict[str, Any]) -> None:
    bulk_insert(conn, table, pd.DataFrame([row(table, **r) for r in rows]))


def account_rows(conn: sa.Connection, account: Account, when: datetime) -> None:
    """One row per account-keyed table, as a scan day and its derivations leave them."""
    acct, day = a_hash(account), when.date()
    insert(
        conn,
        schema.ml_training_data,
        *(
            {"account_hash": acct, "resource_hash": r_hash(account, n), "detected_at": when}
            | {"scan_date": day}
            for n in (1, 2)
        ),
    )
    insert(
        conn,
        schema.resource_lifecycle_events,
        {"account_hash": acct, "resource_hash": r_hash(account, 1), "event_timestamp": when},
    )
    insert(
        conn,
        schema.cloudwatch_metrics_history,
        {"account_hash": acct, "resource_hash": r_hash(account, 1), "end_date": when},
    )
    insert(conn, schema.cost_trend_data, {"account_hash": acct, "month": when.strftime("%Y-%m")})
    insert(
        conn,
        schema.resource_anomaly_scores,
        {"account_hash": acct, "resource_hash": r_hash(account, 1), "window_end": when},
    )
    month = when.strftime("%Y-%m")
    insert(conn, schema.cost_forecasts, {"account_hash": acct, "last_month": month})
    insert(
        conn,
        schema.raw_scans,
        {
            "provider": "aws",
            "account_id": account.account_id,
            "scan_date": day,
            "payload": {"detections": [{"resource_id": arn(account, 1)}]},
        },
    )
    insert(
        conn,
        schema.scan_errors,
        {"provider": "aws", "account_id": account.account_id, "scan_date": day},
    )


def action(
    conn: sa.Connection, user: str, account: Account, n: int, taken: str, when: datetime
) -> None:
    """A processed user action: its pattern row, its lifecycle row and its outbox event."""
    event_id = f"evt-{user}-{account.name}-{n}"
    insert(
        conn,
        schema.user_action_patterns,
        {
            "user_hash": hash_user(user, KEY),
            "account_hash": a_hash(account),
            "resource_hash": r_hash(account, n),
            "event_hash": hash_event(event_id, KEY),
            "action_taken": taken,
            "action_at": when,
            "cost_saved_monthly": 5.0 if taken == "deleted" else 0.0,
        },
    )
    insert(
        conn,
        schema.resource_lifecycle_events,
        {
            "account_hash": a_hash(account),
            "resource_hash": r_hash(account, n),
            "event_type": "status_changed",
            "event_timestamp": when,
            "source_event_hash": hash_event(event_id, KEY),
        },
    )
    insert(
        conn,
        schema.resource_action_events,
        {
            "event_id": event_id,
            "user_id": user,
            "account_id": account.account_id,
            "provider": "aws",
            "resource_id": arn(account, n),
            "action": taken,
            "received_at": when,
        },
    )


def populate(engine: Engine, when: datetime = NOW) -> None:
    """Two accounts (A owned by user-1, B by user-10); user-1 also acted on B."""
    with engine.begin() as conn:
        insert(
            conn,
            schema.user_preferences,
            {"user_hash": hash_user("user-1", KEY)},
            {"user_hash": hash_user("user-10", KEY)},
        )
        for account in ACCOUNTS:
            account_rows(conn, account, when)
        action(conn, "user-1", ACCOUNT_A, 1, "deleted", when)
        action(conn, "user-1", ACCOUNT_B, 1, "deleted", when + timedelta(hours=1))
        action(conn, "user-10", ACCOUNT_B, 1, "kept", when)
        insert(
            conn,
            schema.quarantine,
            {
                "source_ref": "a.jsonl:1",
                "payload": {"line": f'{{"resource_id": "{arn(ACCOUNT_A, 3)}"'},
            },
            {"source_ref": "a.jsonl:2", "payload": {"user_id": "user-1", "action": "nuke"}},
            {"source_ref": "a.jsonl:3", "payload": {"user_id": "user-10", "action": "nuke"}},
        )
        for account in ACCOUNTS:
            conn.execute(
                sa.update(schema.ml_training_data)
                .where(schema.ml_training_data.c.account_hash == a_hash(account))
                .values(user_action=None)
            )


def rows_text(engine: Engine) -> dict[str, list[str]]:
    """Every stored row of every table (ML, tombstones, raw store) as JSON text."""
    with engine.connect() as conn:
        return {
            table.fullname: [
                json.dumps(list(r), default=str) for r in conn.execute(sa.select(table))
            ]
            for table in schema.metadata.sorted_tables
            if table is not schema.erasure_tombstones
        }


def traces(engine: Engine, *needles: str) -> dict[str, int]:
    found = {
        name: sum(any(n in text for n in needles) for text in texts)
        for name, texts in rows_text(engine).items()
    }
    return {name: n for name, n in found.items() if n}


def counts(engine: Engine) -> dict[str, int]:
    return {name: len(texts) for name, texts in rows_text(engine).items()}


def erase(engine: Engine, **kwargs: Any) -> erasure.ErasureReport:
    with engine.begin() as conn:
        return erasure.erase(conn, KEY, accounts=ACCOUNTS, now=NOW, **kwargs)


# --- erasure ------------------------------------------------------------------------------------


def test_erasing_an_account_removes_every_trace_and_nothing_else(engine: Engine) -> None:
    populate(engine)
    before = counts(engine)
    b_traces = traces(engine, a_hash(ACCOUNT_B), ACCOUNT_B.account_id)
    assert traces(engine, a_hash(ACCOUNT_A), ACCOUNT_A.account_id)

    report = erase(engine, account_id=ACCOUNT_A.account_id, reason="ticket-1")

    assert traces(engine, a_hash(ACCOUNT_A), ACCOUNT_A.account_id) == {}
    assert traces(engine, a_hash(ACCOUNT_B), ACCOUNT_B.account_id) == b_traces
    after = counts(engine)
    assert {k: before[k] - after[k] for k in before} == {
        k: report.removed.get(k, 0) for k in before
    }
    assert report.removed["raw.quarantine"] == 1  # the line naming A's ARN, not the others
    assert report.subjects == [{"kind": "account", "hash": a_hash(ACCOUNT_A)}]
    assert ACCOUNT_A.account_id not in json.dumps(report.as_dict())
    with engine.connect() as conn:
        assert erasure.erased_hashes(conn, "account") == {a_hash(ACCOUNT_A)}
    again = erase(engine, account_id=ACCOUNT_A.account_id)
    assert again.total_removed == 0 and again.tombstones_added == 0


def test_erasing_a_user_takes_their_actions_labels_and_owned_accounts(engine: Engine) -> None:
    populate(engine)
    ml = schema.ml_training_data
    with engine.begin() as conn:  # B's resource 1 carries user-1's later "deleted" as its label
        conn.execute(
            sa.update(ml).where(ml.c.account_hash == a_hash(ACCOUNT_B)).values(user_action=None)
        )
        conn.execute(
            sa.update(ml)
            .where(ml.c.resource_hash == r_hash(ACCOUNT_B, 1))
            .values(user_action="deleted")
        )

    report = erase(engine, user_id="user-1")

    user_1 = hash_user("user-1", KEY)
    event_on_b = hash_event("evt-user-1-acct-b-1", KEY)
    assert traces(engine, user_1, event_on_b, a_hash(ACCOUNT_A), ACCOUNT_A.account_id) == {}
    text = rows_text(engine)
    assert not any('"user-1"' in t for t in text["raw.resource_action_events"])
    assert any('"user-10"' in t for t in text["raw.quarantine"])  # user-10 is not user-1
    assert {s["kind"] for s in report.subjects} == {"user", "account"}
    with engine.connect() as conn:
        label = conn.execute(
            sa.select(ml.c.user_action).where(ml.c.resource_hash == r_hash(ACCOUNT_B, 1))
        ).scalar_one()
        remaining = conn.execute(
            sa.select(sa.func.count()).where(
                schema.user_action_patterns.c.user_hash == hash_user("user-10", KEY)
            )
        ).scalar_one()
    assert label == "kept"  # user-10's decision is all that is left
    assert remaining == 1 and report.relabelled_rows == 1


def test_erasure_needs_a_subject(sqlite_engine: Engine) -> None:
    with pytest.raises(ValueError, match="user_id or account_id"):
        erase(sqlite_engine)


def test_the_report_lists_the_export_files_holding_the_subject(tmp_path: Path) -> None:
    week = tmp_path / "weekly" / "2026-11-09"
    week.mkdir(parents=True)
    held = pa.table({"account_hash": [a_hash(ACCOUNT_A)], "cost": [1.0]})
    other = pa.table({"account_hash": [a_hash(ACCOUNT_B)], "cost": [1.0]})
    pq.write_table(held, week / "ml_training_data_20261115.parquet")
    pq.write_table(other, week / "cost_trends_20261115.parquet")
    with gzip.open(week / "ml_training_data_20261115.csv.gz", "wt") as handle:
        handle.write(f"account_hash\n{a_hash(ACCOUNT_A)}\n")
    (week / "user_action_patterns_20261115.json").write_text(
        json.dumps([{"user_hash": hash_user("user-1", KEY)}])
    )
    files = {
        "ml_training_data.parquet": "ml_training_data_20261115.parquet",
        "ml_training_data.csv": "ml_training_data_20261115.csv.gz",
        "cost_trends.parquet": "cost_trends_20261115.parquet",
        "user_action_patterns.json": "user_action_patterns_20261115.json",
    }
    manifest = {"files": {k: {"name": v} for k, v in files.items()}}
    (week / "manifest_20261115.json").write_text(json.dumps(manifest))

    found = erasure.exported_files(tmp_path, [a_hash(ACCOUNT_A)])
    assert [Path(p).name for p in found] == [
        "ml_training_data_20261115.csv.gz",
        "ml_training_data_20261115.parquet",
    ]
    by_user = erasure.exported_files(tmp_path, [hash_user("user-1", KEY)])
    assert [Path(p).name for p in by_user] == ["user_action_patterns_20261115.json"]
    assert erasure.exported_files(tmp_path, [hash_user("user-10", KEY)]) == []


def test_the_cli_prints_hashes_and_counts_and_preferences_stay_refused(
    sqlite_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    from cloudwaste_pipeline import cli

    monkeypatch.setenv("CLOUDWASTE_HOME", str(tmp_path))
    monkeypatch.setenv("CLOUDWASTE_DATABASE_URL", sqlite_url)
    monkeypatch.setenv("CLOUDWASTE_ANONYMIZATION_KEY", KEY.decode())
    populate(api.engine())
    assert cli.main(["erase", "--user-id", "user-1", "--reason", "ticket-7"]) == 0
    printed = capsys.readouterr().out
    report = json.loads(printed)
    assert {"kind": "user", "hash": hash_user("user-1", KEY)} in report["subjects"]
    assert report["total_rows_removed"] > 0 and "user-1" not in printed
    with pytest.raises(ValueError, match="erased"):
        api.set_user_preferences("user-1", retention_years=2)
    assert cli.main(["erase"]) == 2


# --- retention ----------------------------------------------------------------------------------


def test_cleanup_removes_exactly_the_rows_past_retention(engine: Engine) -> None:
    ml_cut = datetime.combine(ml_cutoff(TODAY, 3), datetime.min.time())
    raw_cut = datetime.combine(TODAY - timedelta(days=30), datetime.min.time())
    with engine.begin() as conn:
        for when in (ml_cut, ml_cut - timedelta(seconds=1)):  # boundary kept, a second older not
            insert(
                conn,
                schema.ml_training_data,
                {"account_hash": "a" * 64, "detected_at": when, "scan_date": when.date()},
            )
        insert(
            conn,
            schema.cost_trend_data,
            {"account_hash": "a" * 64, "month": ml_cut.strftime("%Y-%m")},
            {"account_hash": "a" * 64, "month": (ml_cut - timedelta(days=31)).strftime("%Y-%m")},
        )
        for n, when in enumerate((raw_cut, raw_cut - timedelta(seconds=1))):
            insert(
                conn,
                schema.raw_scans,
                {"account_id": str(n), "scan_date": when.date() - timedelta(days=n), "payload": {}},
            )
            insert(
                conn,
                schema.resource_action_events,
                {"event_id": str(n), "received_at": when, "processed_at": when},
            )
            insert(conn, schema.quarantine, {"source_ref": str(n), "quarantined_at": when})

    removed = cleanup(engine, TODAY, raw_days=30, ml_years=3)

    assert {k: v for k, v in removed.items() if v} == {
        "ml_training_data": 1,
        "cost_trend_data": 1,
        "raw.raw_scans": 1,
        "raw.resource_action_events": 1,
        "raw.quarantine": 1,
    }
    assert cleanup(engine, TODAY, raw_days=30, ml_years=3) == {k: 0 for k in removed}


def test_a_users_shorter_retention_reaches_their_accounts_and_actions(engine: Engine) -> None:
    two_years_ago = NOW - timedelta(days=2 * 365)
    populate(engine, when=two_years_ago)
    with engine.begin() as conn:
        conn.execute(
            sa.update(schema.user_preferences)
            .where(schema.user_preferences.c.user_hash == hash_user("user-1", KEY))
            .values(data_retention_years=1)
        )
    before = counts(engine)

    removed = cleanup(
        engine, TODAY, raw_days=3650, ml_years=3, owners=account_owners(ACCOUNTS, KEY)
    )

    assert traces(engine, a_hash(ACCOUNT_A)) == {}  # user-1 owns A
    assert traces(engine, hash_user("user-1", KEY)) == {
        "user_preferences": 1  # preferences stay: they are how the choice is remembered
    }
    after = counts(engine)
    assert before["ml_training_data"] - after["ml_training_data"] == 2  # A's only
    assert removed["user_action_patterns"] == 2  # user-1 on A and on B; user-10's stays
    assert after["user_action_patterns"] == 1


def test_cleanup_deletes_in_batches_of_primary_keys(sqlite_engine: Engine) -> None:
    old = datetime(2020, 1, 1)
    with sqlite_engine.begin() as conn:
        insert(
            conn,
            schema.ml_training_data,
            *(
                {"account_hash": "a" * 64, "detected_at": old, "scan_date": old.date()}
                for _ in range(25)
            ),
        )
    deletes: list[str] = []

    def spy(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        if statement.startswith("DELETE FROM ml_training_data"):
            deletes.append(statement)

    sa.event.listen(sqlite_engine, "before_cursor_execute", spy)
    try:
        removed = cleanup(sqlite_engine, TODAY, raw_days=30, ml_years=3, batch_size=10)
    finally:
        sa.event.remove(sqlite_engine, "before_cursor_execute", spy)
    assert removed["ml_training_data"] == 25
    assert len(deletes) == 3  # 10 + 10 + 5


# --- the pipeline honours tombstones ---------------------------------------------------------


def test_an_erased_account_stays_erased_through_a_rematerialization(tmp_path: Path) -> None:
    """A tiny demo; erase its account; re-run its scan day, its month and an action batch."""
    from cloudwaste_pipeline.definitions import defs
    from cloudwaste_pipeline.defs.partitions import month_key, scan_key
    from cloudwaste_pipeline.demo import run_demo
    from cloudwaste_pipeline.simulation.fleet import DEMO_ACCOUNTS, FleetSpec
    from cloudwaste_pipeline_tests.demo_instance import isolated_environment

    sim = DEMO_ACCOUNTS[0]
    spec = FleetSpec(
        seed=3, demo_date=TODAY, history_days=7, resources_per_region=4, accounts=(sim,)
    )
    with isolated_environment():
        run_demo(tmp_path, spec, progress=lambda _: None)  # too few labels to train: fine
        engine = api.engine()
        acct = hash_id("account", "aws", sim.account_id, api.load_key())
        assert traces(engine, acct)

        report = api.erase(account_id=sim.account_id, reason="test")

        assert report.removed["ml_training_data"] > 0 and report.tombstones_added == 1
        assert any("ml_training_data" in f for f in report.exported_files)
        day = TODAY - timedelta(days=2)
        api.record_user_action(
            user_id=sim.owner_user_id,
            account_id=sim.account_id,
            provider="aws",
            resource_id=f"arn:aws:ec2:us-east-1:{sim.account_id}:volume/vol-0abc",
            action="deleted",
        )
        instance = dg.DagsterInstance.get()
        for job, key in (
            ("scan_job", scan_key(day, sim.alias)),
            ("scan_job", scan_key(TODAY, sim.alias)),
            ("cost_trends_job", month_key(date(TODAY.year, TODAY.month, 1), sim.alias)),
            ("user_actions_job", None),
        ):
            result = defs.resolve_job_def(job).execute_in_process(
                instance=instance, partition_key=key
            )
            assert result.success, job
        assert traces(engine, acct, sim.account_id) == {}
