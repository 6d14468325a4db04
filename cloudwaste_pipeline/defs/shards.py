"""A shard run: which accounts it works on, and each account's work done apart from the others.

Every scan and cost asset runs a partition of one shard (``partitions.py``). Each account is
done in its own transaction; one that raises is recorded in ``raw.account_failures`` by alias
(retried by ``failed_accounts_sensor``) and the others go on. The asset fails only when every
account it worked on failed, so the UI shows a red run when nothing landed, and a failed check
(``no_failed_accounts``) naming the aliases when some did not.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import date
from typing import Any

import dagster as dg

from cloudwaste_pipeline import settings
from cloudwaste_pipeline.accounts import Account
from cloudwaste_pipeline.defs.metadata import PREVIEW_ROWS
from cloudwaste_pipeline.defs.partitions import ACCOUNTS_TAG
from cloudwaste_pipeline.defs.resources import CloudResource, WarehouseResource
from cloudwaste_pipeline.sharding import SelectionError, parse_selection, select
from cloudwaste_pipeline.warehouse import failures

ACCOUNT_ROWS_SHOWN = 50
"""Per-account outcomes shown in a run's metadata (failures first); the counts cover all."""


@dataclass(frozen=True)
class ShardRun:
    """What one run of a shard partition works on."""

    day: date  # the scan day, or the first day of the cost month
    shard: str
    accounts: list[Account]
    named: bool  # the run's cloudwaste/accounts tag chose the accounts

    def describe(self, alias: str, what: str) -> str:
        """``what`` of this day and account, in words for an error message (no raw id)."""
        return f"{what} of {self.day} for account {alias!r}"


def shard_run(
    context: dg.AssetExecutionContext,
    cloud: CloudResource,
    warehouse: WarehouseResource,
    dimension: str = "date",
) -> ShardRun:
    """The partition's day and shard, and its accounts: the whole shard, or the tag's choice."""
    keys = context.partition_key.keys_by_dimension  # type: ignore[attr-defined]
    day, shard = date.fromisoformat(keys[dimension]), keys["shard"]
    accounts = cloud.accounts()
    selection = parse_selection(context.run.tags.get(ACCOUNTS_TAG))
    try:
        aliases = select(shard, [a.name for a in accounts], selection)
    except SelectionError as exc:
        raise dg.Failure(description=str(exc)) from None
    chosen = set(aliases)
    return ShardRun(day, shard, [a for a in accounts if a.name in chosen], selection is not None)


class Skip(Exception):
    """An account with nothing to do in this run (erased, no stored scan of a past day...)."""

    def __init__(self, status: str) -> None:
        super().__init__(status)
        self.status = status


@dataclass
class Outcome:
    alias: str
    status: str  # "done", "failed" or a Skip status
    figures: dict[str, Any] = field(default_factory=dict)
    error: str = ""


@dataclass
class Outcomes:
    items: list[Outcome]

    def of(self, status: str) -> list[Outcome]:
        return [o for o in self.items if o.status == status]

    def total(self, figure: str) -> float:
        return sum(o.figures.get(figure, 0) for o in self.items)

    def metadata(self) -> dict[str, Any]:
        """Counts by status, the failing aliases, and a per-account table (failures first)."""
        counts: dict[str, int] = {}
        for o in self.items:
            counts[o.status] = counts.get(o.status, 0) + 1
        failed = self.of("failed")
        shown = sorted(self.items, key=lambda o: (o.status != "failed", o.status, o.alias))
        lines = ["| account | outcome | detail |", "| --- | --- | --- |"] + [
            f"| {o.alias} | {o.status} | {o.error or _figures(o.figures)} |"
            for o in shown[:ACCOUNT_ROWS_SHOWN]
        ]
        if len(shown) > ACCOUNT_ROWS_SHOWN:
            lines.append(f"| ... | {len(shown) - ACCOUNT_ROWS_SHOWN} more | |")
        return {
            "accounts": len(self.items),
            "accounts_done": counts.get("done", 0),
            "accounts_failed": len(failed),
            **{
                f"accounts_{k.replace(' ', '_')}": v
                for k, v in counts.items()
                if k not in {"done", "failed"}
            },
            "failed_accounts": ", ".join(o.alias for o in failed[: PREVIEW_ROWS * 5]) or "none",
            "by_account": dg.MetadataValue.md("\n".join(lines)),
        }


def _figures(figures: dict[str, Any]) -> str:
    return ", ".join(f"{k} {v}" for k, v in figures.items())


def each_account(
    context: dg.AssetExecutionContext,
    run: ShardRun,
    asset: str,
    warehouse: WarehouseResource,
    work: Callable[[Account], dict[str, Any]],
    *,
    concurrent: bool = False,
    retry: Callable[[Account], bool] = lambda account: True,
    supersede: bool = False,
) -> Outcomes:
    """``work`` for each account of the run, each failure recorded by alias, never raised.

    ``concurrent``: accounts run on a bounded thread pool per cloud (API-bound scans);
    otherwise one after the other (CPU-bound derivations, which threads would not speed up).
    ``retry(account)``: whether a failure is worth re-requesting (a past day's live scan is not).
    ``supersede``: a success also resolves the account's failures of earlier days.
    Raises ``dg.Failure`` when every account failed: nothing landed, the run is red.
    """
    engine = warehouse.engine()

    def one(account: Account) -> Outcome:
        try:
            figures = work(account)
        except Skip as skip:
            return Outcome(account.name, skip.status)
        except Exception as exc:  # one account's failure never fails the others
            error_type, message = failures.describe(exc)
            try:
                with engine.begin() as conn:
                    attempts = failures.record(
                        conn,
                        run.day,
                        account.name,
                        asset,
                        exc,
                        settings.now(),
                        retry=retry(account),
                    )
            except Exception as unrecorded:  # the database itself is what failed: say so
                kind, why = failures.describe(unrecorded)
                context.log.error(
                    f"account {account.name!r}: its failure could not be recorded for a retry "
                    f"({kind}: {why}); re-run this partition once the database answers"
                )
                attempts = 0
            context.log.warning(
                f"account {account.name!r} failed ({asset}, attempt {attempts or '?'}): "
                f"{error_type}: {message}"
            )
            return Outcome(account.name, "failed", error=f"{error_type}: {message}")
        with engine.begin() as conn:
            failures.resolve(conn, run.day, account.name, asset, settings.now(), earlier=supersede)
        return Outcome(account.name, "done", figures)

    if concurrent and len(run.accounts) > 1:
        pools = {
            provider: ThreadPoolExecutor(
                max_workers=settings.accounts_at_once(provider),
                thread_name_prefix=f"{provider}-accounts",
            )
            for provider in {a.provider for a in run.accounts}
        }
        try:
            futures = [pools[a.provider].submit(one, a) for a in run.accounts]
            items = [f.result() for f in futures]
        finally:
            for pool in pools.values():
                pool.shutdown(wait=True)
    else:
        items = [one(a) for a in run.accounts]
    outcomes = Outcomes(items)
    failed = outcomes.of("failed")
    if failed and len(failed) == len(items):
        shown = ", ".join(repr(o.alias) for o in failed[:10])
        more = f" and {len(failed) - 10} more" if len(failed) > 10 else ""
        raise dg.Failure(
            description=(
                f"{asset}: every account of {run.shard} on {run.day} failed ({shown}{more}); "
                f"first error: {failed[0].error}"
            ),
            metadata=outcomes.metadata(),
        )
    return outcomes
