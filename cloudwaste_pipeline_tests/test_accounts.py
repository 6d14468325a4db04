"""The accounts file: a clear error for every kind of mistake, aliases as partition keys."""

import tempfile
from pathlib import Path

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from cloudwaste_pipeline import accounts as accounts_module
from cloudwaste_pipeline.accounts import (
    ALIAS_PATTERN,
    AWS_ACCOUNT_PATTERN,
    AWS_REGION_PATTERN,
    AZURE_REGION_PATTERN,
    GUID_PATTERN,
    Account,
    AccountsFileError,
    load_accounts,
    parse_accounts,
)

AWS = {
    "name": "prod-main",
    "provider": "aws",
    "owner_user_id": "user-42",
    "account_id": "123456789012",
    "regions": ["us-east-1"],
}
AZURE = {
    "name": "azure-analytics",
    "provider": "azure",
    "owner_user_id": "user-42",
    "tenant_id": "00000000-0000-0000-0000-000000000001",
    "subscription_id": "00000000-0000-0000-0000-000000000002",
}


def test_parses_both_providers_and_the_hashed_id_is_the_cloud_id():
    aws, azure = parse_accounts({"accounts": [AWS, AZURE]})
    assert aws.cloud_id == "123456789012" and aws.regions == ("us-east-1",)
    assert azure.cloud_id == AZURE["subscription_id"]
    assert aws.real_costs is None  # follows the deployment's default


def test_real_costs_is_a_per_account_choice():
    opted_in, opted_out = parse_accounts(
        {
            "accounts": [
                {**AWS, "real_costs": True},
                {**AWS, "name": "b", "account_id": "210987654321", "real_costs": False},
            ]
        }
    )
    assert (opted_in.real_costs, opted_out.real_costs) == (True, False)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"account_id": "12345"}, "12 digits"),
        ({"account_id": None}, "missing required field 'account_id'"),
        ({"name": "Prod Main"}, "lower-case"),
        ({"provider": "gcp"}, "provider must be"),
        ({"regions": "us-east-1"}, "list of region names"),
        ({"colour": "blue"}, "unknown field"),
        ({"owner_user_id": ""}, "owner_user_id"),
        ({"real_costs": "yes"}, "real_costs must be true or false"),
    ],
)
def test_bad_entries_name_the_entry_and_field(change, message):
    with pytest.raises(AccountsFileError, match=message) as info:
        parse_accounts({"accounts": [{**AWS, **change}]})
    assert "accounts[0]" in str(info.value)


def test_azure_ids_must_be_guids():
    with pytest.raises(AccountsFileError, match="subscription_id must be a GUID"):
        parse_accounts({"accounts": [{**AZURE, "subscription_id": "not-a-guid"}]})


def test_duplicate_aliases_are_refused():
    with pytest.raises(AccountsFileError, match="duplicate"):
        parse_accounts({"accounts": [AWS, AWS]})


