"""Where the accounts to scan come from: the accounts file, a query on the app's database, AWS
Organizations, merged into one ``AccountList``.

The file suits a small setup and is strict: any mistake stops the read (``accounts.py``). The
query and the discovery serve thousands of accounts, where one bad row must not stop the others:
each of their entries is checked as a file entry is, and a bad one becomes a ``Rejection`` beside
the good accounts. Each source is read once per call, in one query or one walk of the
organization, never one call per account to the database.

The file is read when it exists; a missing file is an error only when no other source is
configured (as before the other sources existed). Precedence: file, then query, then
Organizations (``merge``).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from cloudwaste_pipeline import settings
from cloudwaste_pipeline.account_sources.aws_org import OrgSettings, org_accounts
from cloudwaste_pipeline.account_sources.merge import merge
from cloudwaste_pipeline.account_sources.model import (
    AccountList,
    AccountSourceError,
    Found,
    Rejection,
    SourceResult,
)
from cloudwaste_pipeline.account_sources.sql import query_accounts
from cloudwaste_pipeline.accounts import load_accounts

__all__ = [
    "AccountList",
    "AccountSourceError",
    "Rejection",
    "file_accounts",
    "load_account_list",
    "merge",
    "org_accounts",
    "query_accounts",
]

FILE_SOURCE = "accounts file"
SETTINGS = (
    "CLOUDWASTE_ACCOUNTS_FILE",
    "CLOUDWASTE_ACCOUNTS_DATABASE_URL",
    "CLOUDWASTE_ACCOUNTS_QUERY",
    "CLOUDWASTE_ACCOUNTS_AWS_ORG_PARENTS",
    "CLOUDWASTE_ACCOUNTS_AWS_ORG_ROLE_NAME",
    "CLOUDWASTE_ACCOUNTS_AWS_ORG_OWNER_USER_ID",
    "CLOUDWASTE_ACCOUNTS_AWS_ORG_REGIONS",
    "CLOUDWASTE_ACCOUNTS_AWS_ORG_REAL_COSTS",
)


def load_account_list(
    accounts_file: Path,
    env: Mapping[str, str] | None = None,
    org_client: Any | None = None,
) -> AccountList:
    """Every configured source (settings from ``env``, default the environment), merged."""
    settings.validate(SETTINGS, env)
    url = settings.get("CLOUDWASTE_ACCOUNTS_DATABASE_URL", env)
    parents = settings.get("CLOUDWASTE_ACCOUNTS_AWS_ORG_PARENTS", env)
    results = []
    if accounts_file.exists() or not (url or parents):
        results.append(file_accounts(accounts_file))
    if url:
        results.append(query_accounts(url, settings.get("CLOUDWASTE_ACCOUNTS_QUERY", env)))
    if parents:
        org = OrgSettings(
            parents=parents,
            role_name=settings.get("CLOUDWASTE_ACCOUNTS_AWS_ORG_ROLE_NAME", env),
            owner_user_id=settings.get("CLOUDWASTE_ACCOUNTS_AWS_ORG_OWNER_USER_ID", env),
            regions=settings.get("CLOUDWASTE_ACCOUNTS_AWS_ORG_REGIONS", env),
            real_costs=settings.get("CLOUDWASTE_ACCOUNTS_AWS_ORG_REAL_COSTS", env),
        )
        results.append(org_accounts(org, org_client))
    return merge(results)


def file_accounts(path: Path) -> SourceResult:
    """The accounts file as a source: all its entries, or an ``AccountsFileError``."""
    found = [
        Found(i, f"accounts[{i - 1}] of the {FILE_SOURCE}", account)
        for i, account in enumerate(load_accounts(path), start=1)
    ]
    return SourceResult(FILE_SOURCE, found, [])
