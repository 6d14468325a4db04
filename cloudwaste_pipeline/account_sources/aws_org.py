"""AWS accounts discovered through AWS Organizations: every ACTIVE account under some OUs.

From each parent (an OU id, or the root id ``r-...``) the accounts are listed, then its child OUs,
recursively (``ListAccountsForParent``, ``ListOrganizationalUnitsForParent``); an account reached
twice is one account. Accounts that are not ACTIVE (suspended, closing, closed, still joining)
are left out, by the older ``Status`` field and the newer ``State`` alike. Each is scanned through
the role ``arn:<partition>:iam::<account>:role/<role name>``, with the configured owner, regions
and ``real_costs``.

The alias is the partition key of the account for as long as it is scanned, so it must be stable
and never an id: the account's ``cloudwaste:alias`` tag when it has one, else a slug of its Name
(``Data Lake (prod)`` -> ``data-lake-prod``). A tag that is not a valid alias, a Name that gives
none, tags that cannot be read, or an alias two accounts of the organization would share refuse
the account(s) with the reason: choosing one of two by listing order would move an alias from one
account to the other between two reads. The calls go through botocore's ``adaptive`` retry mode
(client-side rate limiting on throttling): one ``ListTagsForResource`` per account is the only
way to read tags, a few thousand calls for a large organization.
"""

from __future__ import annotations

import re
import unicodedata
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from cloudwaste_pipeline.account_sources.model import (
    AccountSourceError,
    Found,
    Rejection,
    SourceResult,
)
from cloudwaste_pipeline.accounts import ALIAS_PATTERN, AccountsFileError, parse_account, shown
from cloudwaste_pipeline.privacy.anonymize import scrub_text

SOURCE = "AWS Organizations"
ALIAS_TAG = "cloudwaste:alias"
TAG_READERS = 8
"""``ListTagsForResource`` calls in flight at once; the adaptive retry mode slows them down."""
MAX_ATTEMPTS = 10
DEFAULT_REGION = "us-east-1"
"""Organizations is a global service; this region when the session names none."""


@dataclass(frozen=True)
class OrgSettings:
    """What the discovered accounts get: the settings ``CLOUDWASTE_ACCOUNTS_AWS_ORG_*``."""

    parents: tuple[str, ...]
    role_name: str
    owner_user_id: str
    regions: tuple[str, ...] = ()
    real_costs: bool | None = None


def org_accounts(config: OrgSettings, client: Any | None = None) -> SourceResult:
    """The ACTIVE accounts under ``config.parents``; those without a usable alias rejected."""
    client = client or organizations_client()
    try:
        listed = list(_active_accounts(client, config.parents))
        tags = _alias_tags(client, [account["Id"] for account in listed])
    except _boto_errors() as exc:
        raise AccountSourceError(f"{SOURCE} cannot be read: {_reason(exc)}") from None
    named: list[tuple[int, dict[str, Any], str]] = []
    rejected: list[Rejection] = []
    for position, (account, tag) in enumerate(zip(listed, tags, strict=True), start=1):
        where = f"account {position} under {SOURCE} (Name {shown(account.get('Name', ''))})"
        alias, problem = alias_of(account.get("Name") or "", tag)
        if alias is None:
            rejected.append(Rejection(SOURCE, position, f"{where}: {problem}"))
        else:
            named.append((position, account, alias))
    shared = {alias for alias, count in Counter(a for _, _, a in named).items() if count > 1}
    found = []
    for position, account, alias in named:
        where = f"account {position} under {SOURCE}"
        if alias in shared:
            reason = (
                f"{where} ({alias}): accounts of the organization share this alias; give each a "
                f"distinct {ALIAS_TAG} tag"
            )
            rejected.append(Rejection(SOURCE, position, reason, alias))
            continue
        try:
            found.append(
                Found(position, where, parse_account(_entry(account, alias, config), where))
            )
        except AccountsFileError as exc:
            rejected.append(Rejection(SOURCE, position, str(exc), alias))
    rejected.sort(key=lambda r: r.position)
    return SourceResult(SOURCE, found, rejected)


def alias_of(name: str, tag: str | Exception | None) -> tuple[str | None, str]:
    """(alias, "") from the ``cloudwaste:alias`` tag, else from the Name; (None, why) if none."""
    if isinstance(tag, Exception):
        return None, f"its tags cannot be read ({_reason(tag)}), so its alias is unknown"
    if tag is not None:
        alias = tag.strip()
        if _usable(alias):
            return alias, ""
        return None, (
            f"its {ALIAS_TAG} tag is not a valid alias (lower-case letters, digits, '-' or '_', "
            "at most 63, not an id)"
        )
    alias = slug(name)
    if _usable(alias):
        return alias, ""
    return None, f"its Name gives no valid alias; tag it {ALIAS_TAG}=<alias>"


