"""The accounts query: each row checked as a file entry, bad rows rejected, run read-only."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from cloudwaste_pipeline.account_sources import AccountSourceError, merge, query_accounts
from cloudwaste_pipeline.account_sources import sql as sql_source
from cloudwaste_pipeline.account_sources.sql import parse_rows

TENANT = "0f0f0f0f-0000-4000-8000-00000000aaaa"
SUBSCRIPTION = "1e1e1e1e-0000-4000-8000-00000000bbbb"
# (id, alias, provider, owner, account id, regions, role ARN, real_costs, tenant, subscription)
ROWS = [
    (1, "prod-main", "aws", "user-1001", "111111111111", '["us-east-1", "eu-west-1"]', None, True),
    (2, "staging", "aws", "user-1001", "222222222222", "us-east-1, eu-west-1",
     "arn:aws:iam::222222222222:role/CloudWasteReadOnly", False),
    (3, "analytics", "azure", "user-2002", None, "westeurope", None, None, TENANT, SUBSCRIPTION),
    (4, "gcp-thing", "gcp", "user-1001", "333333333333", None, None, None),
    (5, "bad-regions", "aws", "user-1001", "444444444444", "us-east-1 eu-west-1", None, None),
    (6, "prod-main", "aws", "user-3003", "555555555555", None, None, None),
    (7, "staging-copy", "aws", "user-1001", "222222222222", None, None, None),
    (8, "bare", "aws", "user-1001", "666666666666", None, None, None),
    (9, "no-owner", "aws", None, "777777777777", None, None, None),
    (10, "broken-json", "aws", "user-1001", "888888888888", '["us-east-1"', None, None),
    (11, "analytics-again", "azure", "user-2002", None, None, None, None, TENANT,
     SUBSCRIPTION.upper()),
    (12, "short-id", "aws", "user-1001", "99999999999", None, None, None),
    (13, "empty-regions", "aws", "user-1001", "101010101010", "", None, None),
    (14, "json-empty", "aws", "user-1001", "121212121212", "[]", None, None),
]  # fmt: skip
RAW_IDS = [
    *(row[4] for row in ROWS if row[4]),
    TENANT,
    SUBSCRIPTION,
    SUBSCRIPTION.upper(),
    *(row[3] for row in ROWS if row[3]),
]
QUERY = """
    SELECT alias AS name, provider, owner AS owner_user_id, aws_account_id AS account_id,
           regions, role_arn, real_costs, tenant_id, subscription_id
    FROM cloud_accounts ORDER BY id
"""


def create_table(url: str, rows: list[tuple] = ROWS) -> None:
    """The app's table of connected accounts, as the test's database holds it."""
    engine = sa.create_engine(url)
    metadata = sa.MetaData()
    table = sa.Table(
        "cloud_accounts",
        metadata,
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("alias", sa.Text),
        sa.Column("provider", sa.Text),
        sa.Column("owner", sa.Text),
        sa.Column("aws_account_id", sa.Text),
        sa.Column("regions", sa.Text),
        sa.Column("role_arn", sa.Text),
        sa.Column("real_costs", sa.Boolean),
        sa.Column("tenant_id", sa.Text),
        sa.Column("subscription_id", sa.Text),
    )
    metadata.create_all(engine)
    keys = [c.name for c in table.columns]
    padded = [row + (None,) * (len(keys) - len(row)) for row in rows]
    if padded:  # an insert given no rows would insert one row of defaults
        with engine.begin() as conn:
            conn.execute(table.insert(), [dict(zip(keys, row, strict=True)) for row in padded])
    engine.dispose()


def count_rows(url: str) -> int:
    engine = sa.create_engine(url)
    with engine.connect() as conn:
        count = conn.execute(sa.text("SELECT count(*) FROM cloud_accounts")).scalar_one()
    engine.dispose()
    return count


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def app_db(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """The app's database with its accounts table, on SQLite and on PostgreSQL."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'app.db'}"
    else:
        url = request.getfixturevalue("postgres_url")
    create_table(url)
    yield url


