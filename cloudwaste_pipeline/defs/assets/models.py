"""The models: the waste classifier (trained, gated, promoted), resource anomalies, forecasts.

Training and promotion are separate steps: ``waste_prediction_model`` trains and saves a
candidate and reports it, with a blocking ``beats_baseline`` check; ``active_waste_model``
promotes the candidate, so a failing check stops the promotion in the same run, and the
promotion asset applies the same verdict again when materialized on its own.
"""

from datetime import date, timedelta
from typing import Any

import dagster as dg
import pandas as pd
import sqlalchemy as sa

from cloudwaste_pipeline import settings
from cloudwaste_pipeline.defs.metadata import preview
from cloudwaste_pipeline.defs.resources import FilesResource, WarehouseResource
from cloudwaste_pipeline.ml import anomaly, forecast, registry
from cloudwaste_pipeline.ml import train as training
from cloudwaste_pipeline.ml.features import one_per_resource
from cloudwaste_pipeline.warehouse import queries, schema
from cloudwaste_pipeline.warehouse.load import replace_rows

ALL = dg.AllPartitionMapping()
GROUP = "ml"
OWNERS = ["team:ml"]


def labelled_examples(conn: sa.Connection) -> pd.DataFrame:
    """One example per labelled resource: its first detection (see ml.features)."""
    ml = schema.ml_training_data
    rows = queries.frame(conn, sa.select(ml).where(ml.c.user_action.is_not(None)))
    return one_per_resource(rows) if not rows.empty else rows


def report_metadata(report: dict[str, Any]) -> dict[str, dg.MetadataValue]:
    """Confusion matrix, importances and calibration as markdown tables for the UI."""
    (tn, fp), (fn, tp) = report["confusion_matrix"]
    importances = report["feature_importances"]
    return {
        "confusion_matrix": preview(
            pd.DataFrame(
                [["actual kept/ignored", tn, fp], ["actual deleted", fn, tp]],
                columns=["", "predicted kept/ignored", "predicted deleted"],
            )
        ),
        "feature_importances": preview(
            pd.DataFrame({"feature": list(importances), "importance": list(importances.values())})
        ),
        "calibration": preview(
            pd.DataFrame(report["calibration"]).rename(
                columns={
                    "predicted": "mean predicted P(deleted)",
                    "observed": "observed deletion rate",
                }
            )
        ),
    }


@dg.asset(
    group_name=GROUP,
    kinds={"scikitlearn", "python"},
    owners=OWNERS,
    deps=[dg.AssetDep("ml_training_data", partition_mapping=ALL), "user_action_patterns"],
    check_specs=[
        dg.AssetCheckSpec(
            "beats_baseline",
            asset="waste_prediction_model",
            blocking=True,
            description=(
                "On the newer, held-out window the candidate beats the majority-class accuracy "
                "and the base-rate Brier score (ROC AUC > 0.5): otherwise it is not promoted."
            ),
        )
    ],
    description=(
        "A candidate RandomForest predicting which detections users delete (deleted vs "
        "kept/ignored), trained on one example per resource with a time-aware split and "
        "reported beside the trivial baselines. Saved with skops under $CLOUDWASTE_HOME/models; "
        "active_waste_model promotes it when beats_baseline passes."
    ),
)
def waste_prediction_model(
    context: dg.AssetExecutionContext, warehouse: WarehouseResource, files: FilesResource
) -> dg.MaterializeResult:
    with warehouse.engine().connect() as conn:
        examples = labelled_examples(conn)
    trained_at = settings.now()
    version = trained_at.strftime("%Y%m%dT%H%M%SZ")
    try:
        model = training.train(examples, version)
    except training.NotEnoughLabels as exc:
        raise dg.Failure(description=f"cannot train yet: {exc}") from exc
    path = training.save(model, files.models(), trained_at)
    metrics = model.metrics
    passed, reason = training.promotion_verdict(metrics)
    context.log.info(f"candidate {version}: {reason}; ROC AUC {metrics['roc_auc']}")
    return dg.MaterializeResult(
        metadata={
            "version": version,
            "model_path": dg.MetadataValue.path(str(path)),
            **{k: v for k, v in metrics.items() if isinstance(v, int | float)},
            **report_metadata(model.report),
        },
        check_results=[
            dg.AssetCheckResult(
                check_name="beats_baseline",
                passed=passed,
                metadata={
                    "reason": reason,
                    "accuracy": metrics["accuracy"],
                    "baseline_accuracy": metrics["baseline_accuracy"],
                    "brier": metrics["brier"],
                    "baseline_brier": metrics["baseline_brier"],
                },
            )
        ],
    )


