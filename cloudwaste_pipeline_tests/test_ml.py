"""The model recovers the simulated users' rule from anonymized rows, honestly measured."""

from datetime import UTC, date, datetime, timedelta

import numpy as np
import pandas as pd
import pytest

from cloudwaste_pipeline.ml import train
from cloudwaste_pipeline.ml.features import build_features, one_per_resource
from cloudwaste_pipeline.privacy.derive import training_rows
from cloudwaste_pipeline.scanning.model import Detection, Resource
from cloudwaste_pipeline.simulation.behaviour import decide

KEY = b"ml-test-key-0123456789abcdef"
START = datetime(2026, 10, 1, 1, tzinfo=UTC)
SCENARIOS = [
    ("ebs_volume", "unattached_volume"),
    ("ebs_volume", "attached_to_stopped_instance"),
    ("elastic_ip", "unassociated_ip"),
    ("ec2_instance", "stopped_instance"),
]


def simulated_rows(n: int, seed: int = 3):
    rng = np.random.default_rng(seed)
    detections = []
    for i in range(n):
        resource_type, scenario = SCENARIOS[int(rng.integers(len(SCENARIOS)))]
        detected = START + timedelta(hours=int(i * 2))
        resource = Resource(
            provider="aws",
            account_id="123456789012",
            region=str(rng.choice(["us-east-1", "eu-west-1", "ap-southeast-2"])),
            resource_type=resource_type,
            resource_id=f"arn:aws:ec2:us-east-1:123456789012:volume/vol-{i:017x}",
            state="available",
            created_at=detected - timedelta(days=float(rng.uniform(1, 300))),
            tags={"env": str(rng.choice(["prod", "dev", "test", "staging"]))},
            cost_monthly=float(np.round(rng.lognormal(2.5, 1.2), 2)),
        )
        confidence = str(rng.choice(["low", "medium", "high", "critical"]))
        detections.append(Detection(resource, scenario, confidence, "", detected).to_json())
    rows = training_rows(detections, KEY, date(2026, 10, 1), START)
    actions = [decide(seed, d, datetime.fromisoformat(d["detected_at"])) for d in detections]
    rows["user_action"] = [a.action if a else None for a in actions]
    return rows[rows["user_action"].notna()].reset_index(drop=True)


def test_the_model_beats_the_baseline_on_a_time_split():
    model = train.train(simulated_rows(1200), version="test")
    metrics = model.metrics
    assert metrics["test_rows"] > 200
    assert metrics["roc_auc"] > 0.7, metrics
    assert metrics["accuracy"] > metrics["baseline_accuracy"], metrics
    assert metrics["train_window_end"] <= metrics["test_window_start"]


def test_saved_models_load_through_skops_and_predict_probabilities(tmp_path):
    rows = simulated_rows(300)
    model = train.train(rows, version="v1")
    path = train.save(model, tmp_path, datetime(2026, 11, 16, tzinfo=UTC))
    assert path.with_suffix(".json").exists()
    loaded = train.load(path)
    probabilities = loaded.predict_proba(build_features(rows.head(10)))[:, 1]
    assert probabilities.shape == (10,) and ((probabilities >= 0) & (probabilities <= 1)).all()


def test_too_few_labels_is_a_clear_error():
    with pytest.raises(train.NotEnoughLabels, match="at least"):
        train.train(simulated_rows(40).head(5), version="x")


def test_one_example_per_resource_keeps_the_first_detection():
    rows = simulated_rows(50)
    later = rows.assign(detected_at=rows["detected_at"] + timedelta(days=1), cost_monthly=-1.0)
    examples = one_per_resource(pd.concat([later, rows], ignore_index=True))
    assert len(examples) == rows["resource_hash"].nunique() == len(rows)
    assert (examples["cost_monthly"] >= 0).all()  # every kept row is the earlier detection
