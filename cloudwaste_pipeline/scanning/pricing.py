"""What an AWS resource costs per month, from a small price table a reviewer can check line by line.

Waste is reported in dollars, so every figure here is a named list price, not a call to the AWS
Pricing API: a scan must not depend on a second API (and its permissions) to put a price on what it
found, and a reviewer must be able to see where every number comes from. The prices are us-east-1
on-demand list prices (Linux for EC2); other regions are approximated with a multiplier per region.

Every cost carries a ``cost_source`` so downstream users can tell a listed price
(``aws-price-table-2025``) from an estimate (``aws-price-estimate-by-size``, for instance types and
volume types the table does not list).
"""

from __future__ import annotations

import re
from fnmatch import fnmatchcase

PRICE_SOURCE = (
    "AWS public price list (https://aws.amazon.com/ec2/pricing/on-demand/, "
    "https://aws.amazon.com/ebs/pricing/, https://aws.amazon.com/vpc/pricing/), "
    "us-east-1 on-demand list prices in USD, as published in 2025"
)
PRICE_TABLE = "aws-price-table-2025"
PRICE_ESTIMATE = "aws-price-estimate-by-size"

HOURS_PER_MONTH = 730  # AWS's own convention for monthly prices (8,760 h / 12)

# EBS storage, USD per GB-month.
EBS_GB_MONTH: dict[str, float] = {
    "gp3": 0.08,
    "gp2": 0.10,
    "io1": 0.125,
    "io2": 0.125,
    "st1": 0.045,
    "sc1": 0.015,
    "standard": 0.05,  # previous-generation magnetic
}
# Volume types the table does not know are priced as gp2, the most common older default.
EBS_FALLBACK_TYPE = "gp2"
# Provisioned IOPS, USD per IOPS-month. io2 is tiered above 32,000 IOPS; the flat first-tier
# price over-estimates those rare volumes slightly.
EBS_PROVISIONED_IOPS_MONTH: dict[str, float] = {"io1": 0.065, "io2": 0.065}
# gp3 includes 3,000 IOPS and 125 MB/s; more is billed per IOPS-month and per MB/s-month.
GP3_FREE_IOPS = 3000
GP3_IOPS_MONTH = 0.005
GP3_FREE_THROUGHPUT_MBPS = 125
GP3_THROUGHPUT_MBPS_MONTH = 0.04

# Snapshots, USD per GB-month (standard tier). Snapshots are incremental, so pricing one at its
# volume's size is an upper bound.
SNAPSHOT_GB_MONTH = 0.05

# A public IPv4 address: USD 0.005 per hour in every commercial region (no regional multiplier).
PUBLIC_IPV4_HOURLY = 0.005
ELASTIC_IP_MONTHLY = round(PUBLIC_IPV4_HOURLY * HOURS_PER_MONTH, 4)  # 3.65

# Fixed hourly charges (data processing excluded), priced for the next rules.
NAT_GATEWAY_MONTHLY = 32.85  # 0.045 USD/h
LOAD_BALANCER_MONTHLY = 16.42  # ALB or NLB, 0.0225 USD/h, before LCU/NLCU charges
CLASSIC_LOAD_BALANCER_MONTHLY = 18.25  # CLB, 0.025 USD/h, before per-GB charges

# RDS on-demand, single-AZ, open-source engines (MySQL/PostgreSQL/MariaDB), USD per hour.
# Multi-AZ doubles the instance and storage price; commercial engines' licences are not included,
# so those are under-estimates. Classes the table lacks are priced as the EC2 size fallback times
# ``RDS_OVER_EC2``, the typical ratio of an RDS class to the same EC2 type.
RDS_HOURLY: dict[str, float] = {
    "db.t3.micro": 0.017, "db.t3.small": 0.034, "db.t3.medium": 0.068, "db.t3.large": 0.136,
    "db.t4g.micro": 0.016, "db.t4g.small": 0.032, "db.t4g.medium": 0.065,
    "db.m5.large": 0.171, "db.m5.xlarge": 0.342, "db.m5.2xlarge": 0.684,
    "db.m6g.large": 0.152, "db.m6i.large": 0.171,
    "db.r5.large": 0.25, "db.r5.xlarge": 0.50, "db.r6g.large": 0.225,
}  # fmt: skip
RDS_OVER_EC2 = 1.75
# RDS storage, USD per GB-month (single-AZ), and provisioned IOPS per IOPS-month.
RDS_STORAGE_GB_MONTH: dict[str, float] = {
    "gp2": 0.115, "gp3": 0.115, "io1": 0.125, "io2": 0.125, "standard": 0.10,
}  # fmt: skip
RDS_IOPS_MONTH = 0.10

