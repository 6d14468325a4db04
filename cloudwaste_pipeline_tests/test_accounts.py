"""The accounts file: a clear error for every kind of mistake, aliases as partition keys."""

import pytest

from cloudwaste_pipeline.accounts import AccountsFileError, load_accounts, parse_accounts

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
        {"accounts": [{**AWS, "real_costs": True}, {**AWS, "name": "b", "account_id": "210987654321", "real_costs": False}]}
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
