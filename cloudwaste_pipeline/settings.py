"""Where things live and what time it is, read from the environment when asked (never at import).

Everything local sits under ``CLOUDWASTE_HOME`` (default ``./.cloudwaste``) in named subfolders,
so one ``rm -rf`` resets a demo and nothing is scattered over the machine.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path

DEFAULT_HOME = ".cloudwaste"
DEFAULT_RUN_RETENTION_DAYS = 90
DEFAULT_RAW_RETENTION_DAYS = 30
DEFAULT_ML_RETENTION_YEARS = 3


@dataclass(frozen=True)
class Paths:
    """The named subfolders of one CloudWaste home."""

    home: Path

    @property
    def warehouse(self) -> Path:
        return self.home / "warehouse"

    @property
    def warehouse_db(self) -> Path:
        return self.warehouse / "warehouse.db"

    @property
    def raw_db(self) -> Path:
        """The raw store, a file of its own: it holds raw ids and is never exported."""
        return self.warehouse / "raw.db"

    @property
    def exports(self) -> Path:
        return self.home / "ml_datasets"

    @property
    def models(self) -> Path:
        return self.home / "models"

    @property
    def dagster_home(self) -> Path:
        return self.home / "dagster"

    @property
    def demo_key(self) -> Path:
        return self.home / "demo.key"

    @property
    def actions_inbox(self) -> Path:
        """Where apps drop JSON-lines user actions (``CLOUDWASTE_ACTIONS_INBOX``)."""
        return Path(os.environ.get("CLOUDWASTE_ACTIONS_INBOX") or self.home / "inbox" / "actions")

    @property
    def accounts_file(self) -> Path:
        return Path(os.environ.get("CLOUDWASTE_ACCOUNTS_FILE") or self.home / "accounts.yaml")


def paths(home: str | os.PathLike[str] | None = None) -> Paths:
    """Paths under ``home``, else ``$CLOUDWASTE_HOME``, else ``./.cloudwaste`` (made absolute)."""
    chosen = home or os.environ.get("CLOUDWASTE_HOME") or DEFAULT_HOME
    return Paths(Path(chosen).expanduser().resolve())


def database_url(home: str | os.PathLike[str] | None = None) -> str:
    """``CLOUDWASTE_DATABASE_URL`` (PostgreSQL in production) or the embedded SQLite file."""
    url = os.environ.get("CLOUDWASTE_DATABASE_URL")
    if url:
        return url
    return f"sqlite:///{paths(home).warehouse_db}"


def now() -> datetime:
    """The pipeline's clock; ``CLOUDWASTE_NOW`` (ISO date or datetime, UTC) pins it (the demo).

    A pinned clock keeps the demo's results the same from one day to the next; production leaves
    it unset and gets the wall clock.
    """
    pinned = os.environ.get("CLOUDWASTE_NOW")
    if not pinned:
        return datetime.now(UTC)
    try:
        parsed = datetime.fromisoformat(pinned)
    except ValueError as exc:
        raise ValueError(f"CLOUDWASTE_NOW={pinned!r} is not an ISO date or datetime") from exc
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def today() -> date:
    return now().date()


def ml_retention_years() -> int:
    """How long anonymized ML rows are kept (``CLOUDWASTE_ML_RETENTION_YEARS``)."""
    return int(os.environ.get("CLOUDWASTE_ML_RETENTION_YEARS", DEFAULT_ML_RETENTION_YEARS))


def run_retention_days() -> int:
    """Days Dagster keeps finished runs and their event logs (``CLOUDWASTE_RUN_RETENTION_DAYS``):
    the event log grows with every run, and Dagster OSS has no run retention of its own."""
    return int(os.environ.get("CLOUDWASTE_RUN_RETENTION_DAYS", DEFAULT_RUN_RETENTION_DAYS))


def raw_retention_days() -> int:
    """How long raw scans (raw ids) are kept; past it a day can no longer be re-derived."""
    return int(os.environ.get("CLOUDWASTE_RAW_RETENTION_DAYS", DEFAULT_RAW_RETENTION_DAYS))
