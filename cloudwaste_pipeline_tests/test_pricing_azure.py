"""The Azure price table on its own: tier rounding, region multipliers, estimates and free SKUs."""

from __future__ import annotations

import pytest

from cloudwaste_pipeline.scanning import pricing_azure as pa
from cloudwaste_pipeline.scanning.pricing_azure import (
    FREE_APP_SERVICE_TIERS,
    HOURS_PER_MONTH,
    PRICE_ESTIMATE,
    PRICE_TABLE,
    app_service_plan_monthly,
    load_balancer_monthly,
    managed_disk_monthly,
    nat_gateway_monthly,
    public_ip_monthly,
    region_multiplier,
    snapshot_monthly,
    vcpus_from_size,
    vm_monthly,
)


@pytest.mark.parametrize(
    ("size_gb", "tier", "monthly"),
    [
        (100, "P10", 19.71),
        (128, "P10", 19.71),
        (129, "P15", 38.01),
        (1024, "P30", 135.17),
        (1, "P1", 0.77),
        (0, "P1", 0.77),
        (40000, "P80", 3604.04),
    ],
)
def test_premium_disk_is_billed_as_the_smallest_tier_that_holds_it(
    size_gb: float, tier: str, monthly: float
) -> None:
    assert managed_disk_monthly("Premium_LRS", size_gb, "eastus") == (monthly, PRICE_TABLE, tier)


def test_standard_ssd_and_hdd_tiers() -> None:
    assert managed_disk_monthly("StandardSSD_LRS", 100, "eastus") == (9.60, PRICE_TABLE, "E10")
    assert managed_disk_monthly("Standard_LRS", 128, "eastus") == (5.89, PRICE_TABLE, "S10")
    # HDD has no tier under 32 GiB: a small disk (or one with no size) is an S4.
    assert managed_disk_monthly("Standard_LRS", 4, "eastus")[2] == "S4"
    assert managed_disk_monthly("Standard_LRS", None, "eastus")[2] == "S4"  # type: ignore[arg-type]


def test_tier_tables_are_ordered_by_size_and_price() -> None:
    for tiers in pa.DISK_TIERS.values():
        sizes = [size for _, size, _ in tiers]
        prices = [price for _, _, price in tiers]
        assert sizes == sorted(sizes) and len(set(sizes)) == len(sizes)
        assert prices == sorted(prices)


def test_zone_redundant_disks_cost_more_than_locally_redundant() -> None:
    premium_lrs = managed_disk_monthly("Premium_LRS", 200, "eastus")
    premium_zrs = managed_disk_monthly("Premium_ZRS", 200, "eastus")
    ssd_lrs = managed_disk_monthly("StandardSSD_LRS", 200, "eastus")
    ssd_zrs = managed_disk_monthly("StandardSSD_ZRS", 200, "eastus")
    assert premium_zrs[0] > premium_lrs[0] and ssd_zrs[0] > ssd_lrs[0]
    assert premium_zrs[0] == pytest.approx(38.01 * 1.5)
    assert premium_zrs[1:] == (PRICE_TABLE, "P15")


def test_disk_sku_is_case_insensitive_and_unknown_sku_is_a_standard_ssd_estimate() -> None:
    assert managed_disk_monthly("premium_lrs", 100, "eastus") == (19.71, PRICE_TABLE, "P10")
    assert managed_disk_monthly("Mystery_LRS", 100, "eastus") == (9.60, PRICE_ESTIMATE, "E10")


def test_untiered_disks_are_priced_per_gib_with_no_tier() -> None:
    cost, source, tier = managed_disk_monthly("PremiumV2_LRS", 100, "eastus")
    assert (source, tier) == (PRICE_ESTIMATE, None)
    assert cost == pytest.approx(100 * pa.UNTIERED_DISK_GB_MONTH["premiumv2_lrs"])
    ultra_100 = managed_disk_monthly("UltraSSD_LRS", 100, "eastus")[0]
    ultra_200 = managed_disk_monthly("UltraSSD_LRS", 200, "eastus")[0]
    assert ultra_200 == pytest.approx(2 * ultra_100)


def test_region_multiplier_is_applied_and_case_insensitive() -> None:
    base = managed_disk_monthly("Premium_LRS", 100, "eastus")[0]
    brazil = managed_disk_monthly("Premium_LRS", 100, "BrazilSouth")[0]
    assert region_multiplier("brazilsouth") > 1.0
    assert brazil == pytest.approx(base * region_multiplier("brazilsouth"))
    assert region_multiplier("WestEurope") == region_multiplier("westeurope") > 1.0
    assert region_multiplier("West Europe") == region_multiplier("westeurope")
    assert region_multiplier("eastus") == region_multiplier("eastus2") == 1.0


def test_unknown_region_uses_the_fallback_multiplier() -> None:
    assert region_multiplier("marscentral") == pa.UNKNOWN_REGION_MULTIPLIER
    assert nat_gateway_monthly("marscentral") == pytest.approx(
        0.045 * HOURS_PER_MONTH * pa.UNKNOWN_REGION_MULTIPLIER
    )


def test_snapshots_are_priced_per_gib_with_standard_lrs_as_fallback() -> None:
    assert snapshot_monthly("Standard_LRS", 100, "eastus") == 5.0
    assert snapshot_monthly("Standard_ZRS", 100, "eastus") > 5.0
    assert snapshot_monthly("Premium_LRS", 100, "eastus") == 12.0
    assert snapshot_monthly("Whatever", 100, "eastus") == 5.0


def test_public_ip_prices_are_case_insensitive() -> None:
    assert public_ip_monthly("Standard", "eastus") == 3.65
    assert public_ip_monthly("basic", "eastus") == pytest.approx(0.0036 * HOURS_PER_MONTH)
    assert public_ip_monthly("STANDARD", "brazilsouth") == 3.65