def test_missing_file_and_bad_yaml_say_what_to_do(tmp_path):
    with pytest.raises(AccountsFileError, match="CLOUDWASTE_ACCOUNTS_FILE"):
        load_accounts(tmp_path / "absent.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("accounts: [\n")
    with pytest.raises(AccountsFileError, match="not valid YAML"):
        load_accounts(bad)
    wrong = tmp_path / "wrong.yaml"
    wrong.write_text("- name: x\n")
    with pytest.raises(AccountsFileError, match="top-level 'accounts:' list"):
        load_accounts(wrong)


# --- issue 16: the accounts file accepts no garbage ---------------------------------------------

SUBSCRIPTION = AZURE["subscription_id"]
IDS = ("123456789012", SUBSCRIPTION, "00000000-0000-0000-0000-000000000001")


def refused(document: object, message: str) -> str:
    """The error's text, after checking it names the problem and quotes no account id."""
    with pytest.raises(AccountsFileError, match=message) as info:
        parse_accounts(document)
    text = str(info.value)
    assert not any(i in text for i in IDS), text
    return text


@pytest.mark.parametrize("entry", [AWS, AZURE], ids=["aws", "azure"])
@pytest.mark.parametrize("regions", ["eastus", "us-east-1", "", 42, {"a": 1}, True])
def test_regions_must_be_a_list_for_both_providers(entry, regions):
    text = refused({"accounts": [{**entry, "regions": regions}]}, "regions must be a list")
    assert "accounts[0]" in text


@pytest.mark.parametrize(
    ("entry", "regions", "message"),
    [
        (AWS, ["us-east-1", ""], r"regions\[1\] is empty"),
        (AZURE, ["  "], r"regions\[0\] is empty"),
        (AWS, ["us-east-1", "us-east-1"], "repeats region 'us-east-1'"),
        (AZURE, ["eastus", "westeurope", "eastus"], "repeats region 'eastus'"),
        (AWS, ["eastus"], "not an AWS region name"),
        (AWS, ["US-EAST-1"], "not an AWS region name"),
        (AWS, ["us-east1"], "not an AWS region name"),
        (AZURE, ["us-east-1"], "not an Azure region name"),
        (AZURE, ["East US"], "not an Azure region name"),
        (AWS, [None], "must be a region name"),
        (AZURE, [1], "must be a region name"),
    ],
)
def test_each_region_is_a_well_formed_name_given_once(entry, regions, message):
    refused({"accounts": [{**entry, "regions": regions}]}, message)


AWS_REGIONS = ["us-east-1", "eu-central-2", "us-gov-west-1", "cn-north-1", "ap-southeast-4"]
AZURE_REGIONS = ["eastus", "westeurope", "southafricanorth", "eastus2", "centraluseuap"]


def test_real_region_names_are_accepted_as_given():
    aws, azure = parse_accounts(
        {"accounts": [{**AWS, "regions": AWS_REGIONS}, {**AZURE, "regions": AZURE_REGIONS}]}
    )
    assert aws.regions == tuple(AWS_REGIONS) and azure.regions == tuple(AZURE_REGIONS)
    (no_regions,) = parse_accounts({"accounts": [{**AWS, "regions": None}]})
    assert no_regions.regions == ()  # every enabled region, as before


@pytest.mark.parametrize(
    ("first", "second"),
    [
        (AWS, {**AWS, "account_id": " 123456789012 "}),
        (AZURE, {**AZURE, "subscription_id": SUBSCRIPTION.upper()}),
        (AZURE, {**AZURE, "subscription_id": f"  {SUBSCRIPTION}\t"}),
    ],
)
def test_one_cloud_account_under_two_aliases_is_refused(first, second):
    text = refused({"accounts": [first, {**second, "name": "other"}]}, "the same")
    assert first["name"] in text and "other" in text


def test_the_same_id_text_in_two_clouds_is_two_accounts():
    aws, azure = parse_accounts({"accounts": [AWS, AZURE]})
    assert aws.cloud_id != azure.cloud_id


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"owner_user_id": 1001}, "owner_user_id must be text, but YAML read a number: quote it"),
        ({"owner_user_id": True}, "owner_user_id must be text"),
        ({"owner_user_id": {"a": 1}}, "owner_user_id must be text"),
        ({"owner_user_id": "user\x00-1"}, "control characters"),
        ({"owner_user_id": "u" * 300}, "longer than 256"),
        ({"name": 2024}, "name must be text"),
        ({"name": "123456789012"}, "looks like an account id"),
        ({"provider": ["aws"]}, "provider must be text"),
        ({"account_id": 123456789012}, "account_id must be text, but YAML read a number"),
        ({"account_id": "12345678901x"}, "12 digits"),
        ({"role_arn": "arn:aws:iam::123456789012:user/someone"}, "role_arn must be an IAM role"),
        ({"role_arn": "not-an-arn"}, "role_arn must be an IAM role"),
        ({"role_arn": ""}, "role_arn is empty"),
        ({"external_id": 12345}, "external_id must be text"),
        ({"external_id": "has space"}, "external_id must be"),
        ({"real_costs": "true"}, "real_costs must be true or false"),
        ({"tenant_id": "x"}, "unknown field"),
    ],
)
def test_every_aws_field_is_typed_and_shaped(change, message):
    text = refused({"accounts": [{**AWS, **change}]}, message)
    assert "accounts[0]" in text


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"workspace_id": "not-a-guid"}, "workspace_id must be a GUID"),
        ({"workspace_id": 7}, "workspace_id must be text"),
        ({"tenant_id": None}, "missing required field 'tenant_id'"),
        ({"real_costs": True}, "unknown field.*'real_costs'.*Azure"),
        ({"account_id": "123456789012"}, "unknown field"),
        ({"subscription_id": "0000000000000000000000000000000000002"}, "must be a GUID"),
    ],
)
def test_every_azure_field_is_typed_and_shaped(change, message):
    refused({"accounts": [{**AZURE, **change}]}, message)


