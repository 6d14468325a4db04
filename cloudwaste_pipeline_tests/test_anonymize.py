"""Tests of the anonymization primitives: hashing, regions, aggregates, scrubbing, allowlists."""

from __future__ import annotations

import hashlib
import hmac
import re

import numpy as np
import pandas as pd
import pytest
from hypothesis import given
from hypothesis import strategies as st

from cloudwaste_pipeline.privacy.anonymize import (
    KEY_ENV_VAR,
    REGION_GROUPS,
    REGION_TABLE,
    TAG_ALLOWLIST,
    TEST_VECTORS,
    KeyChain,
    MissingKeyError,
    anonymize_tags,
    aws_arn,
    aws_resource_arn,
    calculate_trend,
    generalize_region,
    generalize_regions,
    hash_id,
    hash_series,
    hash_values,
    load_key,
    scrub_text,
    summarize_metric,
    summarize_metrics,
    whitelist_config,
)

KEY = b"k" * 32
HEX64 = re.compile(r"^[0-9a-f]{64}$")
ids = st.text(min_size=1, max_size=80).filter(lambda s: s.strip() != "")


# ---- key ------------------------------------------------------------------------------------


@pytest.mark.parametrize("env", [{}, {KEY_ENV_VAR: ""}, {KEY_ENV_VAR: "   "}])
def test_load_key_missing(env: dict[str, str]) -> None:
    with pytest.raises(MissingKeyError) as info:
        load_key(env)
    assert KEY_ENV_VAR in str(info.value)
    assert "secrets.token_hex" in str(info.value)


def test_load_key_too_short_does_not_leak_key() -> None:
    with pytest.raises(MissingKeyError) as info:
        load_key({KEY_ENV_VAR: "sekrit-abc12"})
    message = str(info.value)
    assert KEY_ENV_VAR in message
    assert "sekrit-abc12" not in message
    assert "16" in message


def test_load_key_ok_and_stripped() -> None:
    secret = "0123456789abcdef0123"
    assert load_key({KEY_ENV_VAR: secret}) == secret.encode()
    assert load_key({KEY_ENV_VAR: f"{secret}\n"}) == secret.encode()


def test_load_key_reads_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(KEY_ENV_VAR, "environment-key-of-enough-length")
    assert load_key() == b"environment-key-of-enough-length"
    monkeypatch.delenv(KEY_ENV_VAR)
    with pytest.raises(MissingKeyError):
        load_key()


def test_missing_key_error_is_runtime_error() -> None:
    assert issubclass(MissingKeyError, RuntimeError)


# ---- hashing --------------------------------------------------------------------------------


def test_test_vectors_cover_the_published_cases() -> None:
    covered = {(v["kind"], v["provider"]) for v in TEST_VECTORS}
    assert covered >= {("account", "aws"), ("resource", "aws"), ("account", "azure")}
    assert {("resource", "azure"), ("user", "cloudwaste")} <= covered


@pytest.mark.parametrize(
    "vector",
    TEST_VECTORS,
    ids=lambda v: f"{v['kind']}-{v['provider']}-epoch{len(v.get('previous_keys', ())) + 1}",
)
def test_test_vectors_reproduced(vector: dict) -> None:
    key = KeyChain(vector["key"], vector.get("previous_keys", ()))
    got = hash_id(vector["kind"], vector["provider"], vector["identifier"], key)
    assert got == vector["expected"]
    assert hash_values(vector["kind"], vector["provider"], [vector["identifier"]], key) == [got]


def test_chained_test_vector_recomputed_inline() -> None:
    """A re-keyed warehouse's hash is HMAC(new key, old hash hex): the chain, written out."""
    (vector,) = [v for v in TEST_VECTORS if v.get("previous_keys")]
    old = hmac.new(
        vector["previous_keys"][0], b"account|aws|123456789012", hashlib.sha256
    ).hexdigest()
    assert old == TEST_VECTORS[0]["expected"]
    assert hmac.new(vector["key"], old.encode(), hashlib.sha256).hexdigest() == vector["expected"]


