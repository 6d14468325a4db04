"""What an Azure resource costs per month, from a small price table a reviewer can check.

The Azure counterpart of ``pricing.py``, built the same way and for the same reasons: waste is
reported in dollars, so every figure here is a named list price, not a call to the Azure Retail
Prices API or the Cost Management API. A scan must not depend on a second API (and its permissions)
to put a price on what it found, and a reviewer must be able to see where every number comes from.

The prices are Azure retail pay-as-you-go list prices in USD for East US (Linux for virtual machines
and App Service plans), as published in 2025; other regions are approximated with a multiplier per
region. Monthly prices are hourly prices times 730 hours, Azure's own convention.

Every cost carries a ``cost_source`` so downstream users can tell a listed price
(``azure-price-table-2025``) from an estimate (``azure-price-estimate-by-size``, for VM sizes, disk
SKUs and plan SKUs the table does not list).

Verification: the Premium SSD P10, P20, P30 and Standard SSD E30 prices were checked against the
published price page when the table was written; the other entries were not re-checked one by
one and may be a few percent off. Check them against the Azure Retail Prices API
(https://prices.azure.com/api/retail/prices) before quoting dollar figures to a customer.
"""

from __future__ import annotations

import re
from fnmatch import fnmatchcase

PRICE_SOURCE = (
    "Azure retail price list (https://azure.microsoft.com/pricing/details/managed-disks/, "
    "https://azure.microsoft.com/pricing/details/virtual-machines/linux/, "
    "https://azure.microsoft.com/pricing/details/ip-addresses/, "
    "https://azure.microsoft.com/pricing/details/azure-nat-gateway/, "
    "https://azure.microsoft.com/pricing/details/load-balancer/, "
    "https://azure.microsoft.com/pricing/details/app-service/linux/), "
    "East US pay-as-you-go list prices in USD, as published in 2025"
)
PRICE_TABLE = "azure-price-table-2025"
PRICE_ESTIMATE = "azure-price-estimate-by-size"

HOURS_PER_MONTH = 730  # Azure's own convention for monthly prices (8,760 h / 12)

# --- Managed disks -------------------------------------------------------------------------------

# Premium SSD, Standard SSD and Standard HDD managed disks are billed per disk, at the smallest
# performance tier whose size is at least the provisioned size: a 100 GiB Premium disk is billed as
# a P10 (128 GiB). Each tier is (name, size in GiB, USD per month for LRS). Standard SSD and HDD
# also bill per transaction; that usage charge is excluded, so those are capacity-only prices.
# Standard HDD has no tiers under 32 GiB (S4 is the smallest).
DiskTier = tuple[str, int, float]
DISK_TIERS: dict[str, tuple[DiskTier, ...]] = {
    "premium": (
        ("P1", 4, 0.77), ("P2", 8, 1.54), ("P3", 16, 3.08), ("P4", 32, 5.28),
        ("P6", 64, 10.21), ("P10", 128, 19.71), ("P15", 256, 38.01), ("P20", 512, 73.22),
        ("P30", 1024, 135.17), ("P40", 2048, 259.05), ("P50", 4096, 495.57),
        ("P60", 8192, 946.08), ("P70", 16384, 1802.02), ("P80", 32767, 3604.04),
    ),
    "standardssd": (
        ("E1", 4, 0.30), ("E2", 8, 0.60), ("E3", 16, 1.20), ("E4", 32, 2.40),
        ("E6", 64, 4.80), ("E10", 128, 9.60), ("E15", 256, 19.20), ("E20", 512, 38.40),
        ("E30", 1024, 76.80), ("E40", 2048, 153.60), ("E50", 4096, 307.20),
        ("E60", 8192, 614.40), ("E70", 16384, 1228.80), ("E80", 32767, 2457.60),
    ),
    "standardhdd": (
        ("S4", 32, 1.54), ("S6", 64, 3.01), ("S10", 128, 5.89), ("S15", 256, 11.33),
        ("S20", 512, 21.76), ("S30", 1024, 40.96), ("S40", 2048, 77.82),
        ("S50", 4096, 143.36), ("S60", 8192, 262.14), ("S70", 16384, 524.29),
        ("S80", 32767, 1048.58),
    ),
}  # fmt: skip

