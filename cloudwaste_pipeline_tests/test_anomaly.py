"""Resource anomalies: planted anomalies outrank normal resources, in synthetic series and in
the simulated fleet's own metrics; bad series are reported, never dropped; the asset replaces
its scores and shows no raw id."""

import hashlib
import json
from datetime import date, datetime, timedelta
from typing import Any

import dagster as dg
import numpy as np
import pandas as pd
import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from cloudwaste_pipeline.defs.assets.models import resource_anomaly_model
from cloudwaste_pipeline.defs.resources import WarehouseResource
from cloudwaste_pipeline.ml.anomaly import (
    MIN_POINTS,
    MIN_RESOURCES,
    score_resources,
    series_features,
)
from cloudwaste_pipeline.simulation.fleet import metric_series, stable_rng
from cloudwaste_pipeline.warehouse import schema
from cloudwaste_pipeline.warehouse.load import bulk_insert

START = datetime(2026, 10, 1)
DAYS = 30


def digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def series_row(
    resource: str, metric: str, values: list[float], resource_type: str = "ebs_volume"
) -> dict[str, Any]:
    stamps = [(START + timedelta(days=i)).isoformat() for i in range(len(values))]
    return {
        "resource_hash": digest(resource),
        "account_hash": digest("account"),
        "resource_type": resource_type,
        "provider": "aws",
        "metric_name": metric,
        "metric_values": {"timestamps": stamps, "values": values},
        "aggregation_period": "daily",
        "start_date": START,
        "end_date": START + timedelta(days=len(values) - 1),
        "collected_at": START + timedelta(days=len(values)),
        "scan_date": (START + timedelta(days=len(values))).date(),
    }


def fleet(
    rng: np.random.Generator, normal: int, planted: dict[str, str]
) -> tuple[pd.DataFrame, set[str]]:
    """``normal`` volumes with noisy steady read/write ops at varied levels, plus planted ones:
    ``spike`` (one day 30x), ``shift`` (the last week 20x), ``dead`` (falls to 0)."""
    rows = []
    for n in range(normal + len(planted)):
        name = f"vol-{n}"
        level = float(rng.choice([20.0, 200.0, 2_000.0, 20_000.0]))
        reads = list(np.maximum(0.0, rng.normal(level, level / 5, DAYS)))
        writes = list(np.maximum(0.0, rng.normal(level, level / 5, DAYS)))
        kind = planted.get(name)
        if kind == "spike":
            reads[DAYS - 12] = level * 30
        elif kind == "shift":
            writes[-7:] = [v * 20 for v in writes[-7:]]
        elif kind == "dead":
            reads[-7:] = [0.0] * 7
            writes[-7:] = [0.0] * 7
        rows.append(series_row(name, "VolumeReadOps", reads))
        rows.append(series_row(name, "VolumeWriteOps", writes))
    return pd.DataFrame(rows), {digest(name) for name in planted}


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_planted_anomalies_outrank_every_normal_resource(seed: int) -> None:
    planted = {"vol-40": "spike", "vol-41": "shift", "vol-42": "dead"}
    history, odd = fleet(np.random.default_rng(seed), 40, planted)

    result = score_resources(history)

    scores = result.scores.set_index("resource_hash")["anomaly_score"]
    assert len(scores) == 43 and result.unscored.empty
    assert scores.between(0, 100).all()
    assert scores[list(odd)].min() > scores.drop(list(odd)).max()
    flagged = result.scores.set_index("resource_hash")["is_anomaly"]
    assert flagged[list(odd)].all() and flagged.sum() == len(odd)
    drivers = result.scores.set_index("resource_hash")["main_driver"]
    assert drivers[digest("vol-40")] == "VolumeReadOps spike"
    assert drivers[digest("vol-41")] == "VolumeWriteOps shift"


def test_anomalies_planted_in_the_simulated_fleets_metrics_outrank_the_rest() -> None:
    """The demo fleet's own metric generator (idle and busy volumes and instances, seeded as
    in a replay); a few resources of each type get a burst, a step up in the last week, or go
    dead, and every one of them outranks every untouched resource of its type."""
    rows, planted = [], set()
    kinds = {"volume": "ebs_volume", "instance": "ec2_instance"}
    for n in range(60):
        kind = ("volume", "instance")[n % 2]
        rng = stable_rng(11, "metrics", f"r-{n}")
        _, _, series = metric_series(kind, idle=n % 3 == 0, days=DAYS, rng=rng)
        values = next(iter(series.values()))[1]  # the first metric (CPU, read ops)
        if n >= 54:  # three of each type
            planted.add(digest(f"r-{n}"))
            if n in (54, 55):
                values[DAYS - 10] = max(values) * 25 + 1_000
            elif n in (56, 57):
                values[-7:] = [v * 15 + 1_000 for v in values[-7:]]
            else:
                values[-7:] = [0.0] * 7
        for metric, (_, metric_values) in series.items():
            rows.append(series_row(f"r-{n}", metric, metric_values, kinds[kind]))
    result = score_resources(pd.DataFrame(rows))
    assert result.unscored.empty and len(result.scores) == 60
    for resource_type, group in result.scores.groupby("resource_type"):
        odd = group["resource_hash"].isin(planted)
        assert odd.sum() == 3
        assert group.loc[odd, "anomaly_score"].min() > group.loc[~odd, "anomaly_score"].max(), (
            resource_type
        )
        assert group.loc[odd, "is_anomaly"].all()
        assert group.loc[~odd, "is_anomaly"].sum() <= 1  # of 27 ordinary ones (instances: 70.8)