def test_key_chain_never_prints_its_keys() -> None:
    chain = KeyChain(b"k" * 32, [b"o" * 32])
    assert "kkkk" not in repr(chain) and "oooo" not in repr(chain)
    assert chain != KeyChain(b"k" * 32) and chain == KeyChain(b"k" * 32, [b"o" * 32])


def test_test_vector_recomputed_inline() -> None:
    """Independent of the module: the vectors cannot drift with the implementation."""
    key = b"cloudwaste-test-vector-key-0001"
    message = b"account|azure|9b2a6c1e-0f3d-4a5b-8c7d-112233445566"  # lower-cased: Azure rule
    expected = hmac.new(key, message, hashlib.sha256).hexdigest()
    (vector,) = [v for v in TEST_VECTORS if (v["kind"], v["provider"]) == ("account", "azure")]
    assert vector["key"] == key
    assert vector["expected"] == expected
    assert hash_id("account", "azure", "9B2A6C1E-0F3D-4A5B-8C7D-112233445566", key) == expected


def test_azure_ids_are_case_insensitive() -> None:
    disk = "/subscriptions/ABC/resourceGroups/RG-Prod/providers/Microsoft.Compute/disks/D1"
    assert hash_id("resource", "azure", disk, KEY) == hash_id(
        "resource", "azure", disk.upper(), KEY
    )
    assert hash_id("account", "azure", " AB-d ", KEY) == hash_id("account", "azure", "ab-D", KEY)


def test_aws_ids_are_case_sensitive_but_stripped() -> None:
    arn = "arn:aws:ec2:us-east-1:123456789012:volume/vol-0ABC"
    assert hash_id("resource", "aws", arn, KEY) != hash_id("resource", "aws", arn.lower(), KEY)
    assert hash_id("resource", "aws", f"  {arn}\n", KEY) == hash_id("resource", "aws", arn, KEY)


def test_user_ids_are_only_stripped() -> None:
    assert hash_id("user", "cloudwaste", "User-42", KEY) != hash_id(
        "user", "cloudwaste", "user-42", KEY
    )
    assert hash_id("user", "cloudwaste", " user-42 ", KEY) == hash_id(
        "user", "cloudwaste", "user-42", KEY
    )


def test_kind_provider_and_key_separate_hashes() -> None:
    by_kind = {
        hash_id("user", "cloudwaste", "123456789012", KEY),
        hash_id("event", "cloudwaste", "123456789012", KEY),
        hash_id("account", "aws", "123456789012", KEY),
    }
    assert len(by_kind) == 3
    assert hash_id("account", "aws", "x1", KEY) != hash_id("account", "azure", "x1", KEY)
    assert hash_id("account", "aws", "x1", KEY) != hash_id("account", "aws", "x1", b"j" * 32)


@pytest.mark.parametrize(
    ("kind", "provider", "identifier"),
    [
        ("customer", "aws", "x"),
        ("account", "gcp", "x"),
        ("user", "aws", "x"),
        ("resource", "cloudwaste", "x"),
        ("account", "AWS", "x"),
        ("account", "aws", ""),
        ("account", "aws", "   "),
    ],
)
def test_hash_id_rejects_bad_input(kind: str, provider: str, identifier: str) -> None:
    with pytest.raises(ValueError):
        hash_id(kind, provider, identifier, KEY)


def test_hash_id_rejects_non_str() -> None:
    with pytest.raises(TypeError):
        hash_id("account", "aws", 123456789012, KEY)  # type: ignore[arg-type]


@given(identifier=ids, provider=st.sampled_from(["aws", "azure"]))
def test_hash_is_hex_and_deterministic(identifier: str, provider: str) -> None:
    first = hash_id("resource", provider, identifier, KEY)
    assert HEX64.match(first)
    assert first == hash_id("resource", provider, identifier, KEY)


@given(
    values=st.lists(st.one_of(st.none(), ids), max_size=20),
    provider=st.sampled_from(["aws", "azure"]),
    offset=st.integers(-5, 5),
)
def test_hash_series_matches_hash_id(values: list[str | None], provider: str, offset: int) -> None:
    series = pd.Series(values, index=range(offset, offset + len(values)), dtype=object)
    out = hash_series("resource", provider, series, KEY)
    assert out.index.equals(series.index)
    expected = [None if v is None else hash_id("resource", provider, v, KEY) for v in values]
    assert out.tolist() == expected


