"""The account sources together: precedence, rejections beside the accounts, the settings that
choose the sources, and ``CloudResource`` on top of them."""

from __future__ import annotations

import logging
import subprocess
import sys
from pathlib import Path

import boto3
import pytest
from moto import mock_aws

from cloudwaste_pipeline.account_sources import AccountSourceError, load_account_list, merge
from cloudwaste_pipeline.account_sources.model import Found, SourceResult
from cloudwaste_pipeline.accounts import Account, AccountsFileError
from cloudwaste_pipeline.defs.resources import CloudResource
from cloudwaste_pipeline.settings import SettingError
from cloudwaste_pipeline_tests.test_account_sources_org import aws_env  # noqa: F401 (fixture)
from cloudwaste_pipeline_tests.test_account_sources_sql import create_table

FILE_ID, QUERY_ID, OTHER_ID = "111111111111", "222222222222", "333333333333"
FILE_TEXT = f"""\
accounts:
  - name: web-frontend
    provider: aws
    owner_user_id: user-1
    account_id: "{FILE_ID}"
  - name: prod-main
    provider: aws
    owner_user_id: user-1
    account_id: "{OTHER_ID}"
"""
QUERY = (
    "SELECT alias AS name, provider, owner AS owner_user_id, aws_account_id AS account_id "
    "FROM cloud_accounts ORDER BY id"
)


def aws(name: str, account_id: str) -> Account:
    return Account(name=name, provider="aws", owner_user_id="u", account_id=account_id)


def azure(name: str, subscription: str) -> Account:
    return Account(
        name=name,
        provider="azure",
        owner_user_id="u",
        tenant_id="00000000-0000-0000-0000-000000000001",
        subscription_id=subscription,
    )


def source(name: str, *accounts: Account) -> SourceResult:
    found = [Found(i, f"entry {i} of the {name}", a) for i, a in enumerate(accounts, start=1)]
    return SourceResult(name, found, [])


def test_the_first_source_keeps_an_alias_or_a_cloud_account_and_the_later_says_who():
    subscription = "0a0a0a0a-0000-4000-8000-00000000000c"
    result = merge(
        [
            source("file", aws("a", FILE_ID), azure("z", subscription)),
            source(
                "query", aws("a", QUERY_ID), aws("b", FILE_ID), azure("y", subscription.upper())
            ),
            source("org", aws("c", QUERY_ID), aws("a", OTHER_ID)),
        ]
    )
    # c's account was only in rejected rows: only kept accounts hold an alias or a cloud account
    assert [a.name for a in result.accounts] == ["a", "z", "c"]
    taken = "the alias is already taken by entry 1 of the file, kept"
    same = "the same {} account as {!r} (entry {} of the file), kept"
    assert [(r.source, r.position, r.alias, r.reason) for r in result.rejected] == [
        ("query", 1, "a", f"entry 1 of the query (a): {taken}"),
        ("query", 2, "b", f"entry 2 of the query (b): {same.format('AWS', 'a', 1)}"),
        ("query", 3, "y", f"entry 3 of the query (y): {same.format('Azure', 'z', 2)}"),
        ("org", 2, "a", f"entry 2 of the org (a): {taken}"),
    ]


def sql_env(tmp_path: Path, rows: list[tuple]) -> dict[str, str]:
    url = f"sqlite:///{tmp_path / 'app.db'}"
    create_table(url, rows)
    return {"CLOUDWASTE_ACCOUNTS_DATABASE_URL": url, "CLOUDWASTE_ACCOUNTS_QUERY": QUERY}


def test_file_then_query_then_organizations_with_real_sources(tmp_path, aws_env):  # noqa: F811
    accounts_file = tmp_path / "accounts.yaml"
    accounts_file.write_text(FILE_TEXT)
    with mock_aws():
        client = boto3.client("organizations", region_name="us-east-1")
        client.create_organization(FeatureSet="ALL")
        root = client.list_roots()["Roots"][0]["Id"]
        ids = {}
        for name in ("Web Frontend", "Data Lake", "Fresh"):
            status = client.create_account(Email=f"{len(ids)}@example.com", AccountName=name)
            ids[name] = status["CreateAccountStatus"]["AccountId"]
        env = sql_env(
            tmp_path,
            [
                (1, "prod-main", "aws", "user-2", QUERY_ID),  # the file's alias
                (2, "data-warehouse", "aws", "user-2", ids["Data Lake"]),
                (3, "billing", "aws", "user-2", "not-an-id"),
            ],
        )
        env |= {
            "CLOUDWASTE_ACCOUNTS_AWS_ORG_PARENTS": root,
            "CLOUDWASTE_ACCOUNTS_AWS_ORG_ROLE_NAME": "CloudWasteReadOnly",
            "CLOUDWASTE_ACCOUNTS_AWS_ORG_OWNER_USER_ID": "user-3",
        }
        result = load_account_list(accounts_file, env)
    names = [a.name for a in result.accounts]
    assert names == ["web-frontend", "prod-main", "data-warehouse", "master", "fresh"]
    assert result.find("data-warehouse").role_arn is None  # the query's row, not the discovery
    reasons = {r.reason for r in result.rejected}
    assert reasons == {
        "row 1 of the accounts query (prod-main): the alias is already taken by accounts[1] of "
        "the accounts file, kept",
        "row 3 of the accounts query (billing): account_id must be 12 digits (quote it in YAML)",
        "account 2 under AWS Organizations (web-frontend): the alias is already taken by "
        "accounts[0] of the accounts file, kept",
        "account 3 under AWS Organizations (data-lake): the same AWS account as 'data-warehouse' "
        "(row 2 of the accounts query), kept",
    }
    raw = [FILE_ID, QUERY_ID, OTHER_ID, *ids.values(), "user-1", "user-2", "user-3"]
    assert not any(r in text for text in reasons for r in raw)
    with pytest.raises(AccountsFileError, match="was rejected: row 3 of the accounts query"):
        result.find("billing")


