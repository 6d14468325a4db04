"""Cost forecasts: a known trend is recovered, the interval covers what it claims on noisy
histories, young accounts are reported not guessed, and the asset replaces its rows."""

import hashlib
from typing import Any

import dagster as dg
import numpy as np
import pandas as pd
import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from cloudwaste_pipeline.defs.assets.models import cost_forecast
from cloudwaste_pipeline.defs.resources import WarehouseResource
from cloudwaste_pipeline.ml import forecast
from cloudwaste_pipeline.warehouse import schema
from cloudwaste_pipeline.warehouse.load import bulk_insert


def digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def history(
    account: str, spend: list[float], waste: list[float] | None = None, first: int = 0
) -> pd.DataFrame:
    months = [
        forecast.month_name(forecast.month_index("2025-01") + first + i) for i in range(len(spend))
    ]
    return pd.DataFrame(
        {
            "account_hash": digest(account),
            "provider": "aws",
            "month": months,
            "total_spend": spend,
            "waste_detected": waste if waste is not None else [s / 10 for s in spend],
        }
    )


def test_month_arithmetic_crosses_years() -> None:
    assert forecast.month_index("2026-12") + 1 == forecast.month_index("2027-01")
    assert forecast.month_name(forecast.month_index("2026-12") + 2) == "2027-02"


def test_an_exact_trend_is_extended_with_a_zero_width_interval() -> None:
    rows = forecast.forecast_account(history("a", [1000.0 + 50 * i for i in range(8)]))
    spend = rows[rows["metric"] == "total_spend"]
    assert list(spend["month"]) == [
        "2025-09",
        "2025-10",
        "2025-11",
        "2025-12",
        "2026-01",
        "2026-02",
    ]
    assert list(spend["horizon"]) == [1, 2, 3, 4, 5, 6]
    assert list(spend["forecast"]) == pytest.approx([1400, 1450, 1500, 1550, 1600, 1650])
    assert (spend["upper"] - spend["lower"]).abs().max() < 1e-6
    assert set(spend["trend_per_month"]) == {50.0}


def test_intervals_widen_with_the_horizon_and_never_go_below_zero() -> None:
    rng = np.random.default_rng(1)
    rows = forecast.forecast_account(
        history("a", list(200 - 30 * np.arange(6) + rng.normal(0, 20, 6)))
    )
    spend = rows[rows["metric"] == "total_spend"]
    widths = (spend["upper"] - spend["lower"]).to_numpy()
    assert (spend[["forecast", "lower", "upper"]] >= 0).all().all()
    assert (spend["lower"] <= spend["forecast"]).all() and (
        spend["forecast"] <= spend["upper"]
    ).all()
    unclipped = spend["lower"] > 0
    assert np.all(np.diff(widths[unclipped.to_numpy()]) >= 0)


def test_the_interval_covers_about_what_it_claims() -> None:
    """Many noisy linear accounts: the 90% interval of the next month holds the truth about
    9 times in 10 (a binomial band, not a tuned number)."""
    rng = np.random.default_rng(42)
    hits, trials = 0, 400
    for n in range(trials):
        months = int(rng.integers(4, 13))
        slope, level, noise = rng.normal(0, 40), rng.uniform(500, 5000), rng.uniform(10, 200)
        y = level + slope * np.arange(months + 1) + rng.normal(0, noise, months + 1)
        rows = forecast.forecast_account(history(f"a{n}", list(y[:-1])), horizon=1)
        spend = rows[rows["metric"] == "total_spend"].iloc[0]
        hits += int(spend["lower"] <= y[-1] <= spend["upper"])
    assert 0.85 <= hits / trials <= 0.95


def test_young_or_broken_accounts_are_skipped_with_their_reason() -> None:
    trends = pd.concat(
        [
            history("old", [100.0, 110.0, 120.0, 130.0]),
            history("young", [100.0, 110.0]),
            history("gappy", [100.0, float("nan"), float("nan"), 130.0], waste=[1.0] * 4),
        ],
        ignore_index=True,
    )
    rows, skipped = forecast.forecast_accounts(trends)
    assert set(rows["account_hash"]) == {digest("old")}
    reasons = skipped.set_index("account_hash")["reason"]
    assert reasons[digest("young")] == "2 month(s) of cost trends; at least 3 are needed"
    assert "at least 3 months" in reasons[digest("gappy")]
    assert set(rows["history_months"]) == {4} and set(rows["last_month"]) == {"2025-04"}


def test_a_missing_month_is_a_gap_not_a_shift() -> None:
    trends = pd.concat([history("a", [100.0, 200.0]), history("a", [500.0, 600.0], first=4)])
    rows = forecast.forecast_account(trends)
    spend = rows[rows["metric"] == "total_spend"]
    assert spend.iloc[0]["month"] == "2025-07"
    assert spend.iloc[0]["forecast"] == pytest.approx(700.0)


def test_backtest_beats_naive_on_a_trend_and_reports_coverage() -> None:
    rng = np.random.default_rng(3)
    trends = pd.concat(
        [
            history(f"a{n}", list(1000 + 100 * np.arange(12) + rng.normal(0, 10, 12)))
            for n in range(5)
        ]
    )
    result = forecast.backtest(trends)
    assert result["forecasts"] == 5 * 2 * (12 - forecast.MIN_MONTHS)
    assert result["mape"] < result["naive_mape"]
    assert 0 <= result["interval_coverage"] <= 1


def test_the_asset_replaces_its_rows(
    sqlite_engine: Engine, sqlite_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    trends = pd.concat([history("a", [100.0, 120.0, 140.0, 160.0]), history("b", [50.0])])
    rows: list[dict[str, Any]] = [
        r | {"waste_eliminated": 0.0, "waste_percentage": 10.0, "top_waste_categories": []}
        for r in trends.to_dict("records")
    ]
    with sqlite_engine.begin() as conn:
        bulk_insert(conn, schema.cost_trend_data, pd.DataFrame(rows))
    resources = {"warehouse": WarehouseResource(database_url=sqlite_url)}
    config = dg.RunConfig({"cost_forecast": {"config": {"horizon_months": 3}}})
    for _ in range(2):
        result = dg.materialize([cost_forecast], resources=resources, run_config=config)
        assert result.success
    with sqlite_engine.connect() as conn:
        stored = pd.read_sql(sa.select(schema.cost_forecasts), conn)
    assert len(stored) == 3 * 2  # one account, two metrics, three months; b is too young
    spend = stored[stored["metric"] == "total_spend"].sort_values("month")
    assert list(spend["forecast"]) == pytest.approx([180.0, 200.0, 220.0])
    assert set(stored["interval_level"]) == {0.9}
    metadata = result.asset_materializations_for_node("cost_forecast")[0].metadata
    assert metadata["accounts_forecast"].value == 1 and metadata["accounts_skipped"].value == 1
    assert metadata["rows_replaced"].value == 6
    monkeypatch.setenv("CLOUDWASTE_DATABASE_URL", sqlite_url)
    from cloudwaste_pipeline import api

    loaded = api.load_dataset("cost_forecasts")
    assert sorted(loaded["forecast"]) == sorted(stored["forecast"])