def test_hash_series_nan_and_string_dtype() -> None:
    series = pd.Series(["a", np.nan, None, "b"], index=["w", "x", "y", "z"])
    out = hash_series("account", "aws", series, KEY)
    assert out["x"] is None
    assert out["y"] is None
    assert out["w"] == hash_id("account", "aws", "a", KEY)
    out_str = hash_series("account", "aws", series.astype("string"), KEY)
    assert out_str.tolist() == out.tolist()


# ---- ARNs -----------------------------------------------------------------------------------


def test_aws_arn() -> None:
    assert aws_arn("ec2", "us-east-1", "123456789012", "volume/vol-1") == (
        "arn:aws:ec2:us-east-1:123456789012:volume/vol-1"
    )
    assert aws_arn("ec2", "us-gov-west-1", "1", "vpc/v").startswith("arn:aws-us-gov:ec2:")
    assert aws_arn("ec2", "cn-north-1", "1", "vpc/v").startswith("arn:aws-cn:ec2:")


@pytest.mark.parametrize(
    ("resource_type", "resource_id", "expected"),
    [
        ("ebs_volume", "vol-1", "arn:aws:ec2:eu-west-1:123456789012:volume/vol-1"),
        ("ebs_snapshot", "snap-1", "arn:aws:ec2:eu-west-1::snapshot/snap-1"),
        ("elastic_ip", "eipalloc-1", "arn:aws:ec2:eu-west-1:123456789012:elastic-ip/eipalloc-1"),
        ("ec2_instance", "i-1", "arn:aws:ec2:eu-west-1:123456789012:instance/i-1"),
        ("nat_gateway", "nat-1", "arn:aws:ec2:eu-west-1:123456789012:natgateway/nat-1"),
        ("vpc", "vpc-1", "arn:aws:ec2:eu-west-1:123456789012:vpc/vpc-1"),
        ("rds_instance", "mydb", "arn:aws:rds:eu-west-1:123456789012:db:mydb"),
        (
            "load_balancer",
            "arn:aws:elasticloadbalancing:eu-west-1:123456789012:loadbalancer/app/x/1",
            "arn:aws:elasticloadbalancing:eu-west-1:123456789012:loadbalancer/app/x/1",
        ),
        ("ebs_volume", "arn:aws:ec2:x:1:volume/v", "arn:aws:ec2:x:1:volume/v"),
    ],
)
def test_aws_resource_arn(resource_type: str, resource_id: str, expected: str) -> None:
    assert aws_resource_arn(resource_type, "eu-west-1", "123456789012", resource_id) == expected


@pytest.mark.parametrize(("resource_type", "resource_id"), [("load_balancer", "lb-1"), ("x", "y")])
def test_aws_resource_arn_rejects(resource_type: str, resource_id: str) -> None:
    with pytest.raises(ValueError):
        aws_resource_arn(resource_type, "eu-west-1", "123456789012", resource_id)