def slug(name: str) -> str:
    """Lower-case letters and digits of ``name`` (accents dropped), each run of anything else
    one ``-``, at most 63 characters."""
    ascii_name = unicodedata.normalize("NFKD", name).encode("ascii", "ignore").decode()
    return re.sub(r"[^a-z0-9]+", "-", ascii_name.lower()).strip("-")[:63].rstrip("-")


def _usable(alias: str) -> bool:
    return bool(ALIAS_PATTERN.match(alias)) and scrub_text(alias) == alias


def is_active(account: dict[str, Any]) -> bool:
    """ACTIVE by every status field the answer has (``State`` replaces ``Status`` in 2025)."""
    fields = [account[key] for key in ("State", "Status") if key in account]
    return bool(fields) and all(value == "ACTIVE" for value in fields)


def _entry(account: dict[str, Any], alias: str, config: OrgSettings) -> dict[str, Any]:
    """The account as an accounts-file entry, checked by ``parse_account`` like any other."""
    arn = str(account.get("Arn") or "")
    partition = arn.split(":")[1] if arn.count(":") >= 5 else "aws"
    account_id = str(account["Id"])
    return {
        "name": alias,
        "provider": "aws",
        "owner_user_id": config.owner_user_id,
        "account_id": account_id,
        "regions": list(config.regions) or None,
        "role_arn": f"arn:{partition}:iam::{account_id}:role/{config.role_name}",
        "real_costs": config.real_costs,
    }


# --- the API ------------------------------------------------------------------------------------


def organizations_client() -> Any:
    """An Organizations client of the default credential chain (``AWS_ENDPOINT_URL`` applies)."""
    import boto3
    from botocore.config import Config

    session = boto3.session.Session()
    return session.client(
        "organizations",
        region_name=session.region_name or DEFAULT_REGION,
        config=Config(
            retries={"mode": "adaptive", "max_attempts": MAX_ATTEMPTS},
            max_pool_connections=TAG_READERS,
        ),
    )


def _active_accounts(client: Any, parents: tuple[str, ...]) -> Iterator[dict[str, Any]]:
    """Each ACTIVE account under ``parents`` once, parents in order, breadth first."""
    accounts = client.get_paginator("list_accounts_for_parent")
    units = client.get_paginator("list_organizational_units_for_parent")
    queue, seen_parents, seen_accounts = list(parents), set(parents), set()
    for parent in queue:
        for page in accounts.paginate(ParentId=parent):
            for account in page.get("Accounts", []):
                if account["Id"] not in seen_accounts and is_active(account):
                    seen_accounts.add(account["Id"])
                    yield account
        for page in units.paginate(ParentId=parent):
            for unit in page.get("OrganizationalUnits", []):
                if unit["Id"] not in seen_parents:
                    seen_parents.add(unit["Id"])
                    queue.append(unit["Id"])


def _alias_tags(client: Any, account_ids: list[str]) -> list[str | Exception | None]:
    """Each account's ``cloudwaste:alias`` tag value (None: no such tag), or the error reading
    its tags: one account's AccessDenied is its own rejection, not the whole source's."""
    errors = _boto_errors()

    def read(account_id: str) -> str | Exception | None:
        try:
            pages = client.get_paginator("list_tags_for_resource").paginate(ResourceId=account_id)
            for page in pages:
                for tag in page.get("Tags", []):
                    if tag["Key"] == ALIAS_TAG:
                        return str(tag["Value"])
        except errors as exc:
            return exc
        return None

    with ThreadPoolExecutor(max_workers=TAG_READERS) as pool:
        return list(pool.map(read, account_ids))


def _boto_errors() -> tuple[type[Exception], ...]:
    from botocore.exceptions import BotoCoreError, ClientError

    return (BotoCoreError, ClientError)


def _reason(exc: Exception) -> str:
    """The error code (or class) and AWS's message, ids scrubbed."""
    error = getattr(exc, "response", {}).get("Error", {})
    code = error.get("Code") or type(exc).__name__
    message = " ".join(str(error.get("Message") or exc).split())
    return scrub_text(f"{code}: {message}")[:300]