def test_types_get_their_own_forest_and_small_types_are_reported() -> None:
    history, _ = fleet(np.random.default_rng(5), 20, {})
    few = [
        series_row(f"i-{n}", "CPUUtilization", [30.0 + n] * DAYS, resource_type="ec2_instance")
        for n in range(MIN_RESOURCES - 1)
    ]
    result = score_resources(pd.concat([history, pd.DataFrame(few)], ignore_index=True))
    assert set(result.scores["resource_type"]) == {"ebs_volume"}
    assert len(result.unscored) == MIN_RESOURCES - 1
    assert result.unscored["reason"].str.contains(f"CPUUtilization \\({MIN_RESOURCES - 1}\\)").all()


def test_bad_series_are_unscored_with_their_reason() -> None:
    history, _ = fleet(np.random.default_rng(6), 12, {})
    short = series_row("short", "VolumeReadOps", [1.0] * (MIN_POINTS - 1))
    broken = series_row("broken", "VolumeReadOps", [1.0] * 10)
    broken["metric_values"] = {"values": ["a lot"] * 10}
    missing = series_row("missing", "VolumeReadOps", [1.0] * 10)
    missing["metric_values"] = {"timestamps": []}
    result = score_resources(
        pd.concat([history, pd.DataFrame([short, broken, missing])], ignore_index=True)
    )
    reasons = result.unscored.set_index("resource_hash")["reason"]
    assert reasons[digest("short")] == f"VolumeReadOps: fewer than {MIN_POINTS} daily points"
    assert reasons[digest("broken")] == "VolumeReadOps: non-numeric metric values"
    assert reasons[digest("missing")] == "VolumeReadOps: no value list"
    assert len(result.scores) == 12


def test_only_the_latest_series_of_a_resource_counts() -> None:
    """An older scan's series (here with a huge burst) changes nothing: each scan stores the
    whole window again, and only the one that ends last describes the resource now."""
    history, _ = fleet(np.random.default_rng(7), 20, {})
    old = series_row("vol-0", "VolumeReadOps", [20.0] * 10 + [9e6] + [20.0] * 19)
    old["end_date"] -= timedelta(days=5)
    alone = score_resources(history).scores.set_index("resource_hash")
    both = score_resources(pd.concat([pd.DataFrame([old]), history], ignore_index=True))
    scores = both.scores.set_index("resource_hash")
    assert scores["anomaly_score"].to_dict() == alone["anomaly_score"].to_dict()


def test_series_features_are_scale_free() -> None:
    base = [10.0, 12.0, 11.0, 9.0, 10.0, 11.0, 10.0, 12.0, 30.0, 10.0]
    small, large = series_features(base), series_features([v * 1000 for v in base])
    assert isinstance(small, dict) and isinstance(large, dict)
    assert small == pytest.approx(large, rel=1e-6)
    assert small["spike"] > 0 and small["shift"] > 0
    assert series_features([0.0] * 10) == {"spike": 0.0, "shift": 0.0}
    assert series_features([1.0, float("nan")] * 5) == "metric values that are not finite numbers"


def test_the_asset_replaces_its_scores_and_shows_hashes_only(
    sqlite_engine: Engine, sqlite_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CLOUDWASTE_NOW", "2026-11-02T06:00:00+00:00")
    history, odd = fleet(np.random.default_rng(8), 30, {"vol-30": "spike"})
    stale = series_row("vol-gone", "VolumeReadOps", [5.0] * DAYS)
    stale["scan_date"] = date(2026, 8, 1)  # outside the 30-day lookback: not scored
    with sqlite_engine.begin() as conn:
        bulk_insert(
            conn, schema.cloudwatch_metrics_history, pd.concat([history, pd.DataFrame([stale])])
        )
    resources = {"warehouse": WarehouseResource(database_url=sqlite_url)}
    for _ in range(2):
        result = dg.materialize([resource_anomaly_model], resources=resources)
        assert result.success
    with sqlite_engine.connect() as conn:
        stored = pd.read_sql(sa.select(schema.resource_anomaly_scores), conn)
    assert len(stored) == 31 and stored["resource_hash"].is_unique
    assert digest("vol-gone") not in set(stored["resource_hash"])
    top = stored.sort_values("anomaly_score").iloc[-1]
    assert top["resource_hash"] in odd and bool(top["is_anomaly"])
    metadata = result.asset_materializations_for_node("resource_anomaly_model")[0].metadata
    assert metadata["resources_scored"].value == 31
    assert metadata["rows_replaced"].value == 31
    assert "vol-" not in json.dumps({k: str(v.value) for k, v in metadata.items()})
