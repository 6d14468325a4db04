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

The file is hand-written, so every mistake gets its own sentence (which entry, which field), and
the messages never quote an account id. It is read strictly: a duplicate key, a YAML alias (the
"billion laughs" expansion) or a value YAML turned into a number, date or boolean is refused
rather than guessed at. ``owner_user_id: 0755`` is the number 493 to YAML and ``1:30`` is 90:
converting them back to text would hash another user than the one the app sends, so text fields
must be quoted text.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any

import yaml

from cloudwaste_pipeline.errors import CloudWasteError
from cloudwaste_pipeline.privacy.anonymize import normalize_identifier, scrub_text

ALIAS_PATTERN = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")
AWS_ACCOUNT_PATTERN = re.compile(r"^\d{12}$")
GUID_PATTERN = re.compile(r"^[0-9a-fA-F]{8}-([0-9a-fA-F]{4}-){3}[0-9a-fA-F]{12}$")
AWS_REGION_PATTERN = re.compile(r"^[a-z]{2}(-(gov|iso[a-z]?))?-[a-z]+-\d{1,2}$")
"""``us-east-1``, ``eu-central-2``, ``us-gov-west-1``, ``cn-north-1``, ``us-isob-east-1``."""
AZURE_REGION_PATTERN = re.compile(r"^[a-z][a-z0-9]{1,49}$")
"""Azure's programmatic names: ``eastus``, ``westeurope``, ``southafricanorth``, ``eastus2``."""
ROLE_ARN_PATTERN = re.compile(
    r"^arn:aws(-[a-z]+)*:iam::\d{12}:role/([\w+=,.@-]+/)*[\w+=,.@-]{1,64}$"
)
EXTERNAL_ID_PATTERN = re.compile(r"^[\w+=,.@:/-]{2,1224}$")
CONTROL_CHARACTER = re.compile(r"[\x00-\x1f\x7f]")
"""STS's own limits on ``ExternalId``."""

MAX_FILE_BYTES = 8 << 20
"""Thousands of accounts fit in far less; a bigger file is a mistake (or an attack)."""
MAX_TEXT = 256
MAX_DEPTH = 20
"""An accounts file nests four levels; a deeper document is refused before it costs anything."""
PROVIDERS = {"aws": "AWS", "azure": "Azure"}
COMMON_FIELDS = frozenset({"name", "provider", "owner_user_id"})
PROVIDER_FIELDS = {
    "aws": frozenset({"account_id", "regions", "role_arn", "external_id", "real_costs"}),
    "azure": frozenset({"tenant_id", "subscription_id", "workspace_id", "regions"}),
}
REGION_PATTERNS = {
    "aws": (AWS_REGION_PATTERN, "like us-east-1"),
    "azure": (AZURE_REGION_PATTERN, "like westeurope (lower-case letters and digits)"),
}


class AccountsFileError(CloudWasteError):
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

    @property
    def cloud_id(self) -> str:
        """The id hashed as the account: the AWS account id or the Azure subscription id."""
        return self.account_id if self.provider == "aws" else str(self.subscription_id)


# --- values -------------------------------------------------------------------------------------


def shown(value: object) -> str:
    """A value the user typed, safe to quote in a message: short, one line, ids scrubbed."""
    text = scrub_text(" ".join(str(value).split()))  # before cutting: a cut id is not scrubbed
    return repr(text[:40] + ("..." if len(text) > 40 else ""))


def _yaml_type(value: object) -> str:
    if isinstance(value, bool):
        return "true/false"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, date):
        return "date"
    if isinstance(value, list | tuple):
        return "list"
    if isinstance(value, Mapping):
        return "mapping"
    return type(value).__name__


def _text(
    entry: Mapping[str, Any],
    key: str,
    where: str,
    *,
    required: bool = False,
    pattern: re.Pattern[str] | None = None,
    shape: str = "",
    limit: int = MAX_TEXT,
) -> str | None:
    """The field as stripped text, or None when absent and optional.

    ``shape`` describes a value that misses ``pattern``; the value itself is not quoted, since
    it may be an account id.
    """
    value = entry.get(key)
    if value is None:
        if required:
            raise AccountsFileError(f"{where}: missing required field '{key}'")
        return None
    if not isinstance(value, str):
        raise AccountsFileError(
            f"{where}: {key} must be text, but YAML read a {_yaml_type(value)}: quote it"
        )
    value = value.strip()
    if not value:
        raise AccountsFileError(
            f"{where}: {key} is empty" + ("" if required else "; give a value or remove the field")
        )
    if CONTROL_CHARACTER.search(value):
        raise AccountsFileError(f"{where}: {key} holds control characters")
    if len(value) > limit:
        raise AccountsFileError(f"{where}: {key} is longer than {limit} characters")
    if pattern is not None and not pattern.match(value):
        raise AccountsFileError(f"{where}: {key} must be {shape}")
    return value


def _required(entry: Mapping[str, Any], key: str, where: str, **checks: Any) -> str:
    value = _text(entry, key, where, required=True, **checks)
    assert value is not None  # _text raised for a missing required field
    return value


