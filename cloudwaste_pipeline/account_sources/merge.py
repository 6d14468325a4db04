"""Several sources into one list: each alias and each cloud account once, the first one wins.

Sources are merged in the order given (file, then the accounts query, then AWS Organizations: the
more deliberate a source, the earlier), and within a source in its own order. An alias, or a cloud
account (provider and normalized id, the id that is hashed), already taken refuses the later entry
and says which entry kept it: guessing which of two is meant would hand one account's partition
to another.
"""

from __future__ import annotations

from collections.abc import Sequence

from cloudwaste_pipeline.account_sources.model import AccountList, Found, Rejection, SourceResult
from cloudwaste_pipeline.accounts import PROVIDERS
from cloudwaste_pipeline.privacy.anonymize import normalize_identifier


def merge(results: Sequence[SourceResult]) -> AccountList:
    """The accounts of ``results`` without repeats, and every rejection (by source, position)."""
    accounts = []
    rejected = [r for result in results for r in result.rejected]
    by_alias: dict[str, Found] = {}
    by_cloud: dict[tuple[str, str], Found] = {}
    for result in results:
        for found in result.found:
            account = found.account
            cloud = (
                account.provider,
                normalize_identifier("account", account.provider, account.cloud_id),
            )
            reason = None
            if account.name in by_alias:
                reason = f"the alias is already taken by {by_alias[account.name].where}, kept"
            elif cloud in by_cloud:
                winner = by_cloud[cloud]
                reason = (
                    f"the same {PROVIDERS[account.provider]} account as {winner.account.name!r} "
                    f"({winner.where}), kept"
                )
            if reason is not None:
                rejected.append(
                    Rejection(
                        result.source,
                        found.position,
                        f"{found.where} ({account.name}): {reason}",
                        account.name,
                    )
                )
                continue
            by_alias[account.name] = by_cloud[cloud] = found
            accounts.append(account)
    order = {result.source: i for i, result in enumerate(results)}
    rejected.sort(key=lambda r: (order[r.source], r.position))
    return AccountList(accounts, rejected)