# Tiered disk SKUs (lower-case) -> (tier family, price ratio to the LRS tier). Zone-redundant
# disks are priced as the LRS tier times the ratio the 2025 price page shows (P10 ZRS 29.57 vs
# 19.71 LRS; E10 ZRS 12.00 vs 9.60 LRS). Standard HDD has no zone-redundant managed disks, so a
# "Standard_ZRS" disk is an unknown SKU.
TIERED_DISK_SKUS: dict[str, tuple[str, float]] = {
    "premium_lrs": ("premium", 1.0),
    "premium_zrs": ("premium", 1.5),
    "standardssd_lrs": ("standardssd", 1.0),
    "standardssd_zrs": ("standardssd", 1.25),
    "standard_lrs": ("standardhdd", 1.0),
}
# Disk SKUs the table does not know are priced as Standard SSD LRS (the portal's default for new
# disks outside production), and marked as an estimate.
DISK_FALLBACK_SKU = "standardssd_lrs"

# Premium SSD v2 and Ultra Disk have no tiers: they bill per provisioned GiB plus provisioned IOPS
# and throughput (and Ultra a reservation charge while unattached to a running VM). Only the
# capacity is priced here, so these are under-estimates, and always marked as estimates.
UNTIERED_DISK_GB_MONTH: dict[str, float] = {
    "premiumv2_lrs": 0.08,  # 0.000110 USD per GiB-hour
    "ultrassd_lrs": 0.1197,  # 0.000164 USD per GiB-hour
}
# A size that is missing or not positive is priced as the smallest disk the SKU allows.
UNTIERED_DISK_MIN_GB: dict[str, int] = {"premiumv2_lrs": 1, "ultrassd_lrs": 4}

# Snapshots, USD per GiB-month for full snapshots. Snapshots are billed on the used size (and
# incremental ones only on changes), so pricing one at its disk's size is an upper bound. Snapshot
# SKUs the table does not know are priced as Standard_LRS, the default for incremental snapshots.
SNAPSHOT_GB_MONTH: dict[str, float] = {
    "standard_lrs": 0.05,
    "standard_zrs": 0.0625,
    "premium_lrs": 0.12,
}
SNAPSHOT_FALLBACK_SKU = "standard_lrs"

# --- Networking ----------------------------------------------------------------------------------

# Public IP addresses, USD per hour. Basic SKU addresses were retired on 30 September 2025 but old
# ones still turn up; a Basic address is priced as static, since a dynamic one that is not
# associated has no address and costs nothing. IP prices are the same in the regions we price, so
# no multiplier applies. SKUs the table does not know are priced as Standard.
PUBLIC_IP_HOURLY: dict[str, float] = {"standard": 0.005, "basic": 0.0036}
PUBLIC_IP_FALLBACK_SKU = "standard"

# A NAT gateway's hourly charge; the 0.045 USD per GB of data processed is excluded.
NAT_GATEWAY_HOURLY = 0.045

# Load balancers, USD per hour. Standard is 0.025 USD/h for the first 5 rules (more rules and the
# 0.005 USD per GB processed are excluded); Basic is free (and retired on 30 September 2025); the
# Gateway load balancer is 0.0125 USD/h per chain. SKUs the table does not know are priced as
# Standard.
LOAD_BALANCER_HOURLY: dict[str, float] = {"standard": 0.025, "basic": 0.0, "gateway": 0.0125}
LOAD_BALANCER_FALLBACK_SKU = "standard"

# --- Virtual machines ----------------------------------------------------------------------------

