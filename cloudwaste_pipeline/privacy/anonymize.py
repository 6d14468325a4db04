"""Anonymization primitives: keyed hashing, generalization, aggregation and scrubbing.

Everything that leaves the privacy boundary goes through one of these functions, so they are pure
(no I/O except ``load_key`` reading the environment, no clock, no logging) and deterministic: a
re-run of a partition, a user action and a GDPR erasure request all derive the same hash for the
same cloud object.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import math
import os
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

# --------------------------------------------------------------------------------------------
# Key
# --------------------------------------------------------------------------------------------

KEY_ENV_VAR = "CLOUDWASTE_ANONYMIZATION_KEY"
MIN_KEY_BYTES = 16
_KEY_HINT = (
    f"Set {KEY_ENV_VAR} to a long random secret, e.g. the output of "
    '`python -c "import secrets; print(secrets.token_hex(32))"`, and keep it stable: '
    "changing it changes every stored hash."
)


class MissingKeyError(RuntimeError):
    """The anonymization key is absent or too weak; nothing may be hashed without it."""


def load_key(env: Mapping[str, str] | None = None) -> bytes:
    """The HMAC key, from ``env`` (default ``os.environ``).

    Surrounding whitespace is stripped so a trailing newline from a secrets file does not silently
    change every hash. The key itself never appears in an error message.
    """
    source = os.environ if env is None else env
    value = (source.get(KEY_ENV_VAR) or "").strip()
    if not value:
        raise MissingKeyError(f"{KEY_ENV_VAR} is not set or empty. {_KEY_HINT}")
    key = value.encode("utf-8")
    if len(key) < MIN_KEY_BYTES:
        raise MissingKeyError(
            f"{KEY_ENV_VAR} is too short ({len(key)} bytes; at least {MIN_KEY_BYTES} are needed): "
            "a short key lets anyone who knows an account id brute-force it and re-identify every "
            f"hash. {_KEY_HINT}"
        )
    return key


# --------------------------------------------------------------------------------------------
# Keyed hashing
# --------------------------------------------------------------------------------------------

KINDS = ("user", "account", "resource", "event")
PROVIDERS = ("aws", "azure")
# Users and user-action events are CloudWaste's own ids, not a cloud's: their "provider" is
# CloudWaste itself, so one user has one hash whichever clouds their accounts are on (one
# user_preferences row, one erasure).
OWN_PROVIDER = "cloudwaste"
# Kinds whose ids the cloud provider defines; Azure treats these case-insensitively. User and
# event ids are ours, so they are only stripped.
_PROVIDER_DEFINED_KINDS = ("account", "resource")


def _check_kind_provider(kind: str, provider: str) -> None:
    if kind not in KINDS:
        raise ValueError(f"unknown id kind {kind!r} (expected one of {', '.join(KINDS)})")
    allowed = PROVIDERS if kind in _PROVIDER_DEFINED_KINDS else (OWN_PROVIDER,)
    if provider not in allowed:
        raise ValueError(
            f"unknown provider {provider!r} for {kind} ids (expected one of {', '.join(allowed)})"
        )


def hash_user(user_id: str, key: bytes) -> str:
    """A CloudWaste user's hash: ``HMAC(key, "user|cloudwaste|<user id>")``."""
    return hash_id("user", OWN_PROVIDER, user_id, key)


def hash_event(event_id: str, key: bytes) -> str:
    """A user-action event's hash (the append-only key of ``user_action_patterns``)."""
    return hash_id("event", OWN_PROVIDER, event_id, key)


def normalize_identifier(kind: str, provider: str, identifier: str) -> str:
    """The canonical form of an id, so scans, user actions and erasure hash the same string.

    Azure subscription and resource ids are case-insensitive (the portal, the SDK and ARM return
    different casings of one id), so they are lower-cased; AWS ARNs are case-sensitive and kept as
    given. Every id is stripped of surrounding whitespace.
    """
    _check_kind_provider(kind, provider)
    if not isinstance(identifier, str):
        raise TypeError(f"{kind} id must be a str, got {type(identifier).__name__}")
    value = identifier.strip()
    if not value:
        raise ValueError(f"empty {kind} id")
    if provider == "azure" and kind in _PROVIDER_DEFINED_KINDS:
        value = value.lower()
    return value