@dg.asset(
    group_name=GROUP,
    kinds={"scikitlearn", "python"},
    owners=OWNERS,
    deps=["waste_prediction_model"],
    description=(
        "The model predict_waste uses: the latest candidate when it beats the baseline, else "
        "the last good one stays active ($CLOUDWASTE_HOME/models/active.json)."
    ),
)
def active_waste_model(
    context: dg.AssetExecutionContext, files: FilesResource
) -> dg.MaterializeResult:
    folder = files.models()
    candidate = registry.latest_candidate(folder)
    if candidate is None:
        raise dg.Failure(description="no trained candidate: materialize waste_prediction_model")
    current = registry.active(folder)
    passed, reason = training.promotion_verdict(candidate["metrics"])
    if passed and (current is None or current["version"] != candidate["version"]):
        registry.promote(folder, candidate, settings.now(), reason)
        active = candidate
        context.log.info(f"promoted {candidate['version']}: {reason}")
    else:
        active = current
        context.log.warning(
            f"kept {current['version'] if current else 'no model'} active; "
            f"candidate {candidate['version']} {reason}"
        )
    return dg.MaterializeResult(
        metadata={
            "active_version": active["version"] if active else "none",
            "candidate_version": candidate["version"],
            "promoted": bool(passed and active is candidate),
            "verdict": reason,
            **(
                {
                    k: v
                    for k, v in active["metrics"].items()
                    if k in ("accuracy", "baseline_accuracy", "roc_auc", "brier")
                    and isinstance(v, int | float)
                }
                if active
                else {}
            ),
        }
    )


# --- resource anomalies -------------------------------------------------------------------------


class AnomalyConfig(dg.Config):
    lookback_days: int = 30
    """Score the resources whose metrics were collected in the last N days (the current ones)."""


def latest_metric_rows(conn: sa.Connection, since: date) -> pd.DataFrame:
    """Per resource and metric, the series that ends last among those collected since ``since``:
    each scan stores a resource's whole window again, so older rows add nothing."""
    cw = schema.cloudwatch_metrics_history
    recent = cw.c.scan_date >= since
    latest = (
        sa.select(cw.c.resource_hash, cw.c.metric_name, sa.func.max(cw.c.end_date).label("end"))
        .where(recent)
        .group_by(cw.c.resource_hash, cw.c.metric_name)
        .subquery()
    )
    query = sa.select(cw).join(
        latest,
        sa.and_(
            cw.c.resource_hash == latest.c.resource_hash,
            cw.c.metric_name == latest.c.metric_name,
            cw.c.end_date == latest.c.end,
        ),
    )
    return queries.frame(conn, query.where(recent))


