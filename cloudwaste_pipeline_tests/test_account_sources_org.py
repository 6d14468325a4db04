"""AWS accounts discovered through AWS Organizations (moto): nested OUs, ACTIVE accounts only,
stable aliases from a tag or the Name, and the accounts without one rejected with the reason."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError
from moto import mock_aws

from cloudwaste_pipeline.account_sources import AccountSourceError
from cloudwaste_pipeline.account_sources.aws_org import (
    ALIAS_TAG,
    OrgSettings,
    alias_of,
    is_active,
    org_accounts,
    slug,
)

ROLE = "CloudWasteReadOnly"
OWNER = "user-org-owner-77"


@dataclass
class Org:
    client: Any
    root: str
    apps: str
    data: str
    deep: str
    other: str
    ids: dict[str, str]
    """Account Name -> account id, the management account's included."""

    def settings(self, *parents: str) -> OrgSettings:
        return OrgSettings(
            parents=parents,
            role_name=ROLE,
            owner_user_id=OWNER,
            regions=("eu-west-1",),
            real_costs=True,
        )


@pytest.fixture
def aws_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """moto in process: fake credentials, no endpoint or profile from the machine."""
    for name in ("AWS_ENDPOINT_URL", "AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ROLE_ARN"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("AWS_CONFIG_FILE", "/nonexistent/aws-config")
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent/aws-credentials")


@pytest.fixture
def org(aws_env: None) -> Iterator[Org]:
    """root > apps > data > deep, and root > other, with accounts of every kind under apps."""
    with mock_aws():
        client = boto3.client("organizations", region_name="us-east-1")
        client.create_organization(FeatureSet="ALL")
        root = client.list_roots()["Roots"][0]["Id"]

        def unit(parent: str, name: str) -> str:
            return client.create_organizational_unit(ParentId=parent, Name=name)[
                "OrganizationalUnit"
            ]["Id"]

        def account(name: str, parent: str, tags: dict[str, str] | None = None) -> str:
            status = client.create_account(
                Email=f"{slug(name) or 'x'}@example.com", AccountName=name
            )["CreateAccountStatus"]
            account_id = status["AccountId"]
            client.move_account(
                AccountId=account_id, SourceParentId=root, DestinationParentId=parent
            )
            if tags:
                client.tag_resource(
                    ResourceId=account_id, Tags=[{"Key": k, "Value": v} for k, v in tags.items()]
                )
            return account_id

        apps = unit(root, "apps")
        data = unit(apps, "data")
        deep = unit(data, "deep")
        other = unit(root, "other")
        ids = {a["Name"]: a["Id"] for a in client.list_accounts()["Accounts"]}
        ids["Web"] = account("Web", apps, {ALIAS_TAG: "web-frontend", "team": "web"})
        ids["Team X"] = account("Team X", apps)
        ids["Sandbox"] = account("Sandbox", apps)
        client.close_account(AccountId=ids["Sandbox"])  # SUSPENDED
        ids["Bad Tag"] = account("Bad Tag", apps, {ALIAS_TAG: "Not Valid!"})
        ids["987654321098"] = account("987654321098", apps)  # its Name is an id: no alias
        ids["Data Lake (prod)"] = account("Data Lake (prod)", data)
        ids["team_x"] = account("team_x", data)  # the same slug as "Team X"
        ids["Deep Account"] = account("Deep Account", deep)
        ids["Elsewhere"] = account("Elsewhere", other)
        yield Org(client, root, apps, data, deep, other, ids)


def assert_no_raw_ids(org: Org, texts: list[str]) -> None:
    raw = [*org.ids.values(), OWNER]
    for text in texts:
        assert not any(r in text for r in raw), text


def test_active_accounts_under_nested_ous_get_their_role_and_settings(org: Org):
    result = org_accounts(org.settings(org.apps), org.client)
    found = {f.account.name: f.account for f in result.found}
    assert sorted(found) == ["data-lake-prod", "deep-account", "web-frontend"]
    web = found["web-frontend"]
    assert web.account_id == org.ids["Web"]
    assert web.role_arn == f"arn:aws:iam::{org.ids['Web']}:role/{ROLE}"
    assert (web.provider, web.owner_user_id, web.regions, web.real_costs) == (
        "aws",
        OWNER,
        ("eu-west-1",),
        True,
    )
    assert found["deep-account"].account_id == org.ids["Deep Account"]  # two OUs down


def test_accounts_without_a_usable_alias_are_rejected_with_the_reason(org: Org):
    result = org_accounts(org.settings(org.apps), org.client)
    reasons = [r.reason for r in result.rejected]
    assert len(reasons) == 4, reasons
    shared = [r for r in result.rejected if r.alias == "team-x"]
    assert len(shared) == 2  # neither "Team X" nor "team_x" is guessed to be the one
    assert all(
        "share this alias; give each a distinct cloudwaste:alias tag" in r.reason for r in shared
    )
    (bad_tag,) = [r for r in reasons if "'Bad Tag'" in r]
    assert "its cloudwaste:alias tag is not a valid alias" in bad_tag
    (numeric,) = [r for r in reasons if "Name gives no valid alias" in r]
    assert "(Name '<account-id>')" in numeric  # the Name is shown, scrubbed
    assert all(r.startswith("account ") and "under AWS Organizations" in r for r in reasons)
    assert [r.position for r in result.rejected] == sorted(r.position for r in result.rejected)
    assert_no_raw_ids(org, reasons)


def test_suspended_and_other_ou_accounts_are_left_out_and_each_account_counted_once(org: Org):
    names = {f.account.name for f in org_accounts(org.settings(org.apps), org.client).found}
    assert "sandbox" not in names and "elsewhere" not in names
    everything = org_accounts(org.settings(org.root, org.apps, org.data), org.client)
    ids = [f.account.account_id for f in everything.found]
    assert len(ids) == len(set(ids))  # apps and data are under the root too
    assert {f.account.name for f in everything.found} == {
        "master",
        "elsewhere",
        "data-lake-prod",
        "deep-account",
        "web-frontend",
    }
    assert org.ids["Sandbox"] not in ids


def test_the_role_is_in_the_accounts_partition(aws_env: None):
    with mock_aws():
        client = boto3.client("organizations", region_name="us-gov-west-1")
        client.create_organization(FeatureSet="ALL")
        root = client.list_roots()["Roots"][0]["Id"]
        result = org_accounts(
            OrgSettings(parents=(root,), role_name="team/Reader", owner_user_id=OWNER), client
        )
    (found,) = result.found
    assert found.account.role_arn.startswith("arn:aws-us-gov:iam::")
    assert found.account.role_arn.endswith(":role/team/Reader")
    assert found.account.regions == () and found.account.real_costs is None


def test_an_unknown_parent_stops_the_read_without_an_id(org: Org):
    with pytest.raises(AccountSourceError, match="AWS Organizations cannot be read") as caught:
        org_accounts(org.settings(org.apps, org.root + "-zzzzzzzz"), org.client)
    assert_no_raw_ids(org, [str(caught.value)])


class DeniedTags:
    """The moto client, but one account's tags cannot be read."""

    def __init__(self, client: Any, denied: str) -> None:
        self.client, self.denied = client, denied

    def get_paginator(self, name: str) -> Any:
        paginator = self.client.get_paginator(name)
        if name != "list_tags_for_resource":
            return paginator
        denied = self.denied

        class Paginator:
            def paginate(self, ResourceId: str) -> Any:
                if ResourceId == denied:
                    raise ClientError(
                        {
                            "Error": {
                                "Code": "AccessDeniedException",
                                "Message": f"arn:aws:sts::{denied}:assumed-role/x is not allowed",
                            }
                        },
                        "ListTagsForResource",
                    )
                return paginator.paginate(ResourceId=ResourceId)

        return Paginator()


def test_an_account_whose_tags_cannot_be_read_is_rejected_alone(org: Org):
    client = DeniedTags(org.client, org.ids["Web"])
    result = org_accounts(org.settings(org.apps), client)
    assert {f.account.name for f in result.found} == {"data-lake-prod", "deep-account"}
    (denied,) = [r.reason for r in result.rejected if "'Web'" in r.reason]
    assert "its tags cannot be read (AccessDeniedException: <arn> is not allowed)" in denied
    assert_no_raw_ids(org, [r.reason for r in result.rejected])


@pytest.mark.parametrize(
    ("account", "active"),
    [
        ({"Status": "ACTIVE", "State": "ACTIVE"}, True),
        ({"Status": "ACTIVE"}, True),
        ({"State": "ACTIVE"}, True),
        ({"Status": "ACTIVE", "State": "PENDING_CLOSURE"}, False),
        ({"State": "SUSPENDED"}, False),
        ({"State": "PENDING_ACTIVATION"}, False),
        ({"Status": "SUSPENDED", "State": "ACTIVE"}, False),
        ({}, False),
    ],
)
def test_only_accounts_active_by_every_status_field_are_scanned(account, active):
    assert is_active(account) is active


@pytest.mark.parametrize(
    ("name", "tag", "alias"),
    [
        ("Data Lake (prod)", None, "data-lake-prod"),
        ("Équipe Données", None, "equipe-donnees"),
        ("  Web  ", " web-frontend ", "web-frontend"),
        ("x" * 100, None, "x" * 63),
        ("---", None, None),
        ("ops@example.com", None, "ops-example-com"),
        ("Prod", "Prod", None),  # a tag is taken as written, not slugged
        ("Prod", "123456789012", None),
        ("123456789012", None, None),
    ],
)
def test_an_alias_comes_from_the_tag_else_the_name_never_guessed(name, tag, alias):
    assert alias_of(name, tag)[0] == alias
