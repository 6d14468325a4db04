"""The models: the waste classifier (trained, gated, promoted), resource anomalies, forecasts.

Training and promotion are separate steps: ``waste_prediction_model`` trains and saves a
candidate and reports it, with a blocking ``beats_baseline`` check; ``active_waste_model``
promotes the candidate, so a failing check stops the promotion in the same run, and the
promotion asset applies the same verdict again when materialized on its own.
"""

from typing import Any

import dagster as dg
import pandas as pd
import sqlalchemy as sa

from cloudwaste_pipeline import settings
from cloudwaste_pipeline.defs.metadata import preview
from cloudwaste_pipeline.defs.resources import FilesResource, WarehouseResource
from cloudwaste_pipeline.ml import registry
from cloudwaste_pipeline.ml import train as training
from cloudwaste_pipeline.ml.features import one_per_resource
from cloudwaste_pipeline.warehouse import queries, schema

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