# ---- regions --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("provider", "region", "group"),
    [
        ("aws", "us-east-1", "us-*"),
        ("azure", "eastus", "us-*"),
        ("aws", "eu-west-3", "eu-*"),
        ("azure", "westeurope", "eu-*"),
        ("azure", "uksouth", "eu-*"),
        ("azure", "switzerlandnorth", "eu-*"),
        ("aws", "ap-southeast-1", "ap-*"),
        ("azure", "centralindia", "ap-*"),
        ("azure", "newzealandnorth", "ap-*"),
        ("aws", "sa-east-1", "sa-*"),
        ("azure", "brazilsouth", "sa-*"),
        ("azure", "chilecentral", "sa-*"),
        ("aws", "ca-central-1", "ca-*"),
        ("azure", "canadaeast", "ca-*"),
        ("aws", "mx-central-1", "mx-*"),
        ("azure", "mexicocentral", "mx-*"),
        ("aws", "me-south-1", "me-*"),
        ("aws", "il-central-1", "me-*"),
        ("azure", "qatarcentral", "me-*"),
        ("aws", "af-south-1", "af-*"),
        ("azure", "southafricanorth", "af-*"),
        ("aws", "us-gov-west-1", "us-gov-*"),
        ("azure", "usgovvirginia", "us-gov-*"),
        ("aws", "cn-north-1", "cn-*"),
        ("azure", "chinaeast2", "cn-*"),
        ("aws", "mars-1", "other"),
        ("aws", "", "other"),
        ("azure", "us-east-1", "other"),
        ("gcp", "us-east1", "other"),
        ("aws", " US-EAST-1 ", "us-*"),
        ("azure", "EastUS", "us-*"),
    ],
)
def test_generalize_region(provider: str, region: str, group: str) -> None:
    assert generalize_region(provider, region) == group


def test_every_table_entry_maps_to_its_group() -> None:
    for provider, table in REGION_TABLE.items():
        for region, group in table.items():
            assert region == region.strip().lower()
            assert group in REGION_GROUPS and group != "other"
            assert generalize_region(provider, region.upper()) == group


AWS_PREFIX_GROUPS = {
    "us-gov": "us-gov-*",
    "us": "us-*",
    "ca": "ca-*",
    "mx": "mx-*",
    "sa": "sa-*",
    "eu": "eu-*",
    "il": "me-*",
    "me": "me-*",
    "af": "af-*",
    "ap": "ap-*",
    "cn": "cn-*",
}


def test_aws_groups_agree_with_region_prefix() -> None:
    for region, group in REGION_TABLE["aws"].items():
        prefix = "us-gov" if region.startswith("us-gov-") else region.split("-")[0]
        assert AWS_PREFIX_GROUPS[prefix] == group, region


def test_table_is_complete_for_required_aws_regions() -> None:
    required = {f"ap-southeast-{i}" for i in range(1, 8)} | {
        "us-east-2",
        "ca-west-1",
        "eu-central-2",
        "eu-south-2",
        "ap-northeast-3",
        "ap-south-2",
        "ap-east-2",
        "me-central-1",
        "cn-northwest-1",
        "us-gov-east-1",
    }
    assert required <= REGION_TABLE["aws"].keys()


@given(provider=st.text(max_size=10), region=st.text(max_size=30))
def test_generalize_region_closed_set(provider: str, region: str) -> None:
    assert generalize_region(provider, region) in REGION_GROUPS


def test_generalize_regions_series() -> None:
    series = pd.Series(["eastus", None, "uksouth", np.nan], index=[3, 1, 2, 0])
    out = generalize_regions("azure", series)
    assert out.index.equals(series.index)
    assert out.tolist() == ["us-*", "other", "eu-*", "other"]


# ---- metric aggregates ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("values", "trend"),
    [
        ([5.0] * 10, "stable"),
        ([0.0] * 10, "stable"),
        ([float(i) for i in range(1, 31)], "increasing"),
        ([float(i) for i in range(30, 0, -1)], "decreasing"),
        ([0.0, 100.0] * 10, "volatile"),
        ([1.0, 100.0], "stable"),
        ([], "stable"),
        ([100.0, 101.0, 99.0, 100.0, 102.0, 98.0], "stable"),
        ([1000.0 + i for i in range(30)], "stable"),  # +3% across the window: scale-free
        ([0.0, 0.0, 0.0, 0.0, 5.0], "volatile"),
    ],
)
def test_calculate_trend(values: list[float], trend: str) -> None:
    assert calculate_trend(values) == trend


def test_trend_is_scale_free() -> None:
    ramp = [10.0 + i for i in range(20)]
    assert calculate_trend(ramp) == calculate_trend([v * 1e6 for v in ramp]) == "increasing"


def test_summarize_metric() -> None:
    summary = summarize_metric([float(i) for i in range(1, 101)])
    assert summary == {
        "avg": 50.5,
        "p50": 50.5,
        "p95": 95.05,
        "p99": 99.01,
        "trend": "increasing",
        "n": 100,
    }


