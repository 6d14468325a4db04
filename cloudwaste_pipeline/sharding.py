"""Account shards: a fixed number of buckets every account falls in by a stable hash of its alias.

Scan and cost partitions are day (or month) x shard, so their number never grows with the
accounts: 16 shards x 1,827 days from 2025-01-01 to 2030-01-01 (included) is 29,232 partitions
per asset, under Dagster's advised 100,000 until 2042, at any number of accounts. A shard run is
the unit the run launcher places (a pod on Kubernetes); inside it the accounts are scanned
concurrently.

The hash is of the alias (shown in the UI anyway), not of the raw id, and is not keyed: anyone can
tell which shard an account is in (``cloudwaste shard <alias>``). Changing ``SHARD_COUNT`` moves
accounts between shards: a documented migration (README, Operations), never a silent change.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from typing import TypeVar

from cloudwaste_pipeline.errors import CloudWasteError

SHARD_COUNT = 16
MAX_NAMED = 100
"""At most this many aliases in a run's accounts tag; a retry of more retries the whole shard."""

T = TypeVar("T")


class SelectionError(CloudWasteError):
    """A run's accounts selection names an account that is not there or not in its shard."""


def shard_name(index: int) -> str:
    return f"shard-{index:02d}"


SHARDS: tuple[str, ...] = tuple(shard_name(i) for i in range(SHARD_COUNT))


def shard_of(alias: str) -> str:
    """The shard of an account alias: SHA-256 of the alias, modulo the shard count."""
    digest = hashlib.sha256(alias.encode("utf-8")).digest()
    return shard_name(int.from_bytes(digest[:8], "big") % SHARD_COUNT)


def in_shard(accounts: Iterable[T], shard: str, alias_of=lambda a: a.name) -> list[T]:
    """The accounts (anything with an alias) that fall in ``shard``, in the given order."""
    return [a for a in accounts if shard_of(alias_of(a)) == shard]


def parse_selection(text: str | None) -> list[str] | None:
    """The aliases of a ``cloudwaste/accounts`` run tag (comma- or space-separated), or None
    when the tag is absent or blank (the whole shard)."""
    if text is None or not text.strip():
        return None
    names = [n for n in text.replace(",", " ").split() if n]
    return list(dict.fromkeys(names))


def select(shard: str, aliases: list[str], selection: list[str] | None) -> list[str]:
    """The aliases a run of ``shard`` works on: all of the shard's, or those selected, checked.

    ``aliases`` are every known account's. A selected alias that is unknown, or in another
    shard, is a mistake the user must hear about (with the right shard), not a silent no-op.
    """
    mine = [a for a in aliases if shard_of(a) == shard]
    if selection is None:
        return mine
    known = set(aliases)
    problems = []
    for name in selection:
        if name not in known:
            problems.append(f"{name!r} is not an account of the accounts sources")
        elif shard_of(name) != shard:
            problems.append(f"{name!r} is in {shard_of(name)}, not {shard}")
    if problems:
        raise SelectionError(
            "accounts selection (run tag cloudwaste/accounts): " + "; ".join(problems)
        )
    chosen = set(selection)
    return [a for a in mine if a in chosen]