def _prefix(kind: str, provider: str) -> bytes:
    return f"{kind}|{provider}|".encode()


class KeyChain(bytes):
    """The current key's bytes, carrying the keys the warehouse was re-keyed from.

    A rotation re-keys every stored hash as ``HMAC(new key, old hash)`` (hashes are one-way and
    raw ids are gone after 30 days, so nothing can be re-hashed from the id). New hashes must land
    in the same space, so an id's hash under the chain ``k1 -> k2`` is
    ``HMAC(k2, HMAC(k1, message).hex)``: see ``digest``. A ``bytes`` subclass so every function
    taking ``key: bytes`` takes a chain unchanged; plain ``bytes`` is a chain of one key.
    """

    previous: tuple[bytes, ...]

    def __new__(cls, current: bytes, previous: Sequence[bytes] = ()) -> KeyChain:
        chain = super().__new__(cls, current)
        chain.previous = tuple(bytes(k) for k in previous)
        return chain

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, bytes):
            return NotImplemented
        return key_sequence(self) == key_sequence(other)

    def __ne__(self, other: object) -> bool:
        equal = self.__eq__(other)
        return equal if equal is NotImplemented else not equal

    def __hash__(self) -> int:
        return hash((bytes(self), self.previous))

    def __repr__(self) -> str:  # bytes' repr would print the key
        return f"KeyChain(<{len(self.previous) + 1} keys>)"

    def __reduce__(self) -> tuple[Any, ...]:
        return (KeyChain, (bytes(self), self.previous))


def key_sequence(key: bytes) -> tuple[bytes, ...]:
    """Every key of ``key``'s chain, oldest first, the current one last."""
    return (*getattr(key, "previous", ()), bytes(key))


def digest(message: bytes, key: bytes) -> str:
    """The one keyed digest of the package: HMAC-SHA256 hex, through the whole key chain."""
    first, *rest = key_sequence(key)
    value = hmac.new(first, message, hashlib.sha256).hexdigest()
    for later in rest:
        value = hmac.new(later, value.encode("ascii"), hashlib.sha256).hexdigest()
    return value


def hash_id(kind: str, provider: str, identifier: str, key: bytes) -> str:
    """HMAC-SHA256 of ``"{kind}|{provider}|{identifier}"``, lower-case hex (through the key
    chain after a rotation, see ``KeyChain``).

    Keyed, so a hash cannot be reversed by hashing every known account id; the kind and provider
    are in the message, so a user id and an account id with the same text never collide.
    """
    message = _prefix(kind, provider) + normalize_identifier(kind, provider, identifier).encode()
    return digest(message, key)


def _is_missing(value: Any) -> bool:
    return value is None or (pd.api.types.is_scalar(value) and bool(pd.isna(value)))


def hash_values(kind: str, provider: str, values: Iterable[Any], key: bytes) -> list[str | None]:
    """``hash_id`` over many values; missing ones (None/NaN/NA) stay None.

    The HMAC state after the ``kind|provider|`` prefix is computed once and copied per value,
    and a value seen before in the batch (the account of every row of a scan) is hashed once:
    the same digests as ``hash_id`` at a fraction of the cost.
    """
    _check_kind_provider(kind, provider)
    first, *rest = key_sequence(key)
    base = hmac.new(first, _prefix(kind, provider), hashlib.sha256)
    later = [hmac.new(k, digestmod=hashlib.sha256) for k in rest]  # empty unless rotated
    known: dict[str, str] = {}

    def hashed(value: Any) -> str:
        mac = base.copy()
        mac.update(normalize_identifier(kind, provider, value).encode("utf-8"))
        hexdigest = mac.hexdigest()
        for chained in later:
            mac = chained.copy()
            mac.update(hexdigest.encode("ascii"))
            hexdigest = mac.hexdigest()
        return hexdigest

    hashes = []
    for value in values:
        if isinstance(value, str):
            if value not in known:
                known[value] = hashed(value)
            hashes.append(known[value])
        else:  # missing (None/NaN/NA), or refused by normalize_identifier
            hashes.append(None if _is_missing(value) else hashed(value))
    return hashes