def _regions(entry: Mapping[str, Any], provider: str, where: str) -> tuple[str, ...]:
    """A YAML list of distinct region names of the provider; absent or null means none given.

    A plain string is refused (it would iterate into one-letter regions), and so is a
    duplicate: in a hand-written list it is usually a typo for another region.
    """
    value = entry.get("regions")
    if value is None:
        return ()
    if not isinstance(value, list):
        raise AccountsFileError(
            f"{where}: regions must be a list of region names such as [{_example(provider)}], "
            f"not a {_yaml_type(value)}"
        )
    pattern, shape = REGION_PATTERNS[provider]
    regions: list[str] = []
    for i, region in enumerate(value):
        field = f"regions[{i}]"
        if not isinstance(region, str):
            raise AccountsFileError(
                f"{where}: {field} must be a region name, but YAML read a {_yaml_type(region)}"
            )
        name = region.strip()
        if not name:
            raise AccountsFileError(f"{where}: {field} is empty")
        if not pattern.match(name):
            raise AccountsFileError(
                f"{where}: {field} {shown(name)} is not an {PROVIDERS[provider]} region name "
                f"({shape})"
            )
        if name in regions:
            raise AccountsFileError(f"{where}: {field} repeats region {name!r}")
        regions.append(name)
    return tuple(regions)


def _example(provider: str) -> str:
    return "us-east-1, eu-west-1" if provider == "aws" else "westeurope, eastus"


def _key_name(key: object) -> str:
    """A mapping key for a message: field names are shown, anything else is not quoted."""
    if isinstance(key, str) and re.fullmatch(r"[A-Za-z_][A-Za-z0-9_-]{0,39}", key):
        return repr(key)
    return "<a key that is not a field name>"


# --- entries ------------------------------------------------------------------------------------


def parse_account(entry: Any, where: str) -> Account:
    """One entry of the ``accounts:`` list, every field checked; ``where`` names it in errors."""
    if not isinstance(entry, Mapping):
        raise AccountsFileError(
            f"{where}: each account must be a mapping, not a {_yaml_type(entry)}"
        )
    name = _required(entry, "name", where, limit=63)
    if not ALIAS_PATTERN.match(name):
        raise AccountsFileError(
            f"{where}: name must be lower-case letters, digits, '-' or '_' (max 63); "
            "it is the partition key shown in the UI"
        )
    if scrub_text(name) != name:
        raise AccountsFileError(
            f"{where}: name looks like an account id or personal data; choose an alias, it is "
            "the partition key shown in the UI"
        )
    where = f"{where} ({name})"
    provider = _required(entry, "provider", where).lower()
    if provider not in PROVIDERS:
        raise AccountsFileError(
            f"{where}: provider must be 'aws' or 'azure', got {shown(provider)}"
        )
    unknown = [key for key in entry if key not in COMMON_FIELDS | PROVIDER_FIELDS[provider]]
    if unknown:
        names = sorted(_key_name(key) for key in unknown)
        raise AccountsFileError(
            f"{where}: unknown field(s) {', '.join(names)} for an {PROVIDERS[provider]} account"
        )
    owner = _required(entry, "owner_user_id", where)
    regions = _regions(entry, provider, where)
    if provider == "aws":
        real_costs = entry.get("real_costs")
        if real_costs is not None and not isinstance(real_costs, bool):
            raise AccountsFileError(f"{where}: real_costs must be true or false")
        return Account(
            name=name,
            provider=provider,
            owner_user_id=owner,
            account_id=_required(
                entry,
                "account_id",
                where,
                pattern=AWS_ACCOUNT_PATTERN,
                shape="12 digits (quote it in YAML)",
            ),
            regions=regions,
            role_arn=_text(
                entry,
                "role_arn",
                where,
                pattern=ROLE_ARN_PATTERN,
                shape="an IAM role ARN such as arn:aws:iam::<12 digits>:role/<name>",
                limit=2048,
            ),
            external_id=_text(
                entry,
                "external_id",
                where,
                pattern=EXTERNAL_ID_PATTERN,
                shape="2 to 1224 letters, digits or +=,.@:/-_",
                limit=1224,
            ),
            real_costs=real_costs,
        )
    guid = {"pattern": GUID_PATTERN, "shape": "a GUID (8-4-4-4-12 hex digits)"}
    return Account(
        name=name,
        provider=provider,
        owner_user_id=owner,
        regions=regions,
        tenant_id=_required(entry, "tenant_id", where, **guid),
        subscription_id=_required(entry, "subscription_id", where, **guid),
        workspace_id=_text(entry, "workspace_id", where, **guid),
    )


