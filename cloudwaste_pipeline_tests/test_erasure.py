"""GDPR erasure and retention.

Erasure removes every trace of a subject from every table (ML and raw store), keeps it removed
through re-materializations, and reports the export files that hold it. Retention removes exactly
the rows past it (boundary rows stay), honours shorter per-user retention and deletes in batches.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any

import dagster as dg
import pandas as pd
import pytest
import sqlalchemy as sa
from hypothesis import example, given, settings
from hypothesis import strategies as st
from sqlalchemy.engine import Engine

from cloudwaste_pipeline import api
from cloudwaste_pipeline.accounts import Account
from cloudwaste_pipeline.manifests import base_name, verify_export
from cloudwaste_pipeline.privacy import erasure
from cloudwaste_pipeline.privacy.anonymize import hash_event, hash_id, hash_user, load_key
from cloudwaste_pipeline.privacy.retention import account_owners, cleanup, ml_cutoff
from cloudwaste_pipeline.warehouse import schema
from cloudwaste_pipeline.warehouse.engine import dispose_engines, make_engine, upgrade
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
        acct = hash_id("account", "aws", sim.account_id, load_key())
        assert traces(engine, acct)

        report = api.erase(account_id=sim.account_id, reason="test")

        assert report.removed["ml_training_data"] > 0 and report.tombstones_added == 1
        assert any("ml_training_data" in f["file"] for f in report.exports.files_rewritten)
        assert report.complete
        for rewritten in (Path(f["file"]) for f in report.exports.files_rewritten):
            assert verify_export(rewritten.parent) == []  # its manifest lists the new version
            versions = [p.name for p in rewritten.parent.iterdir()]
            assert [n for n in versions if base_name(n) == base_name(rewritten.name)] == [
                rewritten.name
            ]  # the superseded version, which named the account, is gone
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


# --- one normalisation: erasure matches what hashing matches ---------------------------------

AZURE_SUB = "9b2a6c1e-0f3d-4a5b-8c7d-112233445566"


@dataclass(frozen=True)
class Variants:
    """One subject stored under other spellings in each raw store, and a near miss that is
    another subject by hashing's rules (so it must stay)."""

    kind: str  # account, user
    provider: str  # aws, azure, cloudwaste (users)
    canonical: str
    erase_as: str
    stored: tuple[str, str, str, str]  # raw_scans, scan_errors, outbox, quarantine spellings
    other: str


VARIANTS = {
    "aws account, whitespace": Variants(
        "account",
        "aws",
        "111111111111",
        " 111111111111\t",
        ("111111111111", " 111111111111", "111111111111 \n", "\u00a0111111111111"),
        "111111111112",
    ),
    "azure subscription, case and whitespace": Variants(
        "account",
        "azure",
        AZURE_SUB,
        f"{AZURE_SUB.upper()}\n",
        (AZURE_SUB, AZURE_SUB.upper(), f" {AZURE_SUB.title()} ", f"\t{AZURE_SUB.upper()}"),
        AZURE_SUB.replace("9b2a", "9b2b"),
    ),
    "user, whitespace (case is significant)": Variants(
        "user",
        "cloudwaste",
        "user-7",
        "user-7 ",
        ("user-7", " user-7", "user-7\t", "\u3000user-7"),
        "USER-7",
    ),
}