def hash_series(kind: str, provider: str, values: pd.Series, key: bytes) -> pd.Series:
    """``hash_values`` over a column, the index kept."""
    hashes = hash_values(kind, provider, values, key)
    return pd.Series(hashes, index=values.index, name=values.name, dtype=object)


# Published test vectors: any other implementation (the web app, an erasure script) must reproduce
# these exactly. Computed once with ``hash_id``; the tests recompute one of them with hmac inline.
# ``previous_keys`` (oldest first) is the chain of a re-keyed warehouse (``KeyChain``).
TEST_VECTOR_KEY = b"cloudwaste-test-vector-key-0001"
TEST_VECTORS: list[dict[str, Any]] = [
    {
        "key": TEST_VECTOR_KEY,
        "kind": "account",
        "provider": "aws",
        "identifier": "123456789012",
        "expected": "bb38c4b09537ebe17342360b4acc5827f9d9cd37096b7cd98e202baab74edf38",
    },
    {
        "key": TEST_VECTOR_KEY,
        "kind": "resource",
        "provider": "aws",
        "identifier": "arn:aws:ec2:us-east-1:123456789012:volume/vol-0abc1234def567890",
        "expected": "83b1a879598d549de8312404b19e6e3a470e82ba1979999c82ae53be832c7a02",
    },
    {
        "key": TEST_VECTOR_KEY,
        "kind": "account",
        "provider": "azure",
        "identifier": "9B2A6C1E-0F3D-4A5B-8C7D-112233445566",
        "expected": "d9e2586ba4dfa678ae81941dc976f5e802b0e548e46271ec618684df3c433a14",
    },
    {
        "key": TEST_VECTOR_KEY,
        "kind": "resource",
        "provider": "azure",
        "identifier": (
            "/subscriptions/9b2a6c1e-0f3d-4a5b-8c7d-112233445566/resourceGroups/RG-Prod"
            "/providers/Microsoft.Compute/disks/data-disk-01"
        ),
        "expected": "97f74f08af403221f3cb4cb3ed85e22f5f6f9d254aeabb6caf997daa873c3496",
    },
    {
        "key": TEST_VECTOR_KEY,
        "kind": "user",
        "provider": "cloudwaste",
        "identifier": "user-42",
        "expected": "373e726452ef67b2acbcec4ba49f231994d5cb7018e6d66b7e8cd98094a0407d",
    },
    # After one rotation (epoch 2): HMAC(new key, hash of epoch 1 as lower-case hex).
    {
        "key": b"cloudwaste-test-vector-key-0002",
        "previous_keys": [TEST_VECTOR_KEY],
        "kind": "account",
        "provider": "aws",
        "identifier": "123456789012",
        "expected": "f7cc42a697e3b55b2190fc11a4b88713ddf8d92102f1e84021dd800ae300f0d7",
    },
]


# --------------------------------------------------------------------------------------------
# AWS ARNs
# --------------------------------------------------------------------------------------------

