"""Monthly cost trends: rates averaged over scan days, spend kept once raw scans expire."""

from datetime import date

import pandas as pd

from cloudwaste_pipeline.costs import monthly_trend


def detections():
    return pd.DataFrame(
        {
            "scan_date": [date(2026, 11, 1)] * 2 + [date(2026, 11, 2)] * 2,
            "resource_type": ["ebs_volume", "elastic_ip", "ebs_volume", "elastic_ip"],
            "detection_scenario": ["unattached_volume", "unassociated_ip"] * 2,
            "region_anonymized": ["us-*", "eu-*", "us-*", "eu-*"],
            "cost_monthly": [40.0, 3.65, 40.0, 3.65],
        }
    )


def test_waste_is_a_monthly_rate_over_scan_days_and_percentage_of_spend():
    spend = pd.DataFrame({"scan_date": [date(2026, 11, 1)], "total_cost_monthly": [400.0]})
    actions = pd.DataFrame({"cost_saved_monthly": [40.0, 0.0]})
    row = monthly_trend("h", "aws", "2026-11", detections(), spend, actions)
    assert row["waste_detected"] == 43.65  # two days of the same waste count once as a rate
    assert row["total_spend"] == 400.0
    assert row["waste_percentage"] == round(100 * 43.65 / 400.0, 2)
    assert row["waste_eliminated"] == 40.0
    assert row["top_waste_categories"][0]["detection_scenario"] == "unattached_volume"
    assert row["regional_breakdown"] == {"eu-*": 3.65, "us-*": 40.0}


def test_spend_is_kept_from_the_stored_row_once_raw_scans_expired():
    row = monthly_trend(
        "h",
        "aws",
        "2026-11",
        detections(),
        pd.DataFrame(),
        pd.DataFrame(),
        previous_total_spend=500,
    )
    assert row["total_spend"] == 500.0 and row["waste_eliminated"] == 0.0


def test_an_empty_month_is_zero_not_an_error():
    row = monthly_trend("h", "aws", "2026-11", pd.DataFrame(), pd.DataFrame(), pd.DataFrame())
    assert row["waste_detected"] == 0.0 and row["waste_percentage"] == 0.0
    assert row["top_waste_categories"] == [] and row["regional_breakdown"] is None


def test_volumes_of_a_flagged_stopped_instance_are_not_counted_twice():
    day = date(2026, 11, 1)
    frame = pd.DataFrame(
        {
            "scan_date": [day, day, day],
            "resource_hash": ["inst", "vol", "other"],
            "parent_resource_hash": ["vpc", "inst", "inst2"],
            "resource_type": ["ec2_instance", "ebs_volume", "ebs_volume"],
            "detection_scenario": [
                "stopped_instance",
                "attached_to_stopped_instance",
                "attached_to_stopped_instance",
            ],
            "region_anonymized": ["us-*"] * 3,
            "cost_monthly": [10.0, 10.0, 5.0],
        }
    )
    row = monthly_trend("h", "aws", "2026-11", frame, pd.DataFrame(), pd.DataFrame())
    assert row["waste_detected"] == 15.0  # the instance's storage once, plus the other volume