def test_good_optional_fields_are_kept():
    aws, azure = parse_accounts(
        {
            "accounts": [
                {
                    **AWS,
                    "role_arn": "arn:aws-us-gov:iam::123456789012:role/team/CloudWasteReadOnly",
                    "external_id": "cw-7f3a",
                },
                {**AZURE, "workspace_id": "00000000-0000-0000-0000-000000000003"},
            ]
        }
    )
    assert aws.role_arn.endswith("role/team/CloudWasteReadOnly") and aws.external_id == "cw-7f3a"
    assert azure.workspace_id == "00000000-0000-0000-0000-000000000003"


def test_unknown_keys_of_any_type_are_named_safely():
    text = refused({"accounts": [{**AWS, 123456789012: "x", "colour": 1}]}, "unknown field")
    assert "'colour'" in text
    refused({"accounts": [AWS], "acounts": []}, "unknown top-level field")


GOOD_FILE = """\
accounts:
  - name: prod-main
    provider: aws
    owner_user_id: user-42
    account_id: "123456789012"
    regions: [us-east-1]
"""


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (GOOD_FILE + "    regions: [eu-west-1]\n", "line 7: duplicate key 'regions'"),
        (GOOD_FILE.replace("accounts:\n", "accounts: []\naccounts:\n", 1), "duplicate key"),
        ("accounts:\n  - {name: a, name: b}\n", "duplicate key 'name'"),
        ("x: &a [1, 2]\naccounts: *a\n", "aliases"),
        ("a: &a [x, x]\nb: &b [*a, *a]\nc: &c [*b, *b]\naccounts: []\n", "aliases"),
        ("base: &b {provider: aws}\naccounts:\n  - {<<: *b, name: a}\n", "aliases"),
        ("accounts:\n  - {<<: {provider: aws}, name: a}\n", "merge keys"),
        (GOOD_FILE.replace("user-42", "2026-13-01"), "impossible date"),
        (GOOD_FILE.replace("user-42", "1001"), "owner_user_id must be text"),
        (GOOD_FILE.replace("user-42", "0755"), "owner_user_id must be text"),
        (GOOD_FILE.replace("user-42", "2026-12-01"), "YAML read a date"),
        (GOOD_FILE.replace('"123456789012"', "123456789012"), "quote it"),
        ("accounts: [" * 2000, "nested more than"),
        ("accounts: [\n", "not valid YAML at line 2"),
        ("[" * 5000 + "]" * 5000, "nested more than 20 levels"),
        ("accounts:\n  - " + "{a: " * 30 + "1" + "}" * 30 + "\n", "nested more than"),
        ("!!python/object/apply:os.system ['true']\n", "not valid YAML"),
        ("---\naccounts: []\n---\naccounts: []\n", "not valid YAML"),
        ("", "top-level 'accounts:' list"),
    ],
)
def test_the_file_is_read_strictly(tmp_path, text, message):
    path = tmp_path / "accounts.yaml"
    path.write_text(text)
    with pytest.raises(AccountsFileError, match=message) as info:
        load_accounts(path)
    assert "123456789012" not in str(info.value)


def test_a_file_that_is_not_text_not_a_file_or_too_big_is_refused(tmp_path, monkeypatch):
    binary = tmp_path / "binary.yaml"
    binary.write_bytes(b"accounts:\n  - \xff\xfe\n")
    with pytest.raises(AccountsFileError, match="not UTF-8"):
        load_accounts(binary)
    with pytest.raises(AccountsFileError, match="not a regular file"):
        load_accounts(tmp_path)
    monkeypatch.setattr(accounts_module, "MAX_FILE_BYTES", 64)
    big = tmp_path / "big.yaml"
    big.write_text(GOOD_FILE)
    with pytest.raises(AccountsFileError, match="larger than"):
        load_accounts(big)


def test_the_good_file_still_loads(tmp_path):
    path = tmp_path / "accounts.yaml"
    path.write_text(GOOD_FILE)
    (account,) = load_accounts(path)
    assert account.cloud_id == "123456789012" and account.regions == ("us-east-1",)