# resource type -> (service, ARN resource path template, whether the ARN carries the account id).
# EBS snapshots are the exception: AWS writes their ARN with an empty account field
# (arn:aws:ec2:<region>::snapshot/<id>), and we must hash what AWS and the web app report.
AWS_ARN_PATHS: dict[str, tuple[str, str, bool]] = {
    "ebs_volume": ("ec2", "volume/{id}", True),
    "ebs_snapshot": ("ec2", "snapshot/{id}", False),
    "elastic_ip": ("ec2", "elastic-ip/{id}", True),
    "ec2_instance": ("ec2", "instance/{id}", True),
    "nat_gateway": ("ec2", "natgateway/{id}", True),
    "vpc": ("ec2", "vpc/{id}", True),
    "rds_instance": ("rds", "db:{id}", True),
}


def _aws_partition(region: str) -> str:
    """GovCloud and China regions live in their own ARN partitions."""
    if region.startswith("us-gov-"):
        return "aws-us-gov"
    if region.startswith("cn-"):
        return "aws-cn"
    return "aws"


def aws_arn(service: str, region: str, account_id: str, resource: str) -> str:
    """``arn:<partition>:{service}:{region}:{account_id}:{resource}`` (partition from region)."""
    return f"arn:{_aws_partition(region)}:{service}:{region}:{account_id}:{resource}"


def aws_resource_arn(resource_type: str, region: str, account_id: str, resource_id: str) -> str:
    """The ARN of one of our AWS resource types: the id we hash for AWS resources.

    An id that already is an ARN is returned unchanged (load balancers are only known by ARN).
    """
    if resource_id.startswith("arn:"):
        return resource_id
    if resource_type == "load_balancer":
        raise ValueError("a load_balancer id must already be its ARN")
    try:
        service, path, has_account = AWS_ARN_PATHS[resource_type]
    except KeyError:
        raise ValueError(f"no ARN mapping for AWS resource type {resource_type!r}") from None
    return aws_arn(service, region, account_id if has_account else "", path.format(id=resource_id))


# --------------------------------------------------------------------------------------------
# Regions
# --------------------------------------------------------------------------------------------

OTHER_REGION = "other"
REGION_GROUPS = (
    "us-*",
    "ca-*",
    "mx-*",
    "sa-*",
    "eu-*",
    "me-*",
    "af-*",
    "ap-*",
    "us-gov-*",
    "cn-*",
    OTHER_REGION,
)

