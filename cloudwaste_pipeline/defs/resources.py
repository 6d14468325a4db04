"""Resources: the warehouse, the anonymization key, the clouds, where files come from and go.

Clients are built lazily inside resource methods, never at import, so definitions load (and the UI
shows the graph) on a machine that has none of the credentials yet.
"""

import time
from pathlib import Path
from typing import Any

import dagster as dg
from pydantic import Field
from sqlalchemy.engine import Engine

from cloudwaste_pipeline import settings
from cloudwaste_pipeline.account_sources import AccountList, load_account_list
from cloudwaste_pipeline.accounts import Account
from cloudwaste_pipeline.exports import Destination, LocalDestination, S3Destination
from cloudwaste_pipeline.inbox import as_folder, parse_s3_uri
from cloudwaste_pipeline.privacy import keyring
from cloudwaste_pipeline.privacy.anonymize import KEY_ENV_VAR
from cloudwaste_pipeline.privacy.keyring import PREVIOUS_KEYS_ENV_VAR
from cloudwaste_pipeline.scanning.model import RawScan
from cloudwaste_pipeline.warehouse.engine import make_engine, upgrade

_migrated: set[str] = set()

REMOTE_ACCOUNTS_TTL_S = 300.0
"""How long one process reuses what the accounts query and AWS Organizations returned: the four
steps of a shard run (in one process) and a sensor ticking every few minutes then read them
once, not once per step and tick (Organizations costs a call per account for its tags)."""
_remote_accounts: dict[tuple[str, ...], tuple[float, AccountList]] = {}
REMOTE_SOURCE_SETTINGS = (
    "CLOUDWASTE_ACCOUNTS_DATABASE_URL",
    "CLOUDWASTE_ACCOUNTS_QUERY",
    "CLOUDWASTE_ACCOUNTS_AWS_ORG_PARENTS",
    "CLOUDWASTE_ACCOUNTS_AWS_ORG_ROLE_NAME",
    "CLOUDWASTE_ACCOUNTS_AWS_ORG_OWNER_USER_ID",
    "CLOUDWASTE_ACCOUNTS_AWS_ORG_REGIONS",
    "CLOUDWASTE_ACCOUNTS_AWS_ORG_REAL_COSTS",
)


class WarehouseResource(dg.ConfigurableResource):
    """The warehouse: PostgreSQL when ``CLOUDWASTE_DATABASE_URL`` is set, else embedded SQLite."""

    database_url: str | None = None
    home: str | None = None

    def url(self) -> str:
        return self.database_url or settings.database_url(self.home)

    def engine(self) -> Engine:
        """The shared engine, migrated to the latest schema once per process; every setting is
        checked first, so a run with a bad one stops before it touches data."""
        settings.validate_all()
        url = self.url()
        engine = make_engine(url)
        if url not in _migrated:
            upgrade(engine)
            _migrated.add(url)
        return engine


class AnonymizerResource(dg.ConfigurableResource):
    """The HMAC key chain, from ``CLOUDWASTE_ANONYMIZATION_KEY`` (and the keys it was rotated
    from, ``CLOUDWASTE_ANONYMIZATION_PREVIOUS_KEYS``) unless given; never generated here.

    Read when a run needs it (not through ``EnvVar`` at launch), so a missing key fails the run
    with a message that says how to create one, while the UI still loads every definition.
    """

    key: str | None = None
    previous_keys: str | None = None  # comma-separated, oldest first; only with ``key``

    def key_bytes(self, warehouse: WarehouseResource) -> bytes:
        """The key chain, checked against ``warehouse``'s key history: a run with a key the
        warehouse was not written with stops here (``KeyMismatchError``), before it writes."""
        env = None
        if self.key:
            env = {KEY_ENV_VAR: self.key, PREVIOUS_KEYS_ENV_VAR: self.previous_keys or ""}
        return keyring.checked_key(warehouse.engine(), env)