def parse_accounts(document: Any, source: str = "accounts file") -> list[Account]:
    """Every entry of an accounts document, each alias and each cloud account once."""
    if not isinstance(document, Mapping) or not isinstance(document.get("accounts"), list):
        raise AccountsFileError(f"{source}: expected a top-level 'accounts:' list")
    unknown = sorted(_key_name(key) for key in document if key != "accounts")
    if unknown:
        raise AccountsFileError(f"{source}: unknown top-level field(s) {', '.join(unknown)}")
    accounts = [
        parse_account(entry, f"{source}: accounts[{i}]")
        for i, entry in enumerate(document["accounts"])
    ]
    duplicates = sorted(n for n, count in Counter(a.name for a in accounts).items() if count > 1)
    if duplicates:
        raise AccountsFileError(f"{source}: duplicate account name(s) {duplicates}")
    # One normalisation with hashing: Azure ids differing only in case are one subscription.
    seen: dict[tuple[str, str], str] = {}
    for account in accounts:
        key = (
            account.provider,
            normalize_identifier("account", account.provider, account.cloud_id),
        )
        if key in seen:
            raise AccountsFileError(
                f"{source}: accounts {seen[key]!r} and {account.name!r} are the same "
                f"{PROVIDERS[account.provider]} account; keep one entry per cloud account"
            )
        seen[key] = account.name
    return accounts


# --- the file -----------------------------------------------------------------------------------


class _StrictLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that refuses aliases, merge keys and duplicate keys in any mapping.

    Aliases are what a "billion laughs" document multiplies; an accounts file has no use for
    them. A duplicate key silently keeps the last value, so the first (maybe the right one) is
    lost without a word.
    """

    depth = 0

    def compose_node(self, parent: Any, index: Any) -> Any:
        line = self.peek_event().start_mark.line + 1
        if self.check_event(yaml.AliasEvent):
            raise AccountsFileError(f"line {line}: YAML aliases (*name) are not allowed here")
        if self.depth >= MAX_DEPTH:
            raise AccountsFileError(f"line {line}: nested more than {MAX_DEPTH} levels deep")
        self.depth += 1
        try:
            return super().compose_node(parent, index)
        finally:
            self.depth -= 1

    def construct_mapping(self, node: Any, deep: bool = False) -> dict[Any, Any]:
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                line = key_node.start_mark.line + 1
                raise AccountsFileError(f"line {line}: YAML merge keys (<<) are not allowed here")
        mapping = super().construct_mapping(node, deep=deep)
        if len(mapping) != len(node.value):
            seen: set[Any] = set()
            for key_node, _ in node.value:
                key = self.construct_object(key_node, deep=deep)
                if key in seen:
                    line = key_node.start_mark.line + 1
                    raise AccountsFileError(f"line {line}: duplicate key {_key_name(key)}")
                seen.add(key)
        return mapping

    def construct_yaml_timestamp(self, node: Any) -> Any:
        try:
            return super().construct_yaml_timestamp(node)
        except ValueError:
            line = node.start_mark.line + 1
            raise AccountsFileError(
                f"line {line}: YAML reads an impossible date; quote values that are text"
            ) from None


_StrictLoader.add_constructor("tag:yaml.org,2002:timestamp", _StrictLoader.construct_yaml_timestamp)


def parse_accounts_yaml(text: str | bytes, source: str = "accounts file") -> list[Account]:
    """The accounts of a YAML document (text or UTF-8 bytes), read strictly."""
    if isinstance(text, bytes):
        try:
            text = text.decode("utf-8-sig")
        except UnicodeDecodeError:
            raise AccountsFileError(f"{source}: not UTF-8 text") from None
    try:
        document = yaml.load(text, Loader=_StrictLoader)  # a SafeLoader
    except AccountsFileError as exc:
        raise AccountsFileError(f"{source}: {exc}") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = f" at line {mark.line + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or exc.__class__.__name__
        raise AccountsFileError(f"{source}: not valid YAML{line}: {scrub_text(problem)}") from None
    except RecursionError:
        raise AccountsFileError(f"{source}: not valid YAML: nested too deeply") from None
    except (ValueError, TypeError, OverflowError) as exc:
        # YAML's implicit types: ``2026-13-01`` resolves to a date that cannot exist.
        raise AccountsFileError(
            f"{source}: not valid YAML: a value cannot be read ({exc.__class__.__name__}); "
            "quote values that are text"
        ) from None
    return parse_accounts(document, source)


def load_accounts(path: str | Path) -> list[Account]:
    """The accounts of the file at ``path``: a clear ``AccountsFileError`` for any problem."""
    path = Path(path)
    if not path.exists():
        raise AccountsFileError(
            f"accounts file not found at {path}; set CLOUDWASTE_ACCOUNTS_FILE or create it "
            "(see cloudwaste_pipeline/accounts.py or README.md for the format)"
        )
    if not path.is_file():
        raise AccountsFileError(f"accounts file {path} is not a regular file")
    try:
        with path.open("rb") as handle:
            data = handle.read(MAX_FILE_BYTES + 1)
    except OSError as exc:
        raise AccountsFileError(
            f"cannot read the accounts file {path}: {exc.strerror or exc}"
        ) from None
    if len(data) > MAX_FILE_BYTES:
        raise AccountsFileError(f"{path}: larger than {MAX_FILE_BYTES >> 20} MiB")
    return parse_accounts_yaml(data, str(path))


def find_account(accounts: list[Account], alias: str) -> Account:
    for account in accounts:
        if account.name == alias:
            return account
    raise AccountsFileError(f"no account named {shown(alias)} in the accounts file")