@dg.asset(
    group_name=GROUP,
    kinds={"scikitlearn", "python"},
    owners=OWNERS,
    deps=[dg.AssetDep("cloudwatch_metrics_history", partition_mapping=ALL)],
    description=(
        "An Isolation Forest per resource type and metric over the latest series of each "
        "current resource (a burst against its own days, last week's shift), anomaly scores "
        "0-100 in resource_anomaly_scores (rebuilt whole), with the feature that drives each."
    ),
)
def resource_anomaly_model(
    context: dg.AssetExecutionContext, config: AnomalyConfig, warehouse: WarehouseResource
) -> dg.MaterializeResult:
    since = settings.today() - timedelta(days=config.lookback_days)
    with warehouse.engine().connect() as conn:
        history = latest_metric_rows(conn, since)
    result = anomaly.score_resources(history)
    scores = result.scores.assign(scored_at=settings.now().replace(tzinfo=None))
    table = schema.resource_anomaly_scores
    with warehouse.engine().begin() as conn:
        replaced, _ = replace_rows(conn, table, sa.true(), [scores] if len(scores) else [])
    unscored = result.unscored
    if not unscored.empty:
        context.log.warning(
            f"{len(unscored)} resource(s) not scored: "
            + "; ".join(f"{n} x {r}" for r, n in unscored["reason"].value_counts().items())
        )
    top = scores.head(20).assign(resource=scores["resource_hash"].str[:12])
    return dg.MaterializeResult(
        metadata={
            "resources_scored": len(scores),
            "anomalies": int(scores["is_anomaly"].sum()),
            "resources_not_scored": len(unscored),
            "rows_replaced": replaced,
            "max_score": float(scores["anomaly_score"].max()) if len(scores) else 0.0,
            "top_anomalies": preview(
                top[["resource", "resource_type", "anomaly_score", "is_anomaly", "main_driver"]]
            ),
            "not_scored": preview(
                unscored["reason"].value_counts().rename_axis("reason").reset_index()
            ),
        }
    )


# --- cost forecasts -----------------------------------------------------------------------------


class ForecastConfig(dg.Config):
    horizon_months: int = 6
    interval: float = 0.9
    """The prediction interval's coverage (0.9: the actual month falls inside 9 times in 10)."""


@dg.asset(
    group_name=GROUP,
    kinds={"scipy", "python"},
    owners=OWNERS,
    deps=[dg.AssetDep("cost_trend_data", partition_mapping=ALL)],
    description=(
        "Monthly spend and waste per account, 1-6 months ahead with prediction intervals (a "
        "linear trend with t intervals), in cost_forecasts (rebuilt whole), with a rolling "
        "backtest beside the naive forecast."
    ),
)
def cost_forecast(
    context: dg.AssetExecutionContext, config: ForecastConfig, warehouse: WarehouseResource
) -> dg.MaterializeResult:
    if not 1 <= config.horizon_months <= 24 or not 0 < config.interval < 1:
        raise dg.Failure(description="horizon_months must be 1-24 and interval in (0, 1)")
    ct = schema.cost_trend_data
    with warehouse.engine().connect() as conn:
        trends = queries.frame(
            conn,
            sa.select(
                ct.c.account_hash, ct.c.provider, ct.c.month, *(ct.c[m] for m in forecast.METRICS)
            ),
        )
    rows, skipped = forecast.forecast_accounts(trends, config.horizon_months, config.interval)
    backtest = forecast.backtest(trends, config.interval) if not trends.empty else {}
    table = schema.cost_forecasts
    if not rows.empty:
        rows = rows.assign(
            interval_level=config.interval, generated_at=settings.now().replace(tzinfo=None)
        )[[c.name for c in table.c if c.name != "id"]]
    with warehouse.engine().begin() as conn:
        replaced, _ = replace_rows(conn, table, sa.true(), [rows] if len(rows) else [])
    if not skipped.empty:
        context.log.warning(f"{len(skipped)} account(s) not forecast: {skipped['reason'].iloc[0]}")
    fleet = (
        rows.groupby(["metric", "month"], as_index=False)["forecast"]
        .sum()
        .pivot(index="month", columns="metric", values="forecast")
        .reset_index()
        if not rows.empty
        else pd.DataFrame()
    )
    return dg.MaterializeResult(
        metadata={
            "accounts_forecast": int(rows["account_hash"].nunique()) if not rows.empty else 0,
            "accounts_skipped": len(skipped),
            "rows_replaced": replaced,
            **{f"backtest_{k}": v for k, v in backtest.items()},
            "fleet_forecast": preview(fleet),
        }
    )