def test_without_another_source_a_missing_file_fails_as_before(tmp_path):
    with pytest.raises(AccountsFileError, match="accounts file not found"):
        load_account_list(tmp_path / "accounts.yaml", {})


def test_with_a_query_the_file_is_read_only_when_it_exists(tmp_path):
    env = sql_env(tmp_path, [(1, "from-app", "aws", "user-2", QUERY_ID)])
    result = load_account_list(tmp_path / "absent.yaml", env)
    assert [a.name for a in result.accounts] == ["from-app"]
    broken = tmp_path / "accounts.yaml"
    broken.write_text(FILE_TEXT.replace('"', ""))  # a hand-written mistake still stops the read
    with pytest.raises(AccountsFileError, match=r"accounts\[0\] \(web-frontend\): account_id"):
        load_account_list(broken, env)


def test_a_source_that_cannot_be_read_or_is_half_configured_stops_the_read(tmp_path):
    accounts_file = tmp_path / "accounts.yaml"
    accounts_file.write_text(FILE_TEXT)
    env = sql_env(tmp_path, [])
    with pytest.raises(AccountSourceError, match="no such table"):
        load_account_list(accounts_file, {**env, "CLOUDWASTE_ACCOUNTS_QUERY": "SELECT * FROM x"})
    with pytest.raises(SettingError, match="CLOUDWASTE_ACCOUNTS_QUERY is not"):
        load_account_list(accounts_file, {"CLOUDWASTE_ACCOUNTS_DATABASE_URL": "sqlite:///x.db"})
    assert load_account_list(accounts_file, env).rejected == []  # an empty table is no error


def test_cloud_resource_returns_the_good_accounts_and_explains_a_rejected_one(
    tmp_path, monkeypatch, caplog
):
    env = sql_env(
        tmp_path,
        [(1, "from-app", "aws", "user-2", QUERY_ID), (2, "broken", "aws", "user-2", "12")],
    )
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    cloud = CloudResource(accounts_file=str(tmp_path / "absent.yaml"))
    with caplog.at_level(logging.WARNING):
        assert [a.name for a in cloud.accounts()] == ["from-app"]
    (logged,) = [r.getMessage() for r in caplog.records if "rejected" in r.getMessage()]
    assert "1 account source entries rejected: row 2 of the accounts query (broken)" in logged
    assert cloud.account("from-app").account_id == QUERY_ID
    with pytest.raises(AccountsFileError, match="'broken' was rejected: row 2 of the accounts"):
        cloud.account("broken")
    with pytest.raises(AccountsFileError, match="no account named 'nope'"):
        cloud.account("nope")
    (rejection,) = cloud.account_list().rejected
    assert rejection.position == 2 and rejection.alias == "broken"
    assert "accounts query" in cloud.account_list().rejections_summary()
    assert cloud.accounts_path() == tmp_path / "absent.yaml"


def test_the_sources_load_without_boto3():
    """Loading the code location stays cheap: boto3 is imported when Organizations is read."""
    code = "import sys, cloudwaste_pipeline.account_sources; print('boto3' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_erasure_and_ad_hoc_scans_see_the_accounts_of_every_source(tmp_path, monkeypatch):
    """A user's erasure covers the accounts they own in the app's table, not only in the file."""
    from cloudwaste_pipeline import api

    for name, value in sql_env(tmp_path, [(1, "from-app", "aws", "user-2", QUERY_ID)]).items():
        monkeypatch.setenv(name, value)
    known = api._known_accounts(str(tmp_path / "absent.yaml"))
    assert [(a.name, a.owner_user_id) for a in known] == [("from-app", "user-2")]
    monkeypatch.delenv("CLOUDWASTE_ACCOUNTS_DATABASE_URL")
    assert api._known_accounts(str(tmp_path / "absent.yaml")) == []


def test_a_remote_source_is_read_once_per_process_for_a_few_minutes(tmp_path, monkeypatch):
    """A shard run's four steps and the sensors' ticks reuse one read of the query."""
    from cloudwaste_pipeline.defs import resources
    from cloudwaste_pipeline.defs.resources import CloudResource

    env = sql_env(tmp_path, [(1, "from-app", "aws", "user-2", QUERY_ID)])
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    cloud = CloudResource(accounts_file=str(tmp_path / "absent.yaml"))
    first = cloud.account_list()
    assert cloud.account_list() is first
    monkeypatch.setattr(resources, "REMOTE_ACCOUNTS_TTL_S", 0.0)
    assert cloud.account_list() is not first
    assert [a.name for a in cloud.account_list().accounts] == ["from-app"]