def assert_no_raw_ids(texts: list[str]) -> None:
    for text in texts:
        assert not any(raw in text for raw in RAW_IDS), text


def test_good_rows_are_accounts_and_each_bad_row_is_rejected_with_its_reason(app_db: str):
    result = merge([query_accounts(app_db, QUERY)])
    accepted = {a.name: a for a in result.accounts}
    assert list(accepted) == ["prod-main", "staging", "analytics", "bare", "json-empty"]
    assert accepted["prod-main"].regions == ("us-east-1", "eu-west-1")
    assert accepted["prod-main"].real_costs is True
    assert accepted["staging"].regions == ("us-east-1", "eu-west-1")  # comma-separated
    assert accepted["staging"].role_arn.endswith(":role/CloudWasteReadOnly")
    assert accepted["staging"].real_costs is False
    assert accepted["analytics"].subscription_id == SUBSCRIPTION
    assert accepted["analytics"].regions == ("westeurope",)
    bare = accepted["bare"]  # NULL: absent
    assert (bare.regions, bare.role_arn, bare.real_costs) == ((), None, None)
    assert accepted["json-empty"].regions == ()

    reasons = {r.position: r.reason for r in result.rejected}
    assert set(reasons) == {4, 5, 6, 7, 9, 10, 11, 12, 13}
    expected = {
        4: "row 4 of the accounts query (gcp-thing): provider must be 'aws' or 'azure'",
        5: "row 5 of the accounts query (bad-regions): regions[0]",
        6: "row 6 of the accounts query (prod-main): the alias is already taken by row 1",
        7: "row 7 of the accounts query (staging-copy): the same AWS account as 'staging' (row 2",
        9: "row 9 of the accounts query (no-owner): missing required field 'owner_user_id'",
        10: "row 10 of the accounts query (broken-json): regions is not a valid JSON array",
        11: "the same Azure account as 'analytics' (row 3 of the accounts query)",
        12: "row 12 of the accounts query (short-id): account_id must be 12 digits",
        13: "row 13 of the accounts query (empty-regions): regions is empty text",
    }
    for position, text in expected.items():
        assert text in reasons[position], reasons[position]
    assert "not an AWS region name" in reasons[5]
    assert {r.source for r in result.rejected} == {"accounts query"}
    assert next(r for r in result.rejected if r.position == 11).alias == "analytics-again"
    assert_no_raw_ids([r.reason for r in result.rejected])


def test_a_query_that_writes_fails_and_writes_nothing(app_db: str):
    backend = sa.make_url(app_db).get_backend_name()
    if backend == "postgresql":
        writing = (
            "WITH gone AS (DELETE FROM cloud_accounts RETURNING *) "
            "SELECT alias AS name, provider, owner AS owner_user_id FROM gone"
        )
        message = "read-only transaction"
    else:
        writing = (
            "WITH x AS (SELECT 1) INSERT INTO cloud_accounts (alias, provider, owner) "
            "SELECT 'x', 'aws', 'u' FROM x"
        )
        message = "readonly"
    with pytest.raises(AccountSourceError, match=message):
        query_accounts(app_db, writing)
    with pytest.raises(AccountSourceError, match="more than one statement"):
        query_accounts(app_db, f"{QUERY}; DELETE FROM cloud_accounts")
    with pytest.raises(AccountSourceError, match="does not start with SELECT"):
        query_accounts(app_db, "DELETE FROM cloud_accounts")
    assert count_rows(app_db) == len(ROWS)


@pytest.mark.postgres
def test_a_slow_query_is_stopped_by_the_statement_timeout(postgres_url, monkeypatch):
    create_table(postgres_url)
    monkeypatch.setattr(sql_source, "TIMEOUT_SECONDS", 1)
    started = time.monotonic()
    with pytest.raises(AccountSourceError, match="statement timeout"):
        query_accounts(postgres_url, "SELECT pg_sleep(30), 'a' AS name")
    assert time.monotonic() - started < 10


