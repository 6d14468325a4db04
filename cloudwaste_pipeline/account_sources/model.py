"""What reading the account sources gives: the accounts, and the entries refused with a reason.

A hand-written file with a mistake stops the read (``AccountsFileError``), but one bad row among
10,000 from the app's database or from AWS Organizations must not stop the other 9,999: it becomes
a ``Rejection`` beside the good accounts, its reason naming the entry by position and alias,
never by raw id.
"""

from __future__ import annotations

from dataclasses import dataclass

from cloudwaste_pipeline.accounts import Account, AccountsFileError, shown
from cloudwaste_pipeline.errors import CloudWasteError


class AccountSourceError(CloudWasteError):
    """A source as a whole cannot be read (database unreachable, a query that fails, an unknown
    organizational unit). A configuration problem, so the read stops: returning the other sources'
    accounts would look like a complete list with thousands missing."""


@dataclass(frozen=True)
class Rejection:
    """An entry of a source that is not scanned, and why."""

    source: str
    """``accounts query`` or ``AWS Organizations``."""
    position: int
    """1-based: the row of the query, the account's place in the discovery."""
    reason: str
    """One sentence, starting with where the entry is; no raw account, subscription or user id."""
    alias: str | None = None
    """The entry's alias when it has a valid one."""

    def __str__(self) -> str:
        return self.reason


@dataclass(frozen=True)
class Found:
    """An account a source gave, before the sources are merged."""

    position: int
    where: str
    """How messages name it, e.g. ``row 17 of the accounts query``."""
    account: Account


@dataclass(frozen=True)
class SourceResult:
    """One source's accounts, in its own order, and the entries it refused itself."""

    source: str
    found: list[Found]
    rejected: list[Rejection]


@dataclass(frozen=True)
class AccountList:
    """The accounts to scan, each alias and each cloud account once, and what was refused."""

    accounts: list[Account]
    rejected: list[Rejection]

    def rejections_summary(self, limit: int = 5) -> str:
        """One line for a log: how many entries were refused, the first reasons."""
        shown = "; ".join(r.reason for r in self.rejected[:limit])
        more = len(self.rejected) - limit
        return f"{len(self.rejected)} account source entries rejected: {shown}" + (
            f"; and {more} more" if more > 0 else ""
        )

    def find(self, alias: str) -> Account:
        """The account ``alias``; a refused alias says why it was refused."""
        for account in self.accounts:
            if account.name == alias:
                return account
        reasons = [r.reason for r in self.rejected if r.alias == alias]
        if reasons:
            raise AccountsFileError(f"account {shown(alias)} was rejected: {reasons[0]}")
        raise AccountsFileError(f"no account named {shown(alias)} in the account sources")
