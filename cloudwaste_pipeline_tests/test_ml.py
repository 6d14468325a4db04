"""The model recovers the simulated users' rule from anonymized rows, honestly measured."""

import json
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


def simulated_detections(n: int, seed: int = 3) -> list[dict]:
    """Detections as the scanner reports them (raw ids), ``n`` of them two hours apart."""
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
    return detections


def simulated_rows(n: int, seed: int = 3):
    detections = simulated_detections(n, seed)
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


# --- report, promotion gate, registry --------------------------------------------------------


def test_the_report_holds_a_confusion_matrix_importances_and_calibration():
    model = train.train(simulated_rows(800), version="r")
    report, metrics = model.report, model.metrics
    (tn, fp), (fn, tp) = report["confusion_matrix"]
    assert tn + fp + fn + tp == metrics["test_rows"]
    assert (tp + tn) / metrics["test_rows"] == pytest.approx(metrics["accuracy"], abs=1e-4)
    importances = report["feature_importances"]
    assert set(importances) == set(model.features)
    assert sum(importances.values()) == pytest.approx(1.0, abs=1e-3)
    assert list(importances.values()) == sorted(importances.values(), reverse=True)
    # The simulated users decide on scenario, cost, env tag and confidence: those must lead.
    top = set(list(importances)[:5])
    assert {"env_tag", "log_cost_monthly"} <= top, importances
    bins = report["calibration"]
    assert 1 <= len(bins) <= train.CALIBRATION_BINS
    assert all(0 <= b["predicted"] <= 1 and 0 <= b["observed"] <= 1 for b in bins)
    assert metrics["brier"] < metrics["baseline_brier"]
    assert train.promotion_verdict(metrics)[0] is True


def degraded(rows: pd.DataFrame, seed: int = 11) -> pd.DataFrame:
    """The same rows with labels shuffled: nothing left to learn."""
    shuffled = np.random.default_rng(seed).permutation(rows["user_action"].to_numpy())
    return rows.assign(user_action=shuffled)


def test_a_model_trained_on_noise_does_not_pass_the_promotion_gate():
    metrics = train.train(degraded(simulated_rows(1200)), version="noise").metrics
    passed, reason = train.promotion_verdict(metrics)
    assert passed is False and "does not beat the baseline" in reason, metrics


@pytest.mark.parametrize(
    ("change", "failing"),
    [
        ({"accuracy": 0.6, "test_correct": 180}, "accuracy"),
        ({"test_rows": 10, "accuracy": 0.8, "test_correct": 8}, "not significantly"),
        ({"brier": 0.25}, "Brier"),
        ({"roc_auc": 0.5}, "ROC AUC"),
    ],
)
def test_the_gate_names_each_baseline_a_model_fails(change, failing):
    good = {
        "accuracy": 0.8,
        "baseline_accuracy": 0.6,
        "brier": 0.15,
        "baseline_brier": 0.24,
        "roc_auc": 0.85,
        "test_rows": 300,
        "test_correct": 240,
    }
    assert train.promotion_verdict(good)[0] is True
    passed, reason = train.promotion_verdict({**good, **change})
    assert passed is False and failing in reason


def test_promotion_is_atomic_and_keeps_a_history(tmp_path):
    from cloudwaste_pipeline.ml import registry

    with pytest.raises(registry.NoActiveModel, match="active_waste_model"):
        registry.load_active(tmp_path)
    rows = simulated_rows(300)
    first = train.save(train.train(rows, "v1"), tmp_path, datetime(2026, 11, 1, tzinfo=UTC))
    train.save(train.train(rows, "v2"), tmp_path, datetime(2026, 11, 8, tzinfo=UTC))
    assert [c["version"] for c in registry.candidates(tmp_path)] == ["v1", "v2"]
    meta = json.loads(first.with_suffix(".json").read_text())
    registry.promote(tmp_path, meta, datetime(2026, 11, 2, tzinfo=UTC), "test")
    model, active = registry.load_active(tmp_path)
    assert active["version"] == "v1" and active["reason"] == "test"
    assert model.predict_proba(build_features(rows.head(3))).shape == (3, 2)
    assert not list(tmp_path.glob(".active-*"))  # no temporary file left behind
    history = (tmp_path / registry.HISTORY).read_text().splitlines()
    assert [json.loads(line)["version"] for line in history] == ["v1"]