class CloudResource(dg.ConfigurableResource):
    """The accounts to scan (the accounts file, the app's accounts query, AWS Organizations:
    ``account_sources``) and the scanners behind them."""

    accounts_file: str | None = None
    # Cost Explorer's resource-level costs: only for organizations that opted in (it is billed
    # per request and needs the hourly resource-level data enabled). The default for accounts
    # whose entry in the accounts file does not say ``real_costs: true|false`` itself.
    real_costs: bool = False

    def accounts_path(self) -> Path:
        return Path(self.accounts_file) if self.accounts_file else settings.paths().accounts_file

    def configured(self) -> bool:
        """Whether any account source is set up: the file exists, or a query or Organizations
        parents are configured."""
        return self.accounts_path().exists() or any(
            settings.get(name)
            for name in ("CLOUDWASTE_ACCOUNTS_DATABASE_URL", "CLOUDWASTE_ACCOUNTS_AWS_ORG_PARENTS")
        )

    def account_list(self) -> AccountList:
        """Every configured source read once: the accounts, and the entries refused with why.

        With only the file configured it is read every time (cheap, and an edit shows at
        once); with a remote source the result is reused for ``REMOTE_ACCOUNTS_TTL_S``.
        """
        path = self.accounts_path()
        remote = tuple((name, repr(settings.get(name))) for name in REMOTE_SOURCE_SETTINGS)
        if not any(settings.get(name) for name in REMOTE_SOURCE_SETTINGS):
            return load_account_list(path)
        try:
            stat = path.stat()
            stamp = f"{stat.st_mtime_ns}:{stat.st_size}"
        except OSError:
            stamp = "absent"
        key = (str(path), stamp, *remote)
        cached = _remote_accounts.get(key)
        if cached and time.monotonic() - cached[0] < REMOTE_ACCOUNTS_TTL_S:
            return cached[1]
        found = load_account_list(path)
        _remote_accounts.clear()  # one entry: a changed setting makes the old one useless
        _remote_accounts[key] = (time.monotonic(), found)
        return found

    def accounts(self) -> list[Account]:
        """The accounts to scan; refused entries are logged (by position and alias, no ids)."""
        found = self.account_list()
        if found.rejected:
            dg.get_dagster_logger().warning(found.rejections_summary())
        return found.accounts

    def account(self, alias: str) -> Account:
        """The account ``alias``; a rejected alias fails with its reason."""
        return self.account_list().find(alias)

    def scan(self, account: Account) -> RawScan:
        """Scan one account now (the pipeline's clock); one failing region gives a partial scan."""
        if account.provider == "aws":
            from cloudwaste_pipeline.scanning.aws import run_scan

            real_costs = self.real_costs if account.real_costs is None else account.real_costs
            return run_scan(account, settings.now(), real_costs=real_costs)
        if account.provider == "azure":
            from cloudwaste_pipeline.scanning import azure

            return azure.run_scan(account, settings.now())
        raise NotImplementedError(
            f"account {account.name!r}: the {account.provider} scanner is not available yet"
        )


class S3Configuration(dg.ConfigurableResource):
    """The S3 client's settings: the fields of dagster-aws' ``ResourceWithS3Configuration``
    (``S3Resource``'s), same names and defaults, so the same run config sets them.

    Declared here, not inherited: importing dagster-aws pulls boto3, botocore and a share of
    Dagster's test tooling, about a second of CPU that every run and step process would pay
    when loading the code location, S3 or not. The client is built only in ``s3_client``.
    """

    use_unsigned_session: bool = Field(default=False, description="An unsigned S3 session.")
    region_name: str | None = Field(default=None, description="The S3 session's region.")
    endpoint_url: str | None = Field(default=None, description="A custom S3 endpoint.")
    max_attempts: int = Field(
        default=5, description="boto3's retry handler's maximum attempts, the first included."
    )
    profile_name: str | None = Field(default=None, description="The AWS profile to use.")
    use_ssl: bool = Field(default=True, description="Whether to use SSL.")
    verify: bool | None = Field(
        default=None, description="Whether to verify SSL certificates (by default, yes)."
    )
    aws_access_key_id: str | None = Field(default=None, description="AWS access key ID.")
    aws_secret_access_key: str | None = Field(default=None, description="AWS secret access key.")
    aws_session_token: str | None = Field(default=None, description="AWS session token.")