def store_variants(engine: Engine, case: Variants) -> None:
    """The subject's and the near miss's rows in every store: ML rows by hash, raw rows by the
    spellings other writers used."""
    owner_acct = "333333333333"  # the account of the user's outbox events: not erased
    with engine.begin() as conn:
        for raw_id in (case.canonical, case.other):
            digest = hash_id(case.kind, case.provider, raw_id, KEY)
            if case.kind == "user":
                insert(conn, schema.user_preferences, {"user_hash": digest})
                insert(
                    conn,
                    schema.user_action_patterns,
                    {"user_hash": digest, "event_hash": digest, "account_hash": "c" * 64}
                    | {"action_at": NOW},
                )
            else:
                insert(
                    conn,
                    schema.ml_training_data,
                    {"account_hash": digest, "detected_at": NOW, "scan_date": TODAY},
                )
                insert(conn, schema.cost_trend_data, {"account_hash": digest, "month": "2026-11"})
        spellings = [*zip(case.stored, range(4), strict=True), (case.other, 9)]
        for spelled, n in spellings:
            account = owner_acct if case.kind == "user" else spelled
            provider = "aws" if case.kind == "user" else case.provider
            if case.kind == "account" and n in (0, 9):
                insert(
                    conn,
                    schema.raw_scans,
                    {"provider": provider, "account_id": spelled, "scan_date": TODAY},
                )
            if case.kind == "account" and n in (1, 9):
                insert(
                    conn,
                    schema.scan_errors,
                    {"provider": provider, "account_id": spelled, "scan_date": TODAY},
                )
            if n in (2, 9):
                insert(
                    conn,
                    schema.resource_action_events,
                    {
                        "event_id": f"evt-{n}",
                        "user_id": spelled if case.kind == "user" else "user-1",
                        "account_id": account,
                        "provider": provider,
                        "received_at": NOW,
                    },
                )
            if n in (3, 9):
                field_name = "user_id" if case.kind == "user" else "line"
                text = spelled if case.kind == "user" else f"/subscriptions/{spelled}/x"
                insert(
                    conn,
                    schema.quarantine,
                    {"source_ref": f"q.jsonl:{n}", "payload": {field_name: text}},
                )


@pytest.mark.parametrize("case", VARIANTS.values(), ids=VARIANTS.keys())
def test_erasure_matches_every_spelling_hashing_matches(engine: Engine, case: Variants) -> None:
    """An id given with other case (Azure) or whitespace than the stored ones: every raw store
    and every ML table loses the subject's rows, and the near miss keeps all of its own."""
    store_variants(engine, case)
    provider = case.provider if case.kind == "account" else "aws"
    subject = {f"{case.kind}_id": case.erase_as, "provider": provider}
    with engine.begin() as conn:
        report = erasure.erase(conn, KEY, now=NOW, **subject)

    digest = hash_id(case.kind, case.provider, case.canonical, KEY)
    other = hash_id(case.kind, case.provider, case.other, KEY)
    assert traces(engine, digest) == {}
    left = rows_text(engine)
    raw_tables = ("raw.raw_scans", "raw.scan_errors", "raw.resource_action_events")
    for table in (*raw_tables, "raw.quarantine"):
        assert all(case.other in text or "333333333333" in text for text in left[table]), table
        assert sum(case.other in text for text in left[table]) <= 1, table
    assert sum(len(left[t]) for t in (*raw_tables, "raw.quarantine")) == (
        2 if case.kind == "user" else 4  # the near miss: outbox and quarantine, + scans, errors
    )
    assert traces(engine, other)
    raw_removed = {t: report.removed[t] for t in (*raw_tables, "raw.quarantine")}
    assert raw_removed == {
        "raw.raw_scans": 0 if case.kind == "user" else 1,
        "raw.scan_errors": 0 if case.kind == "user" else 1,
        "raw.resource_action_events": 1,
        "raw.quarantine": 1,
    }
    assert case.erase_as.strip() not in json.dumps(report.as_dict())


@pytest.fixture(scope="module")
def shared_sqlite(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Engine]:
    """One migrated SQLite warehouse for every example of a hypothesis test (a function-scoped
    fixture would be shared between examples anyway, unreset)."""
    url = f"sqlite:///{tmp_path_factory.mktemp('hypothesis') / 'warehouse' / 'warehouse.db'}"
    engine = make_engine(url)
    upgrade(engine)
    yield engine
    dispose_engines(url)


SUBJECT_KINDS = [("account", "aws"), ("account", "azure"), ("user", "cloudwaste")]
ID_CHARS = "aAbBzZ019-_.éÉßİ"
SPACES = " \t\n\r\x0b\x0c\x1c\x85\u00a0\u2028\u3000"


@st.composite
def spelling(draw: st.DrawFn, base: str) -> str:
    """``base`` with some letters' case flipped and whitespace around it."""
    flips = draw(st.lists(st.booleans(), min_size=len(base), max_size=len(base)))
    text = "".join(c.swapcase() if f else c for c, f in zip(base, flips, strict=True))
    pad = st.text(alphabet=SPACES, max_size=3)
    return draw(pad) + text + draw(pad)