def test_vm_from_the_table_versus_an_estimate() -> None:
    assert vm_monthly("Standard_D2s_v5", "eastus") == (
        pytest.approx(0.096 * HOURS_PER_MONTH),
        PRICE_TABLE,
    )
    assert vm_monthly("standard_d2s_v5", "eastus") == vm_monthly("Standard_D2s_v5", "eastus")
    # D16ds_v4 is not listed: 16 vCPUs at the D rate.
    cost, source = vm_monthly("Standard_D16ds_v4", "eastus")
    assert source == PRICE_ESTIMATE
    assert cost == pytest.approx(16 * pa.VCPU_HOURLY_BY_FAMILY["d"] * HOURS_PER_MONTH)
    # An M size uses the M rate, more per vCPU than the default.
    m_cost, m_source = vm_monthly("Standard_M64", "eastus")
    assert m_source == PRICE_ESTIMATE
    assert m_cost == pytest.approx(64 * pa.VCPU_HOURLY_BY_FAMILY["m"] * HOURS_PER_MONTH)
    # No vCPU count in the name: the default small size, as an estimate.
    assert vm_monthly("Standard_Mystery", "eastus") == (
        pytest.approx(pa.VM_HOURLY[pa.DEFAULT_VM_SIZE] * HOURS_PER_MONTH),
        PRICE_ESTIMATE,
    )


def test_vm_region_multiplier() -> None:
    eastus = vm_monthly("Standard_E4s_v5", "eastus")[0]
    japan = vm_monthly("Standard_E4s_v5", "japaneast")[0]
    assert japan == pytest.approx(eastus * region_multiplier("japaneast"))


def test_windows_adds_a_licence_per_vcpu() -> None:
    linux = vm_monthly("Standard_D4s_v5", "eastus")[0]
    windows = vm_monthly("Standard_D4s_v5", "eastus", "WINDOWS")[0]
    assert windows == pytest.approx(linux + 4 * pa.WINDOWS_VCPU_HOURLY * HOURS_PER_MONTH)
    assert vm_monthly("Standard_D4s_v5", "eastus", "Linux")[0] == linux
    # Burstable sizes carry a smaller licence.
    b_linux = vm_monthly("Standard_B2s", "eastus")[0]
    b_windows = vm_monthly("Standard_B2s", "eastus", "windows")[0]
    assert b_windows - b_linux == pytest.approx(2 * 0.004 * HOURS_PER_MONTH)


@pytest.mark.parametrize(
    ("size", "vcpus"),
    [
        ("Standard_D16ds_v4", 16),
        ("Standard_M64", 64),
        ("Standard_B1ms", 1),
        ("Standard_NC24ads_A100_v4", 24),
        ("Standard_E4-2s_v5", 4),
        ("Standard_HB120rs_v3", 120),
        ("basic_a1", 1),
        ("D8s_v5", 8),
        ("Standard_Mystery", None),
        ("", None),
    ],
)
def test_vcpus_are_parsed_from_the_size_name(size: str, vcpus: int | None) -> None:
    assert vcpus_from_size(size) == vcpus


def test_nat_gateway_hourly_charge() -> None:
    assert nat_gateway_monthly("eastus") == 32.85


def test_load_balancers() -> None:
    assert load_balancer_monthly("Basic", "westeurope") == 0.0
    assert load_balancer_monthly("standard", "eastus") == 18.25
    assert load_balancer_monthly("Gateway", "eastus") == pytest.approx(0.0125 * HOURS_PER_MONTH)
    assert load_balancer_monthly("Unheard", "eastus") == 18.25


@pytest.mark.parametrize(
    ("sku", "tier"),
    [("F1", "Free"), ("D1", "Shared"), ("Y1", "Dynamic"), ("FC1", "FlexConsumption")],
)
def test_free_and_consumption_plans_cost_nothing(sku: str, tier: str) -> None:
    assert tier.lower() in FREE_APP_SERVICE_TIERS
    assert app_service_plan_monthly(sku, tier, "eastus", workers=5) == (0.0, PRICE_TABLE)


def test_app_service_plan_is_priced_per_worker() -> None:
    one = app_service_plan_monthly("B1", "Basic", "eastus")
    assert one == (pytest.approx(13.14), PRICE_TABLE)
    three = app_service_plan_monthly("B1", "Basic", "eastus", workers=3)
    assert three == (pytest.approx(3 * one[0]), PRICE_TABLE)
    # Zero workers still bills one instance.
    assert app_service_plan_monthly("B1", "Basic", "eastus", workers=0) == one
    assert app_service_plan_monthly("EP1", "ElasticPremium", "eastus")[0] > 0


def test_app_service_unknown_skus_and_tiers_are_estimates() -> None:
    # Unknown SKU in a known tier: that tier's cheapest SKU.
    assert app_service_plan_monthly("P9v3", "PremiumV3", "eastus") == (
        pytest.approx(0.0775 * HOURS_PER_MONTH),
        PRICE_ESTIMATE,
    )
    # Unknown tier: the documented default (Standard S1).
    assert app_service_plan_monthly("Z1", "Galactic", "eastus") == (
        pytest.approx(0.095 * HOURS_PER_MONTH),
        PRICE_ESTIMATE,
    )
    # A listed SKU under a differently spelled tier is still listed.
    assert app_service_plan_monthly("P1v3", "Premium v3", "eastus")[1] == PRICE_TABLE
    assert app_service_plan_monthly("p1v3", "SomethingElse", "eastus")[1] == PRICE_TABLE