@pytest.mark.postgres
def test_the_transaction_is_read_only_and_the_query_goes_verbatim(postgres_url):
    read_only = "SELECT current_setting('transaction_read_only')"
    assert sql_source.read_rows(postgres_url, read_only)[1] == [("on",)]
    verbatim = "SELECT 'a%' AS name, ':x' AS provider, 'u'::text WHERE 'ab' LIKE 'a%'"
    assert sql_source.read_rows(postgres_url, verbatim)[1] == [("a%", ":x", "u")]


def test_an_unreachable_database_never_shows_the_password(tmp_path):
    url = "postgresql+psycopg2://cloudwaste:hunter2-secret@127.0.0.1:1/app"
    with pytest.raises(AccountSourceError) as caught:
        query_accounts(url, QUERY)
    message = str(caught.value)
    assert "hunter2" not in message and "127.0.0.1:1/app" in message
    with pytest.raises(AccountSourceError, match="not a file"):  # nor creates an empty one
        query_accounts(f"sqlite:///{tmp_path / 'absent.db'}", QUERY)
    assert not (tmp_path / "absent.db").exists()


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ("SELECT alias AS name, provider, owner AS owner_user_id, id FROM cloud_accounts", "'id'"),
        ("SELECT alias AS name, provider FROM cloud_accounts", "missing: \\['owner_user_id'\\]"),
        ("SELECT alias AS name, alias AS name, provider, owner AS owner_user_id "
         "FROM cloud_accounts", "repeated: \\['name'\\]"),
        ("SELECT * FROM no_such_table", "failed"),
    ],
)  # fmt: skip
def test_a_query_of_the_wrong_shape_stops_the_read(app_db: str, query: str, message: str):
    with pytest.raises(AccountSourceError, match=message):
        query_accounts(app_db, query)


def test_typed_columns_are_read_as_the_file_reads_them():
    columns = ["NAME", "provider", "owner_user_id", "account_id", "regions", "real_costs"]
    rows = [
        ("a", "aws", "u", 111111111111, None, None),  # a number lost its leading zeros
        ("b", "aws", "u", "111111111111", ["us-east-1"], 1),  # an array; SQLite's true
        ("c", "aws", "u", "222222222222", None, 2),
        ("d", "aws", "u", "333333333333", [1], None),
        ("e", "aws", "u", "444444444444", '{"a": 1}', None),
    ]
    result = parse_rows(columns, rows)
    (good,) = (f.account for f in result.found)
    assert (good.name, good.regions, good.real_costs) == ("b", ("us-east-1",), True)
    reasons = [r.reason for r in result.rejected]
    assert "row 1 of the accounts query (a): account_id must be text" in reasons[0]
    assert "cast it to text" in reasons[0] and "YAML" not in reasons[0]
    assert "real_costs must be a boolean" in reasons[1]
    assert "JSON array of region names" in reasons[2] and "JSON array" in reasons[3]
    assert_no_raw_ids(reasons)


def test_ten_thousand_rows_parse_in_well_under_a_second_each_thousand(tmp_path, capsys):
    rows = [
        (i, f"acct-{i}", "aws", f"user-{i % 50}", f"{i:012d}", "us-east-1,eu-west-1", None, None)
        for i in range(1, 10_001)
    ]
    rows[5000] = (5001, "acct-5001", "gcp", "user-1", "000000005001", None, None, None)
    url = f"sqlite:///{tmp_path / 'app.db'}"
    create_table(url, rows)
    started = time.perf_counter()
    columns, fetched = sql_source.read_rows(url, QUERY)
    read = time.perf_counter() - started
    started, cpu = time.perf_counter(), time.process_time()
    result = merge([parse_rows(columns, fetched)])
    parsed, cpu = time.perf_counter() - started, time.process_time() - cpu
    with capsys.disabled():
        print(
            f"\n10,000 accounts-query rows: read {read:.3f} s, parsed and merged {parsed:.3f} s "
            f"({cpu:.3f} s CPU)"
        )
    assert len(result.accounts) == 9_999 and [r.position for r in result.rejected] == [5001]
    assert parsed < 5  # about 0.3 s; quadratic work would take minutes
