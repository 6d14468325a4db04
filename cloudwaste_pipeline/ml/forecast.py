"""Monthly spend and waste forecasts per account, with prediction intervals.

The model is an ordinary least-squares linear trend over the account's months (the month's
index as x, so a missing month is a gap, not a shifted point), with the textbook prediction
interval ``yhat +/- t(1 - a/2, n - 2) * s * sqrt(1 + 1/n + (x - mean x)^2 / Sxx)``: it widens
with the horizon and with short or noisy histories, which is the honest answer for a young
account. Spend and waste cannot go below zero, so the forecast and its bounds are clipped at 0.
Why not more: ``cost_trend_data`` holds monthly rates for months, not years, so seasonality
cannot be estimated, and with 3-12 points a trend is all the data supports (Prophet or ARIMA
would fit noise). Numpy and scipy only.

``backtest`` measures it honestly: a rolling origin over the account's own history, each month
forecast from the months before it, beside the naive forecast (next month = this month).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

HORIZON_MONTHS = 6
MIN_MONTHS = 3
INTERVAL = 0.9
METRICS = ("total_spend", "waste_detected")


def month_index(month: str) -> int:
    """``YYYY-MM`` as a month count, so differences are months."""
    year, number = month.split("-")
    return int(year) * 12 + int(number) - 1


def month_name(index: int) -> str:
    return f"{index // 12:04d}-{index % 12 + 1:02d}"


@dataclass(frozen=True)
class Trend:
    """A fitted linear trend and what its intervals need."""

    intercept: float
    slope: float
    n: int
    x_mean: float
    sxx: float
    residual_sd: float

    def predict(self, x: np.ndarray, level: float = INTERVAL) -> tuple[np.ndarray, ...]:
        """Point forecast and the prediction interval's bounds at ``x`` (clipped at 0)."""
        from scipy import stats

        point = self.intercept + self.slope * x
        t = stats.t.ppf(0.5 + level / 2, self.n - 2)
        half = t * self.residual_sd * np.sqrt(1 + 1 / self.n + (x - self.x_mean) ** 2 / self.sxx)
        return np.maximum(point, 0.0), np.maximum(point - half, 0.0), np.maximum(point + half, 0.0)


def fit_trend(x: np.ndarray, y: np.ndarray) -> Trend:
    """OLS of y on x; at least 3 points at 2 distinct x (else no interval can be had)."""
    from scipy import stats

    if len(x) < MIN_MONTHS or len(np.unique(x)) < 2:
        raise ValueError(f"a trend with an interval needs at least {MIN_MONTHS} months")
    fit = stats.linregress(x, y)
    residuals = y - (fit.intercept + fit.slope * x)
    x_mean = float(x.mean())
    return Trend(
        intercept=float(fit.intercept),
        slope=float(fit.slope),
        n=len(x),
        x_mean=x_mean,
        sxx=float(((x - x_mean) ** 2).sum()),
        residual_sd=float(np.sqrt((residuals**2).sum() / (len(x) - 2))),
    )


def _series(history: pd.DataFrame) -> tuple[np.ndarray, dict[str, tuple[np.ndarray, np.ndarray]]]:
    """One account's months as indexes (one per month, in order) and, per metric, the months
    and values where the value is a finite number."""
    history = (
        history.dropna(subset=["month"]).drop_duplicates("month", keep="last").sort_values("month")
    )
    x = np.array([month_index(m) for m in history["month"]], dtype=float)
    points = {}
    for metric in METRICS:
        y = history[metric].to_numpy(dtype=float)
        known = np.isfinite(y)
        points[metric] = (x[known], y[known])
    return x, points


def forecast_account(
    months: pd.DataFrame, horizon: int = HORIZON_MONTHS, level: float = INTERVAL
) -> pd.DataFrame:
    """Forecast rows for one account's history (columns month + METRICS), months after its last.

    Rows: metric, month, horizon (1..``horizon``), forecast, lower, upper, trend_per_month.
    """
    x, points = _series(months)
    last = int(x.max())
    ahead = np.arange(last + 1, last + horizon + 1, dtype=float)
    rows = []
    for metric, (known_x, known_y) in points.items():
        trend = fit_trend(known_x, known_y)
        point, lower, upper = trend.predict(ahead, level)
        for step, (at, p, lo, hi) in enumerate(zip(ahead, point, lower, upper, strict=True), 1):
            rows.append(
                {
                    "metric": metric,
                    "month": month_name(int(at)),
                    "horizon": step,
                    "forecast": round(float(p), 2),
                    "lower": round(float(lo), 2),
                    "upper": round(float(hi), 2),
                    "trend_per_month": round(trend.slope, 2),
                }
            )
    return pd.DataFrame(rows)


def forecast_accounts(
    trends: pd.DataFrame, horizon: int = HORIZON_MONTHS, level: float = INTERVAL
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Forecasts for every account of ``cost_trend_data`` rows, and the accounts left out (why).

    Returns (forecasts with account_hash, provider, history_months, last_month added;
    skipped with account_hash, provider, reason).
    """
    forecasts, skipped = [], []
    for (account, provider), history in trends.groupby(["account_hash", "provider"], sort=True):
        n = history["month"].nunique()
        if n < MIN_MONTHS:
            skipped.append(
                {
                    "account_hash": account,
                    "provider": provider,
                    "reason": f"{n} month(s) of cost trends; at least {MIN_MONTHS} are needed",
                }
            )
            continue
        try:
            rows = forecast_account(history, horizon, level)
        except ValueError as error:  # too few finite values in one metric
            skipped.append({"account_hash": account, "provider": provider, "reason": str(error)})
            continue
        forecasts.append(
            rows.assign(
                account_hash=account,
                provider=provider,
                history_months=n,
                last_month=history["month"].max(),
            )
        )
    columns = ["account_hash", "provider", "reason"]
    return (
        pd.concat(forecasts, ignore_index=True) if forecasts else pd.DataFrame(),
        pd.DataFrame(skipped, columns=columns),
    )


def backtest(trends: pd.DataFrame, level: float = INTERVAL) -> dict[str, float | int]:
    """One-month-ahead errors over every account's history, against the naive forecast.

    For each account and metric, each month with at least ``MIN_MONTHS`` months before it is
    forecast from those months alone. Returns the mean absolute percentage errors (months with
    an actual of 0 excluded from them), the interval's observed coverage and the count.
    """
    errors, naive, covered, total = [], [], 0, 0
    for _, history in trends.groupby("account_hash", sort=True):
        for x, y in _series(history)[1].values():
            for end in range(MIN_MONTHS, len(y)):
                point, lower, upper = fit_trend(x[:end], y[:end]).predict(x[end : end + 1], level)
                total += 1
                covered += int(lower[0] <= y[end] <= upper[0])
                if y[end] != 0:
                    errors.append(abs(point[0] - y[end]) / abs(y[end]))
                    naive.append(abs(y[end - 1] - y[end]) / abs(y[end]))
    return {
        "forecasts": total,
        "mape": round(float(np.mean(errors)) * 100, 2) if errors else float("nan"),
        "naive_mape": round(float(np.mean(naive)) * 100, 2) if naive else float("nan"),
        "interval_coverage": round(covered / total, 3) if total else float("nan"),
    }
