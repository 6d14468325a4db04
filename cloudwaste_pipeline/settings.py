"""Every ``CLOUDWASTE_*`` setting in one registry, parsed and checked when read (never at import).

A setting is read through ``get(name)``: the value is parsed and checked against what the
registry allows, and a bad one raises ``SettingError`` naming the variable, the value (unless it
is a secret) and what is allowed. A bad value is a stopped run with a sentence, never a silently
different behaviour: ``CLOUDWASTE_RAW_RETENTION_DAYS=-1`` once deleted the whole raw store.
``validate_all`` checks every setting at once; the warehouse resource and ``api.engine`` call it,
so a run that uses the warehouse stops before it touches data, whichever setting is wrong and
whether or not that run reads it (a typo is found on the first run, not by the monthly cleanup).

Everything local sits under ``CLOUDWASTE_HOME`` (default ``./.cloudwaste``) in named subfolders,
so one ``rm -rf`` resets a demo and nothing is scattered over the machine.

``python -m cloudwaste_pipeline.settings`` prints the README's configuration table.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

from cloudwaste_pipeline.errors import CloudWasteError
from cloudwaste_pipeline.setting_parsers import (
    AwsRegions,
    DatabaseUrl,
    Flag,
    Integer,
    Key,
    Keys,
    Moment,
    Names,
    OrgParents,
    Parser,
    PathText,
    RoleName,
    SqlQuery,
    Text,
    Url,
)

DEFAULT_HOME = ".cloudwaste"
DEFAULT_RUN_RETENTION_DAYS = 90
DEFAULT_RAW_RETENTION_DAYS = 30
DEFAULT_ML_RETENTION_YEARS = 3
MIN_RAW_RETENTION_DAYS = 3
"""A raw day must survive long enough to re-derive it after a failed run over a weekend."""
MIN_ML_RETENTION_YEARS = 1
DEFAULT_ACCOUNTS_AT_ONCE = 8
SHOWN_CHARS = 40
"""How much of a bad value an error message repeats: enough to recognise it."""


class SettingError(CloudWasteError):
    """A setting (environment variable or run config field) whose value is not allowed."""


# --- the registry -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Setting:
    name: str
    parser: Parser
    default: Any
    """The value when unset (or empty, where ``empty_is_unset``); None: not set."""
    shown_default: str
    description: str
    secret: bool = False
    """Never repeated in an error message: a key, or a URL holding a password or a token."""
    empty_is_unset: bool = True
    """False for numbers: ``CLOUDWASTE_RAW_RETENTION_DAYS=`` is a mistake, not a default."""
    requires: tuple[str, ...] = ()
    """Settings that must be set too when this one is: a query without its database is a
    half-configured source, refused rather than silently skipped."""

    def error(self, shown_as: str, text: Any, reason: str) -> SettingError:
        value = " (value not shown: it is a secret)" if self.secret else f"={_shown(text)}"
        where = "" if shown_as == self.name else f", as for {self.name}"
        return SettingError(
            f"{shown_as}{value} is not allowed ({reason}): expected {self.parser.allowed}{where}"
        )


def _shown(text: Any) -> str:
    """``repr`` (control characters escaped: one line), cut to a recognisable length."""
    shown = repr(text)
    return shown if len(shown) <= SHOWN_CHARS else shown[: SHOWN_CHARS - 3] + "..."


WINDOW = Moment(datetime(2000, 1, 1, tzinfo=UTC), datetime(2100, 1, 1, tzinfo=UTC))
S3 = Url(("s3",), "s3://bucket/prefix/", query=False)
HTTP = Url(("https", "http"), "https://hooks.slack.com/services/...")
AZURE = Url(("https", "http"), "https://management.usgovcloudapi.net")

REGISTRY: dict[str, Setting] = {
    s.name: s
    for s in (
        Setting(
            "CLOUDWASTE_HOME",
            PathText(),
            DEFAULT_HOME,
            f"`./{DEFAULT_HOME}`",
            "everything local: `warehouse/`, `ml_datasets/`, `models/`, `dagster/`, "
            "`accounts.yaml`, the demo key",
        ),
        Setting(
            "CLOUDWASTE_DATABASE_URL",
            DatabaseUrl(),
            None,
            "SQLite under `$CLOUDWASTE_HOME/warehouse`",
            "the warehouse, e.g. `postgresql+psycopg2://user:pw@host:5432/cloudwaste`",
            secret=True,
        ),
        Setting(
            "CLOUDWASTE_ANONYMIZATION_KEY",
            Key(),
            None,
            "none (required)",
            "HMAC key of every hashed id; only the demo and the tests generate one",
            secret=True,
        ),
        Setting(
            "CLOUDWASTE_ANONYMIZATION_PREVIOUS_KEYS",
            Keys(),
            None,
            "none",
            "after `cloudwaste rotate-key`: the earlier keys, oldest first (see Reliability)",
            secret=True,
        ),
        Setting(
            "CLOUDWASTE_ACCOUNTS_FILE",
            PathText(),
            None,
            "`$CLOUDWASTE_HOME/accounts.yaml`",
            "the accounts to scan (hand-written; with another source below, read when it exists)",
        ),
        Setting(
            "CLOUDWASTE_ACCOUNTS_DATABASE_URL",
            DatabaseUrl(
                "the app database's SQLAlchemy URL, `postgresql+psycopg2://...` or `sqlite:///...`"
            ),
            None,
            "none (no accounts query)",
            "the app's database, read by `CLOUDWASTE_ACCOUNTS_QUERY` in a read-only transaction "
            "(give it a read-only user too)",
            secret=True,
            requires=("CLOUDWASTE_ACCOUNTS_QUERY",),
        ),
        Setting(
            "CLOUDWASTE_ACCOUNTS_QUERY",
            SqlQuery(),
            None,
            "none",
            "the accounts to scan, one row each, columns named as the accounts file's fields "
            "(see The account sources); not repeated in errors, it may hold ids",
            secret=True,
            requires=("CLOUDWASTE_ACCOUNTS_DATABASE_URL",),
        ),
        Setting(
            "CLOUDWASTE_ACCOUNTS_AWS_ORG_PARENTS",
            OrgParents(),
            (),
            "none (no discovery)",
            "scan every ACTIVE AWS account under these OUs (child OUs included), discovered "
            "through AWS Organizations",
            requires=(
                "CLOUDWASTE_ACCOUNTS_AWS_ORG_ROLE_NAME",
                "CLOUDWASTE_ACCOUNTS_AWS_ORG_OWNER_USER_ID",
            ),
        ),
        Setting(
            "CLOUDWASTE_ACCOUNTS_AWS_ORG_ROLE_NAME",
            RoleName(),
            None,
            "none (required with the parents)",
            "the read-only role assumed in each discovered account, "
            "`arn:<partition>:iam::<account>:role/<name>`",
        ),
        Setting(
            "CLOUDWASTE_ACCOUNTS_AWS_ORG_OWNER_USER_ID",
            Text(),
            None,
            "none (required with the parents)",
            "the app user who owns the discovered accounts (a user id: never repeated in errors)",
            secret=True,
        ),
        Setting(
            "CLOUDWASTE_ACCOUNTS_AWS_ORG_REGIONS",
            AwsRegions(),
            (),
            "every enabled region",
            "the regions scanned in each discovered account",
        ),
        Setting(
            "CLOUDWASTE_ACCOUNTS_AWS_ORG_REAL_COSTS",
            Flag(),
            None,
            "the deployment's default",
            "`real_costs` of each discovered account",
        ),
        Setting(
            "CLOUDWASTE_AWS_ACCOUNTS_AT_ONCE",
            Integer(1, 256, "accounts"),
            DEFAULT_ACCOUNTS_AT_ONCE,
            str(DEFAULT_ACCOUNTS_AT_ONCE),
            "AWS accounts one shard run scans at once (each reads up to 8 regions at once): "
            "bounds the run's API calls in flight",
            empty_is_unset=False,
        ),
        Setting(
            "CLOUDWASTE_AZURE_ACCOUNTS_AT_ONCE",
            Integer(1, 256, "subscriptions"),
            DEFAULT_ACCOUNTS_AT_ONCE,
            str(DEFAULT_ACCOUNTS_AT_ONCE),
            "Azure subscriptions one shard run scans at once (each with up to 8 calls in flight)",
            empty_is_unset=False,
        ),
        Setting(
            "CLOUDWASTE_RAW_RETENTION_DAYS",
            Integer(MIN_RAW_RETENTION_DAYS, 3650, "days"),
            DEFAULT_RAW_RETENTION_DAYS,
            str(DEFAULT_RAW_RETENTION_DAYS),
            "how long the raw store (raw scans, scan errors, processed outbox events, "
            "quarantine) is kept; past it a day can no longer be re-derived",
            empty_is_unset=False,
        ),
        Setting(
            "CLOUDWASTE_ML_RETENTION_YEARS",
            Integer(MIN_ML_RETENTION_YEARS, 50, "years"),
            DEFAULT_ML_RETENTION_YEARS,
            str(DEFAULT_ML_RETENTION_YEARS),
            "how long anonymized ML rows and labels are kept (a user may choose less)",
            empty_is_unset=False,
        ),
        Setting(
            "CLOUDWASTE_RUN_RETENTION_DAYS",
            Integer(1, 3650, "days"),
            DEFAULT_RUN_RETENTION_DAYS,
            str(DEFAULT_RUN_RETENTION_DAYS),
            "how long Dagster keeps finished runs and their event logs (`ml_cleanup_job` "
            "deletes older ones)",
            empty_is_unset=False,
        ),
        Setting(
            "CLOUDWASTE_NOW",
            WINDOW,
            None,
            "wall clock",
            "pins the pipeline's clock (the demo uses it); UTC unless it has an offset",
        ),
        Setting(
            "CLOUDWASTE_FAULT_CRASH_AT",
            Names(),
            (),
            "unset",
            "tests only: kill the process at the named crash points (`faults.py`)",
        ),
        Setting(
            "CLOUDWASTE_ACTIONS_INBOX",
            PathText(),
            None,
            "`$CLOUDWASTE_HOME/inbox/actions`",
            "JSON-lines drop folder for user actions",
        ),
        Setting(
            "CLOUDWASTE_ACTIONS_S3_URI",
            S3,
            None,
            "none (no S3 inbox)",
            "S3 prefix for the same files",
        ),
        Setting(
            "CLOUDWASTE_EXPORTS_S3_URI",
            S3,
            None,
            "none (local files)",
            "S3 prefix for the dataset exports",
        ),
        Setting(
            "CLOUDWASTE_ALERT_WEBHOOK_URL",
            HTTP,
            None,
            "none (log only)",
            '`run_failure_alert_sensor` also POSTs `{"text": ...}` here (Slack / Teams '
            "incoming webhook; a secret)",
            secret=True,
        ),
        Setting(
            "CLOUDWASTE_AZURE_ARM_ENDPOINT",
            AZURE,
            None,
            "`https://management.azure.com`",
            "Resource Graph and ARM (instance view) of a sovereign cloud",
        ),
        Setting(
            "CLOUDWASTE_AZURE_METRICS_ENDPOINT",
            Url(("https", "http"), "https://{region}.metrics.monitor.azure.us"),
            None,
            "`https://{region}.metrics.monitor.azure.com`",
            "Monitor metrics batch API (`{region}` is filled per region)",
        ),
        Setting(
            "CLOUDWASTE_AZURE_LOGS_ENDPOINT",
            Url(("https", "http"), "https://api.loganalytics.us"),
            None,
            "`https://api.loganalytics.io`",
            "Log Analytics (Activity Log)",
        ),
    )
}


def get(name: str, env: Mapping[str, str] | None = None) -> Any:
    """The checked value of setting ``name`` from ``env`` (default ``os.environ``), read now."""
    setting = REGISTRY[name]
    text = (os.environ if env is None else env).get(name)
    if text is None or (text == "" and setting.empty_is_unset):
        return setting.default
    try:
        return setting.parser.parse(text)
    except ValueError as exc:
        raise setting.error(name, text, str(exc)) from None


def check(name: str, value: int, field: str) -> int:
    """``value`` (a run config field or an argument called ``field``) checked against the range
    of the integer setting ``name``: retention from run config obeys the same minimum."""
    setting = REGISTRY[name]
    if not isinstance(setting.parser, Integer):
        raise TypeError(f"{name} is not an integer setting")
    try:
        return setting.parser.check(value)
    except ValueError as exc:
        raise setting.error(field, value, str(exc)) from None


def given_or_setting(name: str, value: int | None, field: str) -> int:
    """A run config override (None: not given, use the setting), checked either way."""
    return get(name) if value is None else check(name, value, field)


def validate_all(env: Mapping[str, str] | None = None) -> None:
    """Check every registered setting; one ``SettingError`` lists every bad one."""
    validate(REGISTRY, env)


def validate(names: Iterable[str], env: Mapping[str, str] | None = None) -> None:
    """Check the settings ``names``, and that the ones they require are set with them."""
    source = os.environ if env is None else env
    problems = []
    for name in names:
        try:
            get(name, env)
        except SettingError as exc:
            problems.append(str(exc))
        if source.get(name, "").strip():
            missing = [r for r in REGISTRY[name].requires if not source.get(r, "").strip()]
            if missing:
                problems.append(f"{name} is set but {' and '.join(missing)} is not")
    if problems:
        raise SettingError("; ".join(problems))


# --- typed getters ------------------------------------------------------------------------------


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
        return Path(get("CLOUDWASTE_ACTIONS_INBOX") or self.home / "inbox" / "actions")

    @property
    def accounts_file(self) -> Path:
        return Path(get("CLOUDWASTE_ACCOUNTS_FILE") or self.home / "accounts.yaml")


def paths(home: str | os.PathLike[str] | None = None) -> Paths:
    """Paths under ``home``, else ``$CLOUDWASTE_HOME``, else ``./.cloudwaste`` (made absolute)."""
    return Paths(Path(home or get("CLOUDWASTE_HOME")).expanduser().resolve())


def database_url(home: str | os.PathLike[str] | None = None) -> str:
    """``CLOUDWASTE_DATABASE_URL`` (PostgreSQL in production) or the embedded SQLite file."""
    return get("CLOUDWASTE_DATABASE_URL") or f"sqlite:///{paths(home).warehouse_db}"


def now() -> datetime:
    """The pipeline's clock; ``CLOUDWASTE_NOW`` pins it (the demo).

    A pinned clock keeps the demo's results the same from one day to the next; production leaves
    it unset and gets the wall clock.
    """
    return get("CLOUDWASTE_NOW") or datetime.now(UTC)


def today() -> date:
    return now().date()


def ml_retention_years() -> int:
    """How long anonymized ML rows are kept (``CLOUDWASTE_ML_RETENTION_YEARS``)."""
    return get("CLOUDWASTE_ML_RETENTION_YEARS")


def run_retention_days() -> int:
    """Days Dagster keeps finished runs and their event logs (``CLOUDWASTE_RUN_RETENTION_DAYS``):
    the event log grows with every run, and Dagster OSS has no run retention of its own."""
    return get("CLOUDWASTE_RUN_RETENTION_DAYS")


def accounts_at_once(provider: str) -> int:
    """How many accounts of ``provider`` one shard run scans concurrently."""
    return get(f"CLOUDWASTE_{provider.upper()}_ACCOUNTS_AT_ONCE")


def raw_retention_days() -> int:
    """How long raw scans (raw ids) are kept; past it a day can no longer be re-derived."""
    return get("CLOUDWASTE_RAW_RETENTION_DAYS")


# --- the README's table -------------------------------------------------------------------------


def markdown_table() -> str:
    """The README's table of settings, one row per registered setting, in registry order."""
    rows = ["| variable | default | allowed | meaning |", "| --- | --- | --- | --- |"]
    rows += [
        f"| `{s.name}` | {s.shown_default} | {s.parser.allowed} | {s.description} |"
        for s in REGISTRY.values()
    ]
    return "\n".join(rows)


if __name__ == "__main__":
    print(markdown_table())