# EC2 on-demand Linux, USD per hour, by family then size (approximate 2025 list prices).
EC2_HOURLY: dict[str, dict[str, float]] = {
    "t2": {
        "nano": 0.0058, "micro": 0.0116, "small": 0.023, "medium": 0.0464,
        "large": 0.0928, "xlarge": 0.1856, "2xlarge": 0.3712,
    },
    "t3": {
        "nano": 0.0052, "micro": 0.0104, "small": 0.0208, "medium": 0.0416,
        "large": 0.0832, "xlarge": 0.1664, "2xlarge": 0.3328,
    },
    "t3a": {
        "nano": 0.0047, "micro": 0.0094, "small": 0.0188, "medium": 0.0376,
        "large": 0.0752, "xlarge": 0.1504, "2xlarge": 0.3008,
    },
    "m5": {"large": 0.096, "xlarge": 0.192, "2xlarge": 0.384, "4xlarge": 0.768},
    "m6i": {"large": 0.096, "xlarge": 0.192, "2xlarge": 0.384, "4xlarge": 0.768},
    "c5": {"large": 0.085, "xlarge": 0.17, "2xlarge": 0.34, "4xlarge": 0.68},
    "c6i": {"large": 0.085, "xlarge": 0.17, "2xlarge": 0.34, "4xlarge": 0.68},
    "r5": {"large": 0.126, "xlarge": 0.252, "2xlarge": 0.504},
    "r6i": {"large": 0.126, "xlarge": 0.252, "2xlarge": 0.504},
}  # fmt: skip

# Fallback for types the table lacks: a general-purpose (m-class) price by size, where each size
# step doubles the price. "Nxlarge" is N times xlarge; "metal" is priced as 24xlarge; a size the
# pattern does not recognise is priced as large.
SIZE_FALLBACK_HOURLY: dict[str, float] = {
    "nano": 0.006,
    "micro": 0.012,
    "small": 0.024,
    "medium": 0.048,
    "large": 0.096,
    "xlarge": 0.192,
}
METAL_AS_XLARGE_MULTIPLE = 24
_MULTI_XLARGE = re.compile(r"^(\d+)xlarge$")

# Price multiplier relative to us-east-1, first matching pattern wins (exact names before
# wildcards). These are approximations of how regional list prices compare to us-east-1 for
# compute and storage; they are not per-service prices.
REGION_MULTIPLIERS: dict[str, float] = {
    "us-east-1": 1.0,
    "us-east-2": 1.0,
    "us-west-2": 1.0,
    "us-west-1": 1.12,
    "ca-*": 1.1,
    "eu-west-1": 1.1,
    "eu-central-1": 1.15,
    "eu-*": 1.15,
    "ap-south-1": 1.2,
    "ap-southeast-1": 1.25,
    "ap-northeast-2": 1.25,
    "ap-northeast-1": 1.3,
    "ap-southeast-2": 1.3,
    "ap-east-1": 1.3,
    "ap-*": 1.25,
    "sa-east-1": 1.5,
    "me-*": 1.25,
    "af-*": 1.25,
}
UNKNOWN_REGION_MULTIPLIER = 1.15


def region_multiplier(region: str) -> float:
    """The approximate price ratio of ``region`` to us-east-1 (1.15 for regions not listed)."""
    for pattern, multiplier in REGION_MULTIPLIERS.items():
        if fnmatchcase(region, pattern):
            return multiplier
    return UNKNOWN_REGION_MULTIPLIER


def volume_cost_source(volume_type: str) -> str:
    """Whether a volume type is priced from the table or as the fallback type."""
    return PRICE_TABLE if volume_type in EBS_GB_MONTH else PRICE_ESTIMATE