class FilesResource(S3Configuration):
    """Where exports and models go: local folders under ``CLOUDWASTE_HOME`` unless set, and
    optionally an S3 prefix for the dataset exports.

    ``exports_uri`` (``s3://bucket/prefix/``) defaults to ``CLOUDWASTE_EXPORTS_S3_URI``, read when
    a run exports (unset is valid: local files, and no AWS client is ever built). The S3 fields
    are ``S3Resource``'s, as for ``ActionsInboxResource`` and for the same reason: a plain
    ``S3Resource`` would build its client for every run that uses this resource, S3 or not.
    """

    exports_dir: str | None = None
    models_dir: str | None = None
    exports_uri: str | None = None

    def exports(self) -> Path:
        return Path(self.exports_dir) if self.exports_dir else settings.paths().exports

    def models(self) -> Path:
        return Path(self.models_dir) if self.models_dir else settings.paths().models

    def exports_s3_location(self) -> tuple[str, str] | None:
        """(bucket, prefix) of the S3 export destination, or None for local files."""
        uri = self.exports_uri or settings.get("CLOUDWASTE_EXPORTS_S3_URI")
        if not uri:
            return None
        try:
            return parse_s3_uri(uri)
        except ValueError:
            raise ValueError(
                f"exports destination {uri!r} is not an s3://bucket/prefix/ URI"
            ) from None

    def export_destination(self, subfolder: str) -> Destination:
        """``weekly/<monday>`` or ``adhoc/<start>_<end>`` under the S3 prefix or the folder."""
        location = self.exports_s3_location()
        if location is None:
            return LocalDestination(self.exports() / subfolder)
        bucket, prefix = location
        return S3Destination(s3_client(self), bucket, as_folder(prefix + subfolder))


class ActionsInboxResource(S3Configuration):
    """The S3 prefix apps drop JSON-lines user actions under, besides the local drop folder.

    ``s3_uri`` (``s3://bucket/prefix/``) defaults to ``CLOUDWASTE_ACTIONS_S3_URI``, read when
    the sensor ticks rather than through ``EnvVar`` at load, because unset is a valid setting:
    no S3 inbox, and no AWS client at all. The other fields are ``S3Resource``'s (region,
    endpoint, profile, keys...), all optional: by default boto3 finds credentials and endpoint
    itself (role, profile, ``AWS_ENDPOINT_URL_S3`` / ``AWS_ENDPOINT_URL``).

    Not a separate ``S3Resource`` handed to the sensor: Dagster builds that one's client
    whenever the sensor's resources are set up, i.e. on every tick, S3 inbox or not, so a
    broken AWS profile would fail ticks that never touch S3. Nor a nested one: a nested resource
    makes the sensor's resources need a ``with build_sensor_context(...)`` block.
    """

    s3_uri: str | None = None

    def s3_location(self) -> tuple[str, str] | None:
        """(bucket, prefix), or None when no S3 inbox is configured; a malformed URI raises."""
        uri = self.s3_uri or settings.get("CLOUDWASTE_ACTIONS_S3_URI")
        return parse_s3_uri(uri) if uri else None

    def s3_client(self) -> Any:
        return s3_client(self)


def s3_client(config: S3Configuration) -> Any:
    """A boto3 S3 client, built exactly as ``S3Resource.get_client`` builds it."""
    from dagster_aws.s3.utils import construct_s3_client

    return construct_s3_client(
        max_attempts=config.max_attempts,
        region_name=config.region_name,
        endpoint_url=config.endpoint_url,
        use_unsigned_session=config.use_unsigned_session,
        profile_name=config.profile_name,
        use_ssl=config.use_ssl,
        verify=config.verify,
        aws_access_key_id=config.aws_access_key_id,
        aws_secret_access_key=config.aws_secret_access_key,
        aws_session_token=config.aws_session_token,
    )


def build_resources() -> dict[str, dg.ConfigurableResource]:
    """Production wiring: everything from the environment, read when a run starts."""
    return {
        "warehouse": WarehouseResource(),
        "anonymizer": AnonymizerResource(),
        "cloud": CloudResource(),
        "files": FilesResource(),
        "actions_inbox": ActionsInboxResource(),
    }
