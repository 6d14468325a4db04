"""The accounts file: which cloud accounts to scan, under which alias.

The alias (``name``) is what Dagster shows as a partition key, so raw account ids never reach the
UI. Example (``$CLOUDWASTE_HOME/accounts.yaml`` or ``CLOUDWASTE_ACCOUNTS_FILE``)::

    accounts:
      - name: prod-main
        provider: aws
        owner_user_id: user-42
        account_id: "123456789012"
        regions: [us-east-1, eu-west-1]
        role_arn: arn:aws:iam::123456789012:role/CloudWasteReadOnly   # optional
        external_id: cw-7f3a                                          # optional
        real_costs: true    # optional: Cost Explorer resource-level costs (opted-in accounts)
      - name: azure-analytics
        provider: azure
        owner_user_id: user-42
        tenant_id: 00000000-0000-0000-0000-000000000001
        subscription_id: 00000000-0000-0000-0000-000000000002
        workspace_id: 00000000-0000-0000-0000-000000000003            # optional
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

ALIAS_PATTERN = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")
AWS_ACCOUNT_PATTERN = re.compile(r"^\d{12}$")
GUID_PATTERN = re.compile(r"^[0-9a-fA-F]{8}-([0-9a-fA-F]{4}-){3}[0-9a-fA-F]{12}$")


class AccountsFileError(ValueError):
    """The accounts file is missing or wrong; the message says which entry and field."""


@dataclass(frozen=True)
class Account:
    name: str
    provider: str
    owner_user_id: str
    account_id: str = ""
    regions: tuple[str, ...] = ()
    role_arn: str | None = None
    external_id: str | None = None
    tenant_id: str | None = None
    subscription_id: str | None = None
    workspace_id: str | None = None
    # None: follow the deployment's default (``CloudResource.real_costs``); True/False: this
    # account has (not) opted in to Cost Explorer's resource-level data, a per-account choice.
    real_costs: bool | None = None
    extra: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)

    @property
    def cloud_id(self) -> str:
        """The id hashed as the account: the AWS account id or the Azure subscription id."""
        return self.account_id if self.provider == "aws" else str(self.subscription_id)


def _require(entry: dict[str, Any], key: str, where: str) -> str:
    value = entry.get(key)
    if value is None or str(value).strip() == "":
        raise AccountsFileError(f"{where}: missing required field '{key}'")
    return str(value).strip()


def parse_account(entry: Any, where: str) -> Account:
    if not isinstance(entry, dict):
        raise AccountsFileError(
            f"{where}: each account must be a mapping, got {type(entry).__name__}"
        )
    name = _require(entry, "name", where)
    if not ALIAS_PATTERN.match(name):
        raise AccountsFileError(
            f"{where}: name {name!r} must be lower-case letters, digits, '-' or '_' (max 63); "
            "it is the partition key shown in the UI"
        )
    where = f"{where} ({name})"
    provider = _require(entry, "provider", where).lower()
    owner = _require(entry, "owner_user_id", where)
    known = {"name", "provider", "owner_user_id"}
    if provider == "aws":
        account_id = _require(entry, "account_id", where)
        if not AWS_ACCOUNT_PATTERN.match(account_id):
            raise AccountsFileError(f"{where}: account_id must be 12 digits (quote it in YAML)")
        regions = entry.get("regions") or []
        if not isinstance(regions, list) or not all(isinstance(r, str) for r in regions):
            raise AccountsFileError(f"{where}: regions must be a list of region names")
        real_costs = entry.get("real_costs")
        if real_costs is not None and not isinstance(real_costs, bool):
            raise AccountsFileError(f"{where}: real_costs must be true or false")
        known |= {"account_id", "regions", "role_arn", "external_id", "real_costs"}
        account = Account(
            name=name,
            provider=provider,
            owner_user_id=owner,
            account_id=account_id,
            regions=tuple(regions),
            role_arn=entry.get("role_arn"),
            external_id=entry.get("external_id"),
            real_costs=real_costs,
        )
    elif provider == "azure":
        tenant = _require(entry, "tenant_id", where)
        subscription = _require(entry, "subscription_id", where)
        for label, value in (("tenant_id", tenant), ("subscription_id", subscription)):
            if not GUID_PATTERN.match(value):
                raise AccountsFileError(f"{where}: {label} must be a GUID")
        known |= {"tenant_id", "subscription_id", "workspace_id", "regions"}
        account = Account(
            name=name,
            provider=provider,
            owner_user_id=owner,
            tenant_id=tenant,
            subscription_id=subscription,
            workspace_id=entry.get("workspace_id"),
            regions=tuple(entry.get("regions") or ()),
        )
    else:
        raise AccountsFileError(f"{where}: provider must be 'aws' or 'azure', got {provider!r}")
    unknown = sorted(set(entry) - known)
    if unknown:
        raise AccountsFileError(f"{where}: unknown field(s) {unknown}")
    return account


def parse_accounts(document: Any, source: str = "accounts file") -> list[Account]:
    if not isinstance(document, dict) or not isinstance(document.get("accounts"), list):
        raise AccountsFileError(f"{source}: expected a top-level 'accounts:' list")
    accounts = [
        parse_account(entry, f"{source}: accounts[{i}]")
        for i, entry in enumerate(document["accounts"])
    ]
    names = [a.name for a in accounts]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise AccountsFileError(f"{source}: duplicate account name(s) {duplicates}")
    return accounts


def load_accounts(path: str | Path) -> list[Account]:
    path = Path(path)
    if not path.exists():
        raise AccountsFileError(
            f"accounts file not found at {path}; set CLOUDWASTE_ACCOUNTS_FILE or create it "
            "(see cloudwaste_pipeline/accounts.py or README.md for the format)"
        )
    try:
        document = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise AccountsFileError(f"{path}: not valid YAML ({exc.__class__.__name__})") from exc
    return parse_accounts(document, str(path))


def find_account(accounts: list[Account], alias: str) -> Account:
    for account in accounts:
        if account.name == alias:
            return account
    raise AccountsFileError(f"no account named {alias!r} in the accounts file")