# The single source of truth for region generalization (AWS and Azure, as of 2026). A region not
# listed here becomes "other", which is safe but loses signal: to add one, add a line
# "<provider region name, lower-case>": "<group>" under its provider, with a group from
# REGION_GROUPS (Mexico is its own group; Israel and the Gulf are "me-*"; India and Oceania are
# "ap-*"; the UK, Switzerland and Norway are "eu-*"). The tests check every entry.
REGION_TABLE: dict[str, dict[str, str]] = {
    "aws": {
        "us-east-1": "us-*",
        "us-east-2": "us-*",
        "us-west-1": "us-*",
        "us-west-2": "us-*",
        "ca-central-1": "ca-*",
        "ca-west-1": "ca-*",
        "mx-central-1": "mx-*",
        "sa-east-1": "sa-*",
        "eu-central-1": "eu-*",
        "eu-central-2": "eu-*",
        "eu-west-1": "eu-*",
        "eu-west-2": "eu-*",
        "eu-west-3": "eu-*",
        "eu-north-1": "eu-*",
        "eu-south-1": "eu-*",
        "eu-south-2": "eu-*",
        "il-central-1": "me-*",
        "me-south-1": "me-*",
        "me-central-1": "me-*",
        "af-south-1": "af-*",
        "ap-east-1": "ap-*",
        "ap-east-2": "ap-*",
        "ap-south-1": "ap-*",
        "ap-south-2": "ap-*",
        "ap-southeast-1": "ap-*",
        "ap-southeast-2": "ap-*",
        "ap-southeast-3": "ap-*",
        "ap-southeast-4": "ap-*",
        "ap-southeast-5": "ap-*",
        "ap-southeast-6": "ap-*",
        "ap-southeast-7": "ap-*",
        "ap-northeast-1": "ap-*",
        "ap-northeast-2": "ap-*",
        "ap-northeast-3": "ap-*",
        "us-gov-east-1": "us-gov-*",
        "us-gov-west-1": "us-gov-*",
        "cn-north-1": "cn-*",
        "cn-northwest-1": "cn-*",
    },
    "azure": {
        "eastus": "us-*",
        "eastus2": "us-*",
        "westus": "us-*",
        "westus2": "us-*",
        "westus3": "us-*",
        "centralus": "us-*",
        "northcentralus": "us-*",
        "southcentralus": "us-*",
        "westcentralus": "us-*",
        "canadacentral": "ca-*",
        "canadaeast": "ca-*",
        "mexicocentral": "mx-*",
        "brazilsouth": "sa-*",
        "brazilsoutheast": "sa-*",
        "chilecentral": "sa-*",
        "northeurope": "eu-*",
        "westeurope": "eu-*",
        "uksouth": "eu-*",
        "ukwest": "eu-*",
        "francecentral": "eu-*",
        "francesouth": "eu-*",
        "germanywestcentral": "eu-*",
        "germanynorth": "eu-*",
        "norwayeast": "eu-*",
        "norwaywest": "eu-*",
        "swedencentral": "eu-*",
        "switzerlandnorth": "eu-*",
        "switzerlandwest": "eu-*",
        "polandcentral": "eu-*",
        "italynorth": "eu-*",
        "spaincentral": "eu-*",
        "belgiumcentral": "eu-*",
        "uaenorth": "me-*",
        "uaecentral": "me-*",
        "qatarcentral": "me-*",
        "israelcentral": "me-*",
        "southafricanorth": "af-*",
        "southafricawest": "af-*",
        "eastasia": "ap-*",
        "southeastasia": "ap-*",
        "japaneast": "ap-*",
        "japanwest": "ap-*",
        "koreacentral": "ap-*",
        "koreasouth": "ap-*",
        "australiaeast": "ap-*",
        "australiasoutheast": "ap-*",
        "australiacentral": "ap-*",
        "australiacentral2": "ap-*",
        "centralindia": "ap-*",
        "southindia": "ap-*",
        "westindia": "ap-*",
        "jioindiawest": "ap-*",
        "jioindiacentral": "ap-*",
        "indonesiacentral": "ap-*",
        "malaysiawest": "ap-*",
        "newzealandnorth": "ap-*",
        "usgovvirginia": "us-gov-*",
        "usgovarizona": "us-gov-*",
        "usgovtexas": "us-gov-*",
        "usdodcentral": "us-gov-*",
        "usdodeast": "us-gov-*",
        "chinanorth": "cn-*",
        "chinanorth2": "cn-*",
        "chinanorth3": "cn-*",
        "chinaeast": "cn-*",
        "chinaeast2": "cn-*",
        "chinaeast3": "cn-*",
    },
}


def generalize_region(provider: str, region: str | None) -> str:
    """A continent-level group instead of the exact region, which narrows down the customer.

    Case-insensitive, whitespace-tolerant; an unknown or empty region (or provider) is "other".
    """
    if not isinstance(region, str) or not isinstance(provider, str):
        return OTHER_REGION
    table = REGION_TABLE.get(provider.strip().lower(), {})
    return table.get(region.strip().lower(), OTHER_REGION)


def generalize_regions(provider: str, regions: pd.Series) -> pd.Series:
    """``generalize_region`` over a column; the index is kept, missing values become "other"."""
    return pd.Series(
        [generalize_region(provider, r) for r in regions],
        index=regions.index,
        name=regions.name,
        dtype=object,
    )


# --------------------------------------------------------------------------------------------
# Metric aggregates
# --------------------------------------------------------------------------------------------

TREND_MIN_POINTS = 3  # fewer points cannot show a direction
TREND_VOLATILE_CV = 1.0  # sample std / |mean| above this: the series is noise, not a trend
TREND_RELATIVE_CHANGE = 0.2  # fitted change across the window, relative to the mean
TREND_TINY = 1e-12  # floor for |mean| so an all-zero-mean series does not divide by zero
METRIC_DECIMALS = 4