# --- property: garbage in, AccountsFileError out ------------------------------------------------

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(allow_nan=True),
    st.dates(),
    st.text(max_size=20),
    st.sampled_from(
        [
            "aws",
            "azure",
            "AWS",
            "us-east-1",
            "eastus",
            "",
            " ",
            "123456789012",
            SUBSCRIPTION,
            SUBSCRIPTION.upper(),
            "arn:aws:iam::123456789012:role/x",
            "prod-main",
        ]
    ),
)
FIELDS = sorted({*AWS, *AZURE, "role_arn", "external_id", "real_costs", "workspace_id"})
values = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.dictionaries(st.one_of(st.sampled_from(FIELDS), st.text(max_size=8)), inner, max_size=5),
    ),
    max_leaves=12,
)
ALIASES = ["a", "b", "prod-main", "azure-analytics"]
CLOUD_IDS = {
    "aws": ["123456789012", "210987654321", " 123456789012"],
    "azure": [SUBSCRIPTION, SUBSCRIPTION.upper(), "00000000-0000-0000-0000-00000000000f"],
}
REGIONS = {"aws": [*AWS_REGIONS, "eastus", "US-EAST-1"], "azure": [*AZURE_REGIONS, "us-east-1", ""]}


def _entry(base: dict, name: str, pick: int, regions: list[int] | None, changes: dict) -> dict:
    """A plausible entry: right fields, one of a few ids and regions, sometimes a changed field."""
    provider = base["provider"]
    id_field = "account_id" if provider == "aws" else "subscription_id"
    ids, names = CLOUD_IDS[provider], REGIONS[provider]
    chosen = None if regions is None else [names[i % len(names)] for i in regions]
    return {**base, "name": name, id_field: ids[pick % 3], "regions": chosen, **changes}


entries = st.builds(
    _entry,
    st.sampled_from([AWS, AZURE]),
    st.sampled_from(ALIASES),
    st.integers(0, 2),
    st.none() | st.lists(st.integers(0, 6), max_size=3),
    st.just({}) | st.dictionaries(st.sampled_from(FIELDS), values, max_size=2),
)
documents = st.integers(0, 3).flatmap(
    lambda i: values if i == 0 else st.lists(entries | values, max_size=3).map(_accounts)
)


def _accounts(items: list) -> dict:
    return {"accounts": items}


def assert_valid(result: list[Account]) -> None:
    """What a caller may rely on when parsing succeeds."""
    names = [a.name for a in result]
    assert len(set(names)) == len(names)
    clouds = {(a.provider, a.cloud_id.strip().lower()) for a in result}
    assert len(clouds) == len(result)
    for account in result:
        assert ALIAS_PATTERN.match(account.name)
        assert isinstance(account.owner_user_id, str) and account.owner_user_id.strip()
        pattern = AWS_REGION_PATTERN if account.provider == "aws" else AZURE_REGION_PATTERN
        assert all(pattern.match(r) for r in account.regions)
        assert len(set(account.regions)) == len(account.regions)
        if account.provider == "aws":
            assert AWS_ACCOUNT_PATTERN.match(account.account_id)
        else:
            assert GUID_PATTERN.match(str(account.subscription_id))


@settings(derandomize=True, max_examples=200, deadline=None)
@given(documents)
def test_any_document_parses_to_valid_accounts_or_a_clear_error(document):
    try:
        result = parse_accounts(document)
    except AccountsFileError as exc:
        assert "\n" not in str(exc)
        return
    assert_valid(result)


def _splice(text: str, junk: str, at: int) -> str:
    at = at % (len(text) + 1)
    return text[:at] + junk + text[at:]


yaml_texts = st.one_of(
    documents.map(lambda d: yaml.safe_dump(d, allow_unicode=True)),
    st.builds(
        _splice,
        st.sampled_from([GOOD_FILE, yaml.safe_dump({"accounts": [AWS, AZURE]})]),
        st.text(alphabet="&*!<>{}[]:,-?|'\"#%@ \n\t\x00abc019", max_size=6),
        st.integers(min_value=0),
    ),
)


@settings(derandomize=True, max_examples=200, deadline=None)
@given(st.one_of(st.binary(max_size=200), yaml_texts.map(str.encode)))
def test_any_bytes_load_to_valid_accounts_or_a_clear_error(data):
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "accounts.yaml"
        path.write_bytes(data)
        try:
            result = load_accounts(path)
        except AccountsFileError:
            return
    assert_valid(result)