def test_summarize_metric_rounds_and_ignores_nan() -> None:
    summary = summarize_metric([1 / 3, float("nan"), 1 / 3, 1 / 3])
    assert summary is not None
    assert summary["avg"] == 0.3333
    assert summary["n"] == 3
    assert summary["trend"] == "stable"


finite_floats = st.floats(min_value=-1e9, max_value=1e9, allow_nan=False)


@given(st.lists(finite_floats, min_size=1, max_size=60))
def test_summarize_metric_agrees_with_numpy(values: list[float]) -> None:
    """The plain-Python aggregates are numpy's (linear percentiles, mean), to rounding."""
    summary = summarize_metric(values)
    assert summary is not None
    expected = np.percentile(values, [50, 95, 99], method="linear")
    for name, value in zip(("p50", "p95", "p99"), expected, strict=True):
        assert summary[name] == pytest.approx(round(float(value), 4), rel=1e-9, abs=1e-4)
    assert summary["avg"] == pytest.approx(float(np.mean(values)), rel=1e-9, abs=1e-4)
    assert summary["n"] == len(values)


@given(st.lists(st.lists(finite_floats, max_size=8), max_size=12))
def test_a_series_summary_does_not_depend_on_its_batch(many: list[list[float]]) -> None:
    """Summarized together (stacked by length), each series gets what it gets alone."""
    assert summarize_metrics(many) == [summarize_metric(values) for values in many]
    assert summarize_metrics(many[::-1]) == summarize_metrics(many)[::-1]


def test_trend_of_a_numpy_array_ignores_non_finite_values() -> None:
    series = np.array([[1.0, np.inf], [2.0, np.nan], [3.0, 4.0]])
    assert calculate_trend(series) == "increasing"
    assert summarize_metric(series) == summarize_metric([1.0, 2.0, 3.0, 4.0])


@pytest.mark.parametrize("values", [[], [float("nan")]])
def test_summarize_metric_empty(values: list[float]) -> None:
    assert summarize_metric(values) is None


# ---- scrubbing ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "AccessDenied on arn:aws:ec2:us-east-1:123456789012:volume/vol-0abc1234 for x",
            "AccessDenied on <arn> for x",
        ),
        (
            "'/subscriptions/9b2a/resourceGroups/rg/providers/Microsoft.Compute/disks/d' failed",
            "'<azure-resource-id>' failed",
        ),
        ("mail bob.smith+x@example.co.uk now", "mail <email> now"),
        ("sub 9B2A6C1E-0F3D-4A5B-8C7D-112233445566.", "sub <uuid>."),
        ("account 123456789012 denied", "account <account-id> denied"),
        ("volume vol-0abc1234def567890 busy", "volume <resource-id> busy"),
        ("instance i-0123456789abcdef0, sg-12345678", "instance <resource-id>, <resource-id>"),
        ("from 10.0.12.255 port 443", "from <ip> port 443"),
        ("call +1 (555) 123-4567 today", "call <phone> today"),
        ("at 2026-01-15T10:00:00Z retry", "at 2026-01-15T10:00:00Z retry"),
        ("throttled, retry in 30 s", "throttled, retry in 30 s"),
    ],
)
def test_scrub_text_examples(text: str, expected: str) -> None:
    assert scrub_text(text) == expected


words = st.text(alphabet="abcdefghij ,:", max_size=20)


@given(email=st.emails(), before=words, after=words)
def test_scrub_removes_generated_emails(email: str, before: str, after: str) -> None:
    out = scrub_text(f"{before} {email} {after}")
    assert email not in out
    assert "<email>" in out


@given(number=st.from_regex(r"\d{12}", fullmatch=True), before=words, after=words)
def test_scrub_removes_account_ids(number: str, before: str, after: str) -> None:
    out = scrub_text(f"{before} {number} {after}")
    assert number not in out
    assert not re.search(r"\d{9}", out)