def _finite(values: Sequence[float] | np.ndarray) -> list[float]:
    if isinstance(values, np.ndarray):
        values = values.ravel().tolist()
    return [v for v in map(float, values) if math.isfinite(v)]


def calculate_trend(values: Sequence[float] | np.ndarray) -> str:
    """One of "increasing", "decreasing", "stable", "volatile", by a scale-free rule.

    Scale-free so CPU percent and bytes per second are judged alike:

    1. fewer than ``TREND_MIN_POINTS`` finite points: "stable";
    2. coefficient of variation (sample std / |mean|) above ``TREND_VOLATILE_CV``: "volatile"
       (mean 0 and std 0 is "stable"; mean 0 with any spread is "volatile");
    3. otherwise the least-squares slope times (n - 1), divided by max(|mean|, tiny), i.e. the
       fitted change across the window relative to the level: above +``TREND_RELATIVE_CHANGE``
       "increasing", below its negative "decreasing", else "stable".
    """
    summary = summarize_metric(values)
    return summary["trend"] if summary else "stable"


def summarize_metric(values: Sequence[float] | np.ndarray) -> dict[str, Any] | None:
    """avg, p50, p95, p99 (linear), trend and n of a metric series; None when it has no values.

    Only these aggregates reach the training rows: they describe usage without the daily shape
    that could fingerprint a workload. Non-finite values (NaN, inf) are ignored.
    """
    return summarize_metrics([values])[0]


def summarize_metrics(
    many: Sequence[Sequence[float] | np.ndarray],
) -> list[dict[str, Any] | None]:
    """``summarize_metric`` of many series, in a few numpy calls.

    Series with the same number of finite values are stacked into one array and reduced along
    its rows: a scan's series mostly share their length (days in the window), and numpy's
    per-call overhead on 3-to-30-point series was most of the cost of a training row. Each row
    of an array is reduced on its own, so a series' summary does not depend on its batch.
    Values are rounded to ``METRIC_DECIMALS`` by ``np.round``.
    """
    finite = [_finite(values) for values in many]
    by_length: dict[int, list[int]] = {}
    for index, y in enumerate(finite):
        if y:
            by_length.setdefault(len(y), []).append(index)
    summaries: list[dict[str, Any] | None] = [None] * len(finite)
    for indexes in by_length.values():
        block = np.array([finite[i] for i in indexes], dtype=float)
        with np.errstate(over="ignore", invalid="ignore"):  # huge values: inf, as in Python
            computed = _summaries(block)
        for i, summary in zip(indexes, computed, strict=True):
            summaries[i] = summary
    return summaries


def _summaries(block: np.ndarray) -> list[dict[str, Any]]:
    """The summaries of the rows of ``block`` (k series of n finite values)."""
    n = block.shape[1]
    mean = block.mean(axis=1)
    std = block.std(axis=1, ddof=1) if n > 1 else np.zeros(len(block))
    percentiles = np.percentile(block, [50, 95, 99], axis=1, method="linear")
    trends = np.full(len(block), "stable", dtype=object)
    if n >= TREND_MIN_POINTS:
        middle = (n - 1) / 2
        spread = n * (n * n - 1) / 12  # sum of (x - mean(x))^2 for x = 0..n-1
        # A product then a sum per row (not a matrix product, whose BLAS kernel may group the
        # additions differently with the number of rows).
        slope = ((block - mean[:, None]) * (np.arange(n) - middle)).sum(axis=1) / spread
        change = slope * (n - 1) / np.maximum(np.abs(mean), TREND_TINY)
        variation = std / np.where(mean == 0.0, 1.0, np.abs(mean))
        trends[change > TREND_RELATIVE_CHANGE] = "increasing"
        trends[change < -TREND_RELATIVE_CHANGE] = "decreasing"
        trends[(mean == 0.0) | (variation > TREND_VOLATILE_CV)] = "volatile"
        trends[std == 0.0] = "stable"
    rounded = np.round(np.vstack([mean, percentiles]), METRIC_DECIMALS).tolist()
    return [
        {"avg": avg, "p50": p50, "p95": p95, "p99": p99, "trend": trend, "n": n}
        for avg, p50, p95, p99, trend in zip(*rounded, trends.tolist(), strict=True)
    ]