# Pay-as-you-go Linux, USD per hour, by lower-case size name (approximate 2025 list prices).
VM_HOURLY: dict[str, float] = {
    "standard_b1ls": 0.0052, "standard_b1s": 0.0104, "standard_b1ms": 0.0207,
    "standard_b2s": 0.0416, "standard_b2ms": 0.0832, "standard_b4ms": 0.166,
    "standard_b8ms": 0.333, "standard_b12ms": 0.499, "standard_b16ms": 0.666,
    "standard_a1_v2": 0.043, "standard_a2_v2": 0.091,
    "standard_ds1_v2": 0.073, "standard_ds2_v2": 0.146, "standard_ds3_v2": 0.293,
    "standard_d2_v3": 0.096, "standard_d4_v3": 0.192,
    "standard_d2s_v3": 0.096, "standard_d4s_v3": 0.192, "standard_d8s_v3": 0.384,
    "standard_d16s_v3": 0.768,
    "standard_d2s_v4": 0.096, "standard_d4s_v4": 0.192,
    "standard_d2ds_v4": 0.113, "standard_d4ds_v4": 0.226,
    "standard_d2s_v5": 0.096, "standard_d4s_v5": 0.192, "standard_d8s_v5": 0.384,
    "standard_d16s_v5": 0.768, "standard_d32s_v5": 1.536,
    "standard_d2ds_v5": 0.113, "standard_d4ds_v5": 0.226, "standard_d8ds_v5": 0.452,
    "standard_d2as_v5": 0.086, "standard_d4as_v5": 0.172, "standard_d8as_v5": 0.344,
    "standard_d16as_v5": 0.688,
    "standard_e2s_v3": 0.126, "standard_e4s_v3": 0.252, "standard_e8s_v3": 0.504,
    "standard_e2s_v5": 0.126, "standard_e4s_v5": 0.252, "standard_e8s_v5": 0.504,
    "standard_e16s_v5": 1.008,
    "standard_e2as_v5": 0.113, "standard_e4as_v5": 0.226,
    "standard_f2s_v2": 0.0846, "standard_f4s_v2": 0.169, "standard_f8s_v2": 0.338,
    "standard_f16s_v2": 0.677,
    "standard_nc6s_v3": 3.06, "standard_nc12s_v3": 6.12, "standard_nc24s_v3": 12.24,
    "standard_nc4as_t4_v3": 0.526, "standard_nc8as_t4_v3": 0.752,
}  # fmt: skip

# Fallback for sizes the table lacks: the vCPU count in the name times a per-vCPU hourly rate by
# family letter, taken from a typical listed size of the family (D2s_v5 for D, E2s_v5 for E,
# B4ms for B, which the larger B sizes match, ...). GPU (N) families vary widely, from about 0.08
# (NV A10) to 0.51 (NC V100) per vCPU-hour; 0.3 is in between. Letters not listed use the D rate.
VCPU_HOURLY_BY_FAMILY: dict[str, float] = {
    "a": 0.045,
    "b": 0.0416,
    "d": 0.048,
    "e": 0.063,
    "f": 0.0423,
    "h": 0.06,
    "l": 0.078,
    "m": 0.105,
    "n": 0.3,
}
DEFAULT_VCPU_HOURLY = VCPU_HOURLY_BY_FAMILY["d"]
# A size whose name has no vCPU count is priced as a small general-purpose size.
DEFAULT_VM_SIZE = "standard_d2s_v5"
DEFAULT_VM_VCPUS = 2
# Windows adds a licence charge per vCPU-hour on top of the Linux price (D2s_v5 is 0.188 USD/h on
# Windows vs 0.096 on Linux). Burstable B sizes carry a much smaller one (B2s: 0.0496 vs 0.0416).
WINDOWS_VCPU_HOURLY = 0.046
WINDOWS_BURSTABLE_VCPU_HOURLY = 0.004
# "Standard_D16ds_v4" -> family letters "d", 16 vCPUs; "Standard_E4-2s_v5" (a constrained-vCPU
# size, priced as its parent) -> 4.
_VM_SIZE = re.compile(r"^(?:standard_|basic_)?([a-z]+)(\d+)")