def test_a_degraded_candidate_is_blocked_and_the_last_good_model_stays_active(
    sqlite_engine, sqlite_url, tmp_path, monkeypatch
):
    """In one run: a good candidate passes beats_baseline and is promoted. Labels turned to
    noise: the next candidate fails the blocking check, the promotion step does not run, and
    predict_waste keeps using the good model."""
    import dagster as dg
    import sqlalchemy as sa

    from cloudwaste_pipeline import api
    from cloudwaste_pipeline.defs.assets.models import active_waste_model, waste_prediction_model
    from cloudwaste_pipeline.defs.resources import FilesResource, WarehouseResource
    from cloudwaste_pipeline.ml import registry
    from cloudwaste_pipeline.warehouse import schema
    from cloudwaste_pipeline.warehouse.load import bulk_insert

    rows = simulated_rows(1200)
    with sqlite_engine.begin() as conn:
        bulk_insert(conn, schema.ml_training_data, rows)
    models = tmp_path / "models"
    resources = {
        "warehouse": WarehouseResource(database_url=sqlite_url),
        "files": FilesResource(models_dir=str(models)),
    }
    assets = [waste_prediction_model, active_waste_model]
    monkeypatch.setenv("CLOUDWASTE_NOW", "2026-11-20T10:00:00")
    good = dg.materialize(assets, resources=resources)
    checks = good.get_asset_check_evaluations()
    assert [c.passed for c in checks] == [True]
    promoted = registry.active(models)
    assert promoted is not None
    new = rows.drop(columns=["user_action"]).head(5).to_dict("records")
    first = api.predict_waste(pd.DataFrame(new), models_dir=models)
    assert len(first) == 5 and all(0.0 <= p <= 1.0 for p in first)

    ml = schema.ml_training_data
    noise = degraded(rows)
    with sqlite_engine.begin() as conn:
        for resource, action in zip(noise["resource_hash"], noise["user_action"], strict=True):
            conn.execute(
                sa.update(ml).where(ml.c.resource_hash == resource), {"user_action": action}
            )
    api_clock = datetime.now(UTC) + timedelta(seconds=2)  # a later version than the first
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr("cloudwaste_pipeline.settings.now", lambda: api_clock)
        blocked = dg.materialize(assets, resources=resources, raise_on_error=False)
    assert not blocked.success
    assert [c.passed for c in blocked.get_asset_check_evaluations()] == [False]
    assert not blocked.asset_materializations_for_node("active_waste_model")
    assert len(registry.candidates(models)) == 2
    assert registry.active(models)["version"] == promoted["version"]
    assert api.predict_waste(pd.DataFrame(new), models_dir=models) == first


def test_predict_waste_takes_scanner_detections_as_it_takes_their_training_rows(
    tmp_path, monkeypatch
):
    from cloudwaste_pipeline import api
    from cloudwaste_pipeline.ml import registry

    monkeypatch.setenv("CLOUDWASTE_ANONYMIZATION_KEY", KEY.decode())
    with pytest.raises(registry.NoActiveModel):
        api.predict_waste(simulated_detections(2), models_dir=tmp_path)
    path = train.save(train.train(simulated_rows(400), "v1"), tmp_path, START)
    registry.promote(tmp_path, json.loads(path.with_suffix(".json").read_text()), START, "test")
    fresh = simulated_detections(30, seed=99)  # never seen in training
    from_detections = api.predict_waste(fresh, models_dir=tmp_path)
    rows = training_rows(fresh, KEY, date(2026, 10, 1), START)
    assert from_detections == api.predict_waste(rows, models_dir=tmp_path)
    assert len(from_detections) == 30 and all(0 <= p <= 1 for p in from_detections)
    assert len(set(from_detections)) > 1  # it tells resources apart
    assert api.predict_waste([], models_dir=tmp_path) == []
    broken = [{k: v for k, v in fresh[0].items() if k != "resource_type"}]
    with pytest.raises(ValueError, match="resource_type"):
        api.predict_waste(broken, models_dir=tmp_path)