# --------------------------------------------------------------------------------------------
# Free-text scrubbing
# --------------------------------------------------------------------------------------------

_OCTET = r"(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)"
# Applied in order: whole ARNs and Azure ids first (they contain account ids and GUIDs), phone
# numbers last (their pattern would otherwise eat account ids and IPs).
_SCRUB_PATTERNS: tuple[tuple[re.Pattern[str], str], ...] = (
    (re.compile(r"\barn:aws[\w-]*:[^\s\"'`]+"), "<arn>"),
    (re.compile(r"/subscriptions/[^\s\"'`]+", re.IGNORECASE), "<azure-resource-id>"),
    (
        re.compile(
            r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~.-]+@"
            r"(?:[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?\.)+[A-Za-z0-9-]{2,}"
        ),
        "<email>",
    ),
    (
        re.compile(
            r"\b[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}\b", re.IGNORECASE
        ),
        "<uuid>",
    ),
    (re.compile(r"\b\d{12}\b"), "<account-id>"),
    (
        re.compile(
            r"\b(?:vol|i|snap|eipalloc|eipassoc|nat|vpc|subnet|sg|eni|ami|igw|rtb|acl|lt|db|elb)"
            r"-[0-9a-f]{8,17}\b",
            re.IGNORECASE,
        ),
        "<resource-id>",
    ),
    (
        re.compile(rf"\b(?:{_OCTET}\.){{3}}{_OCTET}\b"),
        "<ip>",
    ),
    # Not preceded by a digit and not an ISO date, so timestamps in error messages survive.
    (re.compile(r"(?<!\d)(?!\d{4}-\d{2}-\d{2})\+?\d[\d ()-]{7,}\d"), "<phone>"),
)


def scrub_text(text: str) -> str:
    """``text`` with ARNs, Azure ids, emails, GUIDs, account ids, resource ids, IPs and phone
    numbers replaced by placeholders such as ``<arn>``.

    For cloud error messages and tag values before they are stored or shown: they routinely quote
    the id of the object that failed.
    """
    for pattern, placeholder in _SCRUB_PATTERNS:
        text = pattern.sub(placeholder, text)
    return text


# --------------------------------------------------------------------------------------------
# Resource configuration and tags
# --------------------------------------------------------------------------------------------

# Per resource type, the configuration keys that describe the resource without identifying it.
# Anything not listed (names, ids, key ARNs, network addresses) is dropped.
CONFIG_ALLOWLIST: dict[str, tuple[str, ...]] = {
    "ebs_volume": ("size_gb", "volume_type", "iops", "throughput", "encrypted"),
    "ebs_snapshot": ("size_gb", "encrypted"),
    "ec2_instance": ("instance_type", "platform", "architecture", "tenancy"),
    "elastic_ip": ("domain",),
    "rds_instance": (
        "db_instance_class",
        "engine",
        "allocated_storage_gb",
        "multi_az",
        "storage_type",
    ),
    "nat_gateway": ("connectivity_type",),
    "load_balancer": ("lb_type", "scheme"),
    "managed_disk": ("size_gb", "sku", "disk_tier"),
    "virtual_machine": ("vm_size", "os_type"),
    "public_ip": ("sku", "allocation_method"),
    "disk_snapshot": ("size_gb", "sku"),
    "app_service_plan": ("sku", "tier"),
}