# --- App Service plans ---------------------------------------------------------------------------

# Linux plans, USD per hour per instance, by lower-case tier then lower-case SKU (approximate 2025
# list prices). The App Service Environment charge of Isolated v2 is excluded. Elastic Premium
# (Functions Premium) bills at least one always-ready instance, so an idle EP plan still costs.
APP_SERVICE_HOURLY: dict[str, dict[str, float]] = {
    "basic": {"b1": 0.018, "b2": 0.036, "b3": 0.071},
    "standard": {"s1": 0.095, "s2": 0.19, "s3": 0.38},
    "premiumv2": {"p1v2": 0.111, "p2v2": 0.222, "p3v2": 0.444},
    "premiumv3": {"p0v3": 0.0775, "p1v3": 0.155, "p2v3": 0.31, "p3v3": 0.62},
    "premiummv3": {
        "p1mv3": 0.186, "p2mv3": 0.372, "p3mv3": 0.744, "p4mv3": 1.488, "p5mv3": 2.976,
    },
    "isolatedv2": {
        "i1v2": 0.412, "i2v2": 0.824, "i3v2": 1.648, "i4v2": 3.296, "i5v2": 6.592,
        "i6v2": 13.184,
    },
    "elasticpremium": {"ep1": 0.2161, "ep2": 0.4321, "ep3": 0.8642},
}  # fmt: skip
# Tiers that cost nothing for an empty plan: Free, Shared (billed per app, not per plan, and
# Windows-only), and the consumption tiers Dynamic (Y1) and Flex Consumption (FC1), billed per
# execution.
FREE_APP_SERVICE_TIERS: frozenset[str] = frozenset({"free", "shared", "dynamic", "flexconsumption"})
FREE_APP_SERVICE_SKUS: frozenset[str] = frozenset({"f1", "d1", "y1", "fc1"})
# A plan in a tier the table does not know is priced as Standard S1, a middle-of-the-road
# dedicated plan, and marked as an estimate.
APP_SERVICE_FALLBACK = ("standard", "s1")

# --- Regions -------------------------------------------------------------------------------------

# Price multiplier relative to East US, by normalised region name (lower-case, no spaces), first
# matching pattern wins (exact names before wildcards). These approximate how regional list prices
# for compute and storage compare to East US; they are not per-service prices.
REGION_MULTIPLIERS: dict[str, float] = {
    "eastus": 1.0,
    "eastus2": 1.0,
    "centralus": 1.0,
    "northcentralus": 1.0,
    "westus2": 1.0,
    "westus3": 1.0,
    "southcentralus": 1.05,
    "westcentralus": 1.08,
    "westus": 1.1,
    "canadacentral": 1.1,
    "canadaeast": 1.1,
    "mexicocentral": 1.15,
    "brazilsouth": 1.5,
    "northeurope": 1.05,
    "swedencentral": 1.05,
    "westeurope": 1.1,
    "spaincentral": 1.1,
    "uksouth": 1.12,
    "ukwest": 1.15,
    "francecentral": 1.15,
    "germanywestcentral": 1.15,
    "italynorth": 1.15,
    "polandcentral": 1.15,
    "norwayeast": 1.2,
    "switzerlandnorth": 1.25,
    "centralindia": 1.1,
    "southindia": 1.15,
    "southeastasia": 1.2,
    "koreacentral": 1.25,
    "australiaeast": 1.25,
    "australiasoutheast": 1.25,
    "eastasia": 1.3,
    "japaneast": 1.3,
    "japanwest": 1.3,
    "israelcentral": 1.2,
    "uaenorth": 1.25,
    "qatarcentral": 1.25,
    "southafricanorth": 1.3,
    "*euap": 1.0,  # early-access (canary) regions are priced as their US parents
    "usgov*": 1.25,
}
UNKNOWN_REGION_MULTIPLIER = 1.15


