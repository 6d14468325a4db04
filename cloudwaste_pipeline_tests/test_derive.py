"""The privacy boundary: raw detections and actions in, anonymized rows out."""

from datetime import UTC, date, datetime

import pandas as pd
import pytest

from cloudwaste_pipeline.privacy import derive
from cloudwaste_pipeline.privacy.anonymize import hash_id
from cloudwaste_pipeline.scanning.model import Detection, Resource

KEY = b"derive-test-key-0123456789"
ACCOUNT = "123456789012"
ARN = f"arn:aws:ec2:eu-west-3:{ACCOUNT}:volume/vol-0abc1234def567890"
PARENT = f"arn:aws:ec2:eu-west-3:{ACCOUNT}:instance/i-0123456789abcdef0"
NOW = datetime(2026, 11, 16, 1, 0, tzinfo=UTC)


def detection(resource_id=ARN, metrics=True, created=datetime(2026, 10, 3, 22, 0, tzinfo=UTC)):
    resource = Resource(
        provider="aws",
        account_id=ACCOUNT,
        region="eu-west-3",
        resource_type="ebs_volume",
        resource_id=resource_id,
        state="in-use",
        name="jane-doe-data",
        created_at=created,
        config={"size_gb": 100, "volume_type": "gp3", "snapshot_id": "snap-0123456789abcdef0"},
        tags={"Name": "jane-doe-data", "Owner": "jane.doe@example.com", "env": "Prod"},
        parent_id=PARENT,
        parent_type="ec2_instance",
        parent_state="stopped",
        cost_monthly=8.8,
        cost_source="aws-price-table-2025",
        metrics={"VolumeReadOps": [("2026-11-14", 1.0), ("2026-11-15", 3.0)]} if metrics else {},
    )
    return Detection(resource, "attached_to_stopped_instance", "high", "why", NOW).to_json()


def test_training_rows_hold_hashes_and_generalized_values_only():
    rows = derive.training_rows([detection()], KEY, date(2026, 11, 16), NOW)
    row = rows.iloc[0]
    assert row["account_hash"] == hash_id("account", "aws", ACCOUNT, KEY)
    assert row["resource_hash"] == hash_id("resource", "aws", ARN, KEY)
    assert row["parent_resource_hash"] == hash_id("resource", "aws", PARENT, KEY)
    assert row["region_anonymized"] == "eu-*"
    assert row["resource_age_days"] == 43
    assert row["resource_config"] == {"size_gb": 100, "volume_type": "gp3"}
    assert row["tags_anonymized"] == {"env": "prod"}
    assert row["metrics_summary"]["VolumeReadOps"]["avg"] == 2.0
    assert row["temporal_features"]["is_weekend"] is True  # 2026-10-03 was a Saturday
    assert row["temporal_features"]["created_hour_of_day"] == 22
    assert row["detected_at"] == datetime(2026, 11, 16, 1, 0)  # naive UTC
    text = rows.to_json(date_format="iso")
    for secret in (ACCOUNT, "vol-0abc1234def567890", "jane", "example.com", "snap-", "i-0123"):
        assert secret not in text


def test_unknown_creation_time_gives_age_zero_and_no_temporal_features():
    rows = derive.training_rows([detection(created=None)], KEY, date(2026, 11, 16), NOW)
    assert rows.iloc[0]["resource_age_days"] == 0
    assert rows.iloc[0]["temporal_features"] is None


def test_lifecycle_detected_only_on_first_appearance_metrics_updated_each_scan():
    other = ARN.replace("vol-0abc", "vol-0fff")
    rows = derive.training_rows(
        [detection(), detection(other, metrics=False)], KEY, date(2026, 11, 16), NOW
    )
    seen = {hash_id("resource", "aws", ARN, KEY)}
    events = derive.lifecycle_rows(rows, seen, NOW)
    assert sorted(events["event_type"]) == ["detected", "metrics_updated"]
    detected = events[events["event_type"] == "detected"].iloc[0]
    assert detected["resource_hash"] == hash_id("resource", "aws", other, KEY)