def _scalar(value: Any) -> bool | int | float | str | None:
    """A JSON-safe scalar, or None when the value must be dropped."""
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, bool | int):
        return value
    if isinstance(value, str):
        return value if _plain_text(value) else None
    return None


@functools.lru_cache(maxsize=4096)
def _plain_text(value: str) -> bool:
    """Whether ``scrub_text`` leaves the value alone; cached, as config values repeat (gp3,
    t3.micro, Standard_LRS...) and the scrubbing patterns cost more than the rest of a row."""
    return scrub_text(value) == value


def whitelist_config(resource_type: str, config: Mapping[str, Any]) -> dict[str, Any]:
    """Only the allowlisted configuration keys of ``resource_type``, with scalar values.

    A string that contains an identifier (anything ``scrub_text`` would change) is dropped, not
    redacted: a half-redacted value is still a fingerprint. Unknown types keep nothing.
    """
    kept: dict[str, Any] = {}
    for name in CONFIG_ALLOWLIST.get(resource_type, ()):
        if name not in config:
            continue
        value = _scalar(config[name])
        if value is not None:
            kept[name] = value
    return kept


# Tag keys whose values describe how a resource is used. Team, owner, cost-center, application
# and Name tags are left out on purpose: their values name people, teams or products.
TAG_ALLOWLIST = (
    "env",
    "environment",
    "stage",
    "tier",
    "purpose",
    "criticality",
    "backup",
    "data-classification",
    "lifecycle",
    "auto-delete",
    "temporary",
)
_SAFE_TAG_VALUE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9 _.:/-]{0,39}$")
# Shapes that identify something even though scrub_text has no placeholder for them.
_IDENTIFYING_TAG_VALUE = re.compile(
    r"[0-9a-f]{16,}"  # long hex tokens: hashes, keys, ids
    r"|\d{6,}"  # long numbers: account, customer or phone numbers
    r"|://"  # URLs
    r"|\b[a-z0-9-]+(?:\.[a-z0-9-]+)*\.[a-z]{2,}\b",  # host and domain names
    re.IGNORECASE,
)


_TAG_KEYS = frozenset(TAG_ALLOWLIST)


@functools.lru_cache(maxsize=4096)
def _tag_key(key: str) -> str:
    """The key as matched against the allowlist; cached, as a fleet reuses a few tag keys."""
    return key.strip().lower().replace("_", "-").replace(" ", "-")


def anonymize_tags(tags: Mapping[str, Any]) -> dict[str, str]:
    """The allowlisted tags, keys and values lower-cased; every other tag is dropped.

    A value is kept only if it is short, plain and contains no identifier; otherwise the whole
    tag goes (never a partially redacted value). Keys match case-insensitively, with ``_`` and
    ``-`` alike; when two keys collide, the first usable one in sorted key order wins, whatever the
    input order.
    """
    kept: dict[str, str] = {}
    for raw_key in sorted(k for k in tags if isinstance(k, str)):
        key = _tag_key(raw_key)
        if key not in _TAG_KEYS or key in kept:
            continue
        value = tags[raw_key]
        if isinstance(value, np.generic):
            value = value.item()
        if isinstance(value, bool | int | float):
            value = str(value)  # YAML turns `temporary: true` into a bool
        if not isinstance(value, str):
            continue
        usable = _usable_tag_value(value)
        if usable is not None:
            kept[key] = usable
    return kept


@functools.lru_cache(maxsize=4096)
def _usable_tag_value(value: str) -> str | None:
    """The value as kept (stripped, lower-cased), or None when it is not plain enough.

    Cached: a fleet repeats a handful of values (prod, dev, true...), and the scrubbing
    patterns were the most expensive step of a training row's tags.
    """
    value = value.strip()
    if (
        scrub_text(value) != value
        or not _SAFE_TAG_VALUE.match(value)
        or _IDENTIFYING_TAG_VALUE.search(value)
    ):
        return None
    return value.lower()