def region_multiplier(region: str) -> float:
    """The approximate price ratio of ``region`` to East US (1.15 for regions not listed).

    Both the programmatic name (``westeurope``) and the display name (``West Europe``) are accepted,
    since Azure APIs return either depending on the resource.
    """
    name = (region or "").lower().replace(" ", "")
    for pattern, multiplier in REGION_MULTIPLIERS.items():
        if fnmatchcase(name, pattern):
            return multiplier
    return UNKNOWN_REGION_MULTIPLIER


def managed_disk_monthly(sku: str, size_gb: float, region: str) -> tuple[float, str, str | None]:
    """Monthly cost of a managed disk, its cost source, and the tier it is billed as.

    Tiered SKUs are billed as the smallest tier that holds the disk, not per GiB, so the tier is
    returned for the report. Premium SSD v2 and Ultra Disk have no tier (``None``) and only their
    capacity is priced, so they are always estimates.
    """
    key = (sku or "").lower()
    if key in UNTIERED_DISK_GB_MONTH:
        size = size_gb if size_gb and size_gb > 0 else UNTIERED_DISK_MIN_GB[key]
        cost = UNTIERED_DISK_GB_MONTH[key] * size
        return round(cost * region_multiplier(region), 4), PRICE_ESTIMATE, None
    if key in TIERED_DISK_SKUS:
        source = PRICE_TABLE
    else:
        key, source = DISK_FALLBACK_SKU, PRICE_ESTIMATE
    family, redundancy_ratio = TIERED_DISK_SKUS[key]
    tier, monthly = _disk_tier(family, size_gb)
    return round(monthly * redundancy_ratio * region_multiplier(region), 4), source, tier


def _disk_tier(family: str, size_gb: float) -> tuple[str, float]:
    """The smallest tier holding ``size_gb`` (the smallest for no size, the largest if over)."""
    tiers = DISK_TIERS[family]
    if not size_gb or size_gb <= 0:
        name, _, monthly = tiers[0]
        return name, monthly
    for name, tier_gb, monthly in tiers:
        if size_gb <= tier_gb:
            return name, monthly
    name, _, monthly = tiers[-1]
    return name, monthly


def snapshot_monthly(sku: str, size_gb: float, region: str) -> float:
    """An upper bound: the full source size is priced, though snapshots bill the used size."""
    gb_price = SNAPSHOT_GB_MONTH.get((sku or "").lower(), SNAPSHOT_GB_MONTH[SNAPSHOT_FALLBACK_SKU])
    return round(gb_price * max(size_gb or 0, 0) * region_multiplier(region), 4)


def public_ip_monthly(sku: str, region: str) -> float:
    """A public IP address costs the same in the regions we price, so ``region`` is unused."""
    hourly = PUBLIC_IP_HOURLY.get((sku or "").lower(), PUBLIC_IP_HOURLY[PUBLIC_IP_FALLBACK_SKU])
    return round(hourly * HOURS_PER_MONTH, 4)


def vcpus_from_size(vm_size: str) -> int | None:
    """The vCPU count in a size name (``Standard_D16ds_v4`` -> 16), or None when there is none."""
    match = _VM_SIZE.match((vm_size or "").lower())
    return int(match.group(2)) if match else None