def ebs_volume_monthly(
    volume_type: str,
    size_gb: float,
    iops: float | None,
    region: str,
    throughput_mbps: float | None = None,
) -> float:
    """Monthly storage cost of a volume: GB-months plus provisioned IOPS/throughput where billed."""
    gb_price = EBS_GB_MONTH.get(volume_type, EBS_GB_MONTH[EBS_FALLBACK_TYPE])
    cost = gb_price * size_gb
    if volume_type in EBS_PROVISIONED_IOPS_MONTH:
        cost += EBS_PROVISIONED_IOPS_MONTH[volume_type] * (iops or 0)
    elif volume_type == "gp3":
        cost += GP3_IOPS_MONTH * max(0.0, (iops or 0) - GP3_FREE_IOPS)
        extra_throughput = max(0.0, (throughput_mbps or 0) - GP3_FREE_THROUGHPUT_MBPS)
        cost += GP3_THROUGHPUT_MBPS_MONTH * extra_throughput
    return round(cost * region_multiplier(region), 4)


def snapshot_monthly(size_gb: float, region: str) -> float:
    """An upper bound: the full source size is priced, though snapshots are incremental."""
    return round(SNAPSHOT_GB_MONTH * size_gb * region_multiplier(region), 4)


def elastic_ip_monthly(region: str) -> float:
    """A public IPv4 address costs the same in every commercial region, so ``region`` is unused."""
    return ELASTIC_IP_MONTHLY


def instance_monthly(instance_type: str, region: str) -> tuple[float, str]:
    """Monthly on-demand Linux compute cost of a running instance, and whether it was listed.

    A stopped instance costs no compute; its waste is the storage of its volumes, which the
    scanner adds up from the volumes themselves.
    """
    family, _, size = instance_type.partition(".")
    listed = EC2_HOURLY.get(family, {}).get(size)
    if listed is not None:
        hourly, source = listed, PRICE_TABLE
    else:
        hourly, source = _hourly_by_size(size), PRICE_ESTIMATE
    return round(hourly * HOURS_PER_MONTH * region_multiplier(region), 4), source


def _hourly_by_size(size: str) -> float:
    if size in SIZE_FALLBACK_HOURLY:
        return SIZE_FALLBACK_HOURLY[size]
    xlarge = SIZE_FALLBACK_HOURLY["xlarge"]
    multiple = _MULTI_XLARGE.match(size)
    if multiple:
        return xlarge * int(multiple.group(1))
    if size.startswith("metal"):
        return xlarge * METAL_AS_XLARGE_MULTIPLE
    return SIZE_FALLBACK_HOURLY["large"]


def nat_gateway_monthly(region: str) -> float:
    """The hourly charge of a NAT gateway (data processing excluded)."""
    return round(NAT_GATEWAY_MONTHLY * region_multiplier(region), 4)


def load_balancer_monthly(lb_type: str, region: str) -> float:
    """The hourly charge of a load balancer (LCU/NLCU and per-GB charges excluded)."""
    base = CLASSIC_LOAD_BALANCER_MONTHLY if lb_type == "classic" else LOAD_BALANCER_MONTHLY
    return round(base * region_multiplier(region), 4)


def rds_instance_monthly(
    db_class: str,
    storage_type: str,
    storage_gb: float,
    iops: float | None,
    multi_az: bool,
    region: str,
) -> tuple[float, str]:
    """Monthly cost of a DB instance (compute plus storage), and whether its class was listed."""
    listed = RDS_HOURLY.get(db_class)
    if listed is not None and storage_type in RDS_STORAGE_GB_MONTH:
        hourly, source = listed, PRICE_TABLE
    else:
        size = db_class.rsplit(".", 1)[-1]
        hourly = listed if listed is not None else _hourly_by_size(size) * RDS_OVER_EC2
        source = PRICE_ESTIMATE
    gb_price = RDS_STORAGE_GB_MONTH.get(storage_type, RDS_STORAGE_GB_MONTH["gp2"])
    storage = gb_price * storage_gb
    if storage_type in ("io1", "io2"):
        storage += RDS_IOPS_MONTH * (iops or 0)
    cost = (hourly * HOURS_PER_MONTH + storage) * (2 if multi_az else 1)
    return round(cost * region_multiplier(region), 4), source