@st.composite
def two_spellings(draw: st.DrawFn) -> tuple[str, str, str, str]:
    """(kind, provider, the id asked for, the id stored): spellings of one id, or of two."""
    kind, provider = draw(st.sampled_from(SUBJECT_KINDS))
    ids = st.text(alphabet=ID_CHARS, min_size=1, max_size=8)
    base = draw(ids)
    other = draw(st.one_of(st.just(base), ids))
    return kind, provider, draw(spelling(base)), draw(spelling(other))


@settings(derandomize=True, max_examples=150, deadline=None)
@given(two_spellings())
# str.lower turns İ into two letters, a regex's case folding into none: the text is lowered
@example(("account", "azure", "SUB-İ", " sub-İ"))
def test_erasure_raw_match_is_hash_equality(
    shared_sqlite: Engine, spellings: tuple[str, str, str, str]
) -> None:
    """For any two spellings: the raw row stored under one is erased by erasing the other
    exactly when ``hash_id`` gives both the same hash; a quarantined payload naming it goes
    whenever the hashes agree (a free-text search may take more, never less)."""
    kind, provider, asked, stored = spellings
    with shared_sqlite.begin() as conn:
        for table in (
            schema.raw_scans,
            schema.resource_action_events,
            schema.erasure_tombstones,
            schema.quarantine,
        ):
            conn.execute(sa.delete(table))
        insert(conn, schema.quarantine, {"source_ref": "q", "payload": {"id": stored}})
        if kind == "account":
            values = {"provider": provider, "account_id": stored, "scan_date": TODAY}
            insert(conn, schema.raw_scans, values)
        else:
            values = {"event_id": "e", "user_id": stored, "account_id": "1", "provider": "aws"}
            insert(conn, schema.resource_action_events, values | {"received_at": NOW})
        subject = {f"{kind}_id": asked, "provider": provider if kind == "account" else "aws"}
        erasure.erase(conn, KEY, now=NOW, **subject)
        left = (
            conn.execute(sa.select(sa.func.count()).select_from(schema.raw_scans)).scalar_one()
            + conn.execute(
                sa.select(sa.func.count()).select_from(schema.resource_action_events)
            ).scalar_one()
        )
        quarantined = conn.execute(
            sa.select(sa.func.count()).select_from(schema.quarantine)
        ).scalar_one()
    same = hash_id(kind, provider, asked, KEY) == hash_id(kind, provider, stored, KEY)
    assert (left == 0) == same
    assert quarantined == 0 or not same


def test_outbox_events_of_an_erased_subject_are_dropped_whatever_their_spelling(
    sqlite_engine: Engine,
) -> None:
    """The action batch drops a later event of an erased account or user by the same rule as
    erasure (a provider spelled "AWS", an id with whitespace), and an event that hashing would
    refuse (a blank user id) does not make the whole batch raise: validation quarantines it."""
    with sqlite_engine.begin() as conn:
        erasure.erase(conn, KEY, account_id="111111111111", now=NOW)
        erasure.erase(conn, KEY, user_id="user-7", now=NOW)
        for n, (user, provider, account) in enumerate(
            [
                ("user-1", " AWS", "111111111111 "),  # the erased account
                ("user-7\t", "aws", "222222222222"),  # the erased user
                ("   ", "aws", "222222222222"),  # blank user: not erased, left to validation
                ("user-1", "gcp", "111111111111"),  # unknown provider: the same
                ("USER-7", "aws", "222222222222"),  # another user
            ]
        ):
            insert(
                conn,
                schema.resource_action_events,
                {"event_id": f"e{n}", "user_id": user, "provider": provider, "account_id": account}
                | {"received_at": NOW},
            )
        events = pd.DataFrame(
            [dict(r._mapping) for r in conn.execute(sa.select(schema.resource_action_events))]
        )
        kept = erasure.drop_erased_events(conn, events, KEY)
        stored = conn.execute(sa.select(schema.resource_action_events.c.event_id)).scalars()
        assert sorted(stored) == ["e2", "e3", "e4"]
    assert sorted(kept["event_id"]) == ["e2", "e3", "e4"]