def vm_monthly(vm_size: str, region: str, os_type: str | None = None) -> tuple[float, str]:
    """Monthly pay-as-you-go compute cost of a running VM, and whether its size was listed.

    A deallocated VM costs no compute; its waste is the storage of its disks, which the scanner adds
    up from the disks themselves. Windows adds a licence charge per vCPU; the region multiplier
    applies to the total.
    """
    key = (vm_size or "").lower()
    if not key.startswith(("standard_", "basic_")):
        key = f"standard_{key}"
    match = _VM_SIZE.match(key)
    vcpus = int(match.group(2)) if match else DEFAULT_VM_VCPUS
    family = match.group(1)[0] if match else DEFAULT_VM_SIZE.removeprefix("standard_")[0]
    listed = VM_HOURLY.get(key)
    if listed is not None:
        hourly, source = listed, PRICE_TABLE
    elif match:
        rate = VCPU_HOURLY_BY_FAMILY.get(family, DEFAULT_VCPU_HOURLY)
        hourly, source = rate * vcpus, PRICE_ESTIMATE
    else:
        hourly, source = VM_HOURLY[DEFAULT_VM_SIZE], PRICE_ESTIMATE
    if (os_type or "").lower() == "windows":
        licence = WINDOWS_BURSTABLE_VCPU_HOURLY if family == "b" else WINDOWS_VCPU_HOURLY
        hourly += licence * vcpus
    return round(hourly * HOURS_PER_MONTH * region_multiplier(region), 4), source


def nat_gateway_monthly(region: str) -> float:
    """The hourly charge of a NAT gateway (data processing excluded)."""
    return round(NAT_GATEWAY_HOURLY * HOURS_PER_MONTH * region_multiplier(region), 4)


def load_balancer_monthly(sku: str, region: str) -> float:
    """The hourly charge of a load balancer (extra rules and data processed excluded).

    A Basic load balancer is free, so an idle one wastes nothing but clutter.
    """
    hourly = LOAD_BALANCER_HOURLY.get(
        (sku or "").lower(), LOAD_BALANCER_HOURLY[LOAD_BALANCER_FALLBACK_SKU]
    )
    return round(hourly * HOURS_PER_MONTH * region_multiplier(region), 4)


def app_service_plan_monthly(
    sku_name: str, tier: str, region: str, workers: int = 1
) -> tuple[float, str]:
    """Monthly cost of an App Service plan (per instance times workers), and its cost source.

    A plan is billed for its instances whether or not it hosts any app, which is why an empty paid
    plan is waste; plans in ``FREE_APP_SERVICE_TIERS`` cost nothing when empty. A SKU the table
    lacks in a known tier is priced as that tier's cheapest SKU, an under-estimate.
    """
    sku_key = (sku_name or "").lower()
    tier_key = (tier or "").lower().replace(" ", "")
    if tier_key in FREE_APP_SERVICE_TIERS or sku_key in FREE_APP_SERVICE_SKUS:
        return 0.0, PRICE_TABLE
    hourly = _app_service_listed_hourly(sku_key, tier_key)
    if hourly is not None:
        source = PRICE_TABLE
    elif tier_key in APP_SERVICE_HOURLY:
        hourly, source = min(APP_SERVICE_HOURLY[tier_key].values()), PRICE_ESTIMATE
    else:
        fallback_tier, fallback_sku = APP_SERVICE_FALLBACK
        hourly, source = APP_SERVICE_HOURLY[fallback_tier][fallback_sku], PRICE_ESTIMATE
    instances = max(1, workers or 1)
    cost = hourly * HOURS_PER_MONTH * instances * region_multiplier(region)
    return round(cost, 4), source


def _app_service_listed_hourly(sku_key: str, tier_key: str) -> float | None:
    """The listed price of a SKU, looked up in its own tier first, then in every tier.

    SKU names are unique across tiers, and ARM tier names vary (``PremiumV3`` vs ``Premium v3``),
    so a listed SKU is trusted over a tier name the table spells differently.
    """
    listed = APP_SERVICE_HOURLY.get(tier_key, {}).get(sku_key)
    if listed is not None:
        return listed
    for prices in APP_SERVICE_HOURLY.values():
        if sku_key in prices:
            return prices[sku_key]
    return None