def test_metrics_history_keeps_the_series_under_the_hash():
    det = detection()
    rows = derive.training_rows([det], KEY, date(2026, 11, 16), NOW)
    history = derive.metrics_history_rows([det], rows, NOW)
    assert len(history) == 1
    values = history.iloc[0]["metric_values"]
    assert values["values"] == [1.0, 3.0] and values["timestamps"][0] == "2026-11-14"
    assert history.iloc[0]["start_date"] == datetime(2026, 11, 14)


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"action": "archived"}, "unknown action"),
        ({"user_id": " "}, "missing field 'user_id'"),
        ({"provider": "gcp"}, "unknown provider"),
        ({"action_at": "yesterday"}, "not an ISO timestamp"),
        ({"action_at": None}, "missing field 'action_at'"),
    ],
)
def test_bad_action_events_get_a_reason(change, reason):
    event = {
        "event_id": "e1",
        "user_id": "u",
        "account_id": ACCOUNT,
        "provider": "aws",
        "resource_id": ARN,
        "action": "deleted",
        "action_at": "2026-11-16T03:00:00",
        **change,
    }
    assert reason in derive.validate_action_event(event)


def test_action_rows_join_detection_and_hold_unknown_resources():
    training = derive.training_rows([detection()], KEY, date(2026, 11, 16), NOW)
    context = training[
        [
            "resource_hash",
            "resource_type",
            "region_anonymized",
            "detection_scenario",
            "confidence_level",
            "cost_monthly",
            "detected_at",
        ]
    ]
    events = pd.DataFrame(
        [
            {
                "event_id": "e1",
                "user_id": "user-42",
                "account_id": ACCOUNT,
                "provider": "aws",
                "resource_id": ARN,
                "action": "deleted",
                "action_at": datetime(2026, 11, 16, 3, 0),
            },
            {
                "event_id": "e2",
                "user_id": "user-42",
                "account_id": ACCOUNT,
                "provider": "aws",
                "resource_id": ARN.replace("vol-0abc", "vol-0eee"),
                "action": "kept",
                "action_at": datetime(2026, 11, 16, 3, 0),
            },
        ]
    )
    rows, held = derive.action_rows(events, context, pd.DataFrame(), KEY, NOW)
    assert list(held["event_id"]) == ["e2"]
    row = rows.iloc[0]
    assert row["time_to_action_hours"] == 2
    assert row["cost_saved_monthly"] == 8.8
    assert row["user_hash"] == hash_id("user", "cloudwaste", "user-42", KEY)
    lifecycle = derive.action_lifecycle_rows(rows)
    assert sorted(lifecycle["event_type"]) == ["deleted", "status_changed"]
    assert "user-42" not in rows.to_json(date_format="iso")


def test_real_costs_fill_the_variance_or_say_why_not():
    with_real = {**detection(), "cost_real_monthly": 11.0, "cost_real_reason": None}
    without = {
        **detection(ARN.replace("vol-0abc", "vol-0ddd")),
        "cost_real_monthly": None,
        "cost_real_reason": "not opted in",
    }
    rows = derive.training_rows([with_real, without], KEY, date(2026, 11, 16), NOW)
    assert rows.loc[0, "cost_real_monthly"] == 11.0
    assert rows.loc[0, "cost_variance_pct"] == round((8.8 - 11.0) / 11.0 * 100, 2)
    assert rows.loc[1, "cost_real_monthly"] is None and rows.loc[1, "cost_variance_pct"] is None
    assert rows.loc[1, "cost_real_reason"] == "not opted in"
    stored_before = {
        k: v for k, v in detection().items() if k not in ("cost_real_monthly", "cost_real_reason")
    }
    older = derive.training_rows([stored_before], KEY, date(2026, 11, 16), NOW)
    assert older.loc[0, "cost_real_reason"] == "not collected by this scan"