@given(
    service=st.sampled_from(["ec2", "rds", "s3", "iam", "elasticloadbalancing"]),
    region=st.sampled_from(sorted(REGION_TABLE["aws"])),
    account=st.from_regex(r"\d{12}", fullmatch=True),
    resource=st.from_regex(r"[a-z]{2,10}/[A-Za-z0-9-]{1,30}", fullmatch=True),
    before=words,
)
def test_scrub_removes_generated_arns(
    service: str, region: str, account: str, resource: str, before: str
) -> None:
    arn = aws_arn(service, region, account, resource)
    out = scrub_text(f"{before} {arn} failed")
    assert arn not in out
    assert account not in out
    assert out.endswith("<arn> failed")


# ---- configuration and tags -----------------------------------------------------------------


def test_whitelist_config_keeps_only_allowlisted_scalars() -> None:
    config = {
        "size_gb": np.int64(100),
        "volume_type": "gp3",
        "iops": 3000,
        "throughput": float("nan"),
        "encrypted": True,
        "kms_key_id": "arn:aws:kms:us-east-1:123456789012:key/abc",
        "name": "prod-db-data",
        "attachments": [],
    }
    out = whitelist_config("ebs_volume", config)
    assert out == {"size_gb": 100, "volume_type": "gp3", "iops": 3000, "encrypted": True}
    assert type(out["size_gb"]) is int


def test_whitelist_config_drops_values_with_identifiers() -> None:
    config = {"instance_type": "owner bob@example.com", "platform": "arn:aws:iam::1:role/x"}
    config |= {"architecture": "x86_64", "tenancy": {"nested": 1}}
    assert whitelist_config("ec2_instance", config) == {"architecture": "x86_64"}


def test_whitelist_config_unknown_type_and_partial_config() -> None:
    assert whitelist_config("gcp_bucket", {"size_gb": 1}) == {}
    assert whitelist_config("managed_disk", {"size_gb": 64}) == {"size_gb": 64}
    assert whitelist_config("elastic_ip", {}) == {}


def test_anonymize_tags() -> None:
    tags = {
        "Env": "Prod",
        "Name": "payments-db-01",
        "owner": "alice",
        "Team": "payments",
        "purpose": "mail bob@example.com",
        "backup": "daily",
        "Temporary": True,
        "cost-center": "CC-1234",
    }
    assert anonymize_tags(tags) == {"env": "prod", "backup": "daily", "temporary": "true"}


@pytest.mark.parametrize(
    "value",
    [
        "bob@example.com",
        "123456789012",
        "arn:aws:s3:::bucket",
        "see https://wiki.acme.io",
        "api.acme.com",
        "deadbeefdeadbeef0011",
        "x" * 41,
        "-leading-dash",
        "call 555 123 4567",
        "10.0.0.1",
    ],
)
def test_anonymize_tags_drops_identifying_values(value: str) -> None:
    assert anonymize_tags({"purpose": value}) == {}


@pytest.mark.parametrize(
    ("key", "value", "expected"),
    [
        ("env", "Prod", {"env": "prod"}),
        ("ENVIRONMENT", " staging ", {"environment": "staging"}),
        ("data_classification", "Internal", {"data-classification": "internal"}),
        ("auto-delete", "2026-12-31", {"auto-delete": "2026-12-31"}),
        ("tier", "web/api", {"tier": "web/api"}),
    ],
)
def test_anonymize_tags_keeps_safe_values(key: str, value: str, expected: dict) -> None:
    assert anonymize_tags({key: value}) == expected


def test_anonymize_tags_collision_is_order_independent() -> None:
    forward = anonymize_tags({"env": "dev", "Env": "prod"})
    backward = anonymize_tags({"Env": "prod", "env": "dev"})
    assert forward == backward
    assert len(forward) == 1


@given(tags=st.dictionaries(st.text(max_size=15), st.text(max_size=50), max_size=8))
def test_anonymize_tags_output_is_allowlisted_and_clean(tags: dict[str, str]) -> None:
    out = anonymize_tags(tags)
    for key, value in out.items():
        assert key == key.lower()
        assert value == value.lower()
        assert scrub_text(value) == value
        assert key in TAG_ALLOWLIST
        assert len(value) <= 40
