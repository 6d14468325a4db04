"""Train the waste-prediction classifier, honestly measured.

The split is by time (train on older detections, test on newer), because a random split lets the
same users' habits leak from train into test. The score is always reported beside the trivial
baseline (predict the training majority), so an accuracy figure can be read for what it is.
Models are saved with skops, which loads without executing arbitrary pickled code.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from cloudwaste_pipeline.ml.features import CATEGORICAL, NUMERIC, build_features, labels

if TYPE_CHECKING:
    from sklearn.pipeline import Pipeline

TEST_FRACTION = 0.25
MIN_LABELLED = 20
RANDOM_STATE = 0


class NotEnoughLabels(ValueError):
    """Too few labelled resources, or a single class: no model can be measured yet."""


CALIBRATION_BINS = 5
PROMOTION_ALPHA = 0.05
"""The chance that a model no better than the baseline passes the accuracy test by luck."""


@dataclass
class TrainedModel:
    pipeline: Pipeline
    metrics: dict[str, Any]
    version: str
    features: list[str]
    report: dict[str, Any]
    """Confusion matrix, feature importances and calibration bins on the test window."""


ROWS_PER_LEAF = 2_000
"""Training rows per unit of ``min_samples_leaf`` (never below 3): leaves grow with the data."""


def make_pipeline(train_rows: int = 0) -> Pipeline:
    """One-hot categories, median-imputed numbers, a balanced RandomForest.

    The minimum leaf grows with the training set (``train_rows // ROWS_PER_LEAF``, at least 3):
    labels are noisy human decisions, and on 75,000 rows leaves of 3 memorize that noise. At
    that size leaves of 37 fit in three quarters of the time, with a twelfth of the nodes (the
    saved model and its memory) and a better ROC AUC (0.773 vs 0.763, benchmarks/train.py).
    """
    from sklearn.compose import ColumnTransformer
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.impute import SimpleImputer
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import OneHotEncoder

    preprocess = ColumnTransformer(
        [
            ("categorical", OneHotEncoder(handle_unknown="ignore"), CATEGORICAL),
            ("numeric", SimpleImputer(strategy="median", keep_empty_features=True), NUMERIC),
        ]
    )
    forest = RandomForestClassifier(
        n_estimators=200,
        min_samples_leaf=max(3, train_rows // ROWS_PER_LEAF),
        class_weight="balanced",
        random_state=RANDOM_STATE,
        n_jobs=1,
    )
    return Pipeline([("preprocess", preprocess), ("model", forest)])


def time_split(examples: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    ordered = examples.sort_values(["detected_at", "resource_hash"]).reset_index(drop=True)
    cut = round(len(ordered) * (1 - TEST_FRACTION))
    return ordered.iloc[:cut], ordered.iloc[cut:]


def train(examples: pd.DataFrame, version: str) -> TrainedModel:
    """Fit on labelled examples (one per resource, with ``user_action`` set)."""
    from sklearn.metrics import (
        accuracy_score,
        brier_score_loss,
        confusion_matrix,
        precision_score,
        recall_score,
        roc_auc_score,
    )

    if len(examples) < MIN_LABELLED:
        raise NotEnoughLabels(
            f"{len(examples)} labelled resources; at least {MIN_LABELLED} are needed"
        )
    train_rows, test_rows = time_split(examples)
    y_train, y_test = labels(train_rows), labels(test_rows)
    if y_train.nunique() < 2:
        raise NotEnoughLabels("the training window holds a single class (all deleted or none)")
    pipeline = make_pipeline(len(train_rows)).fit(build_features(train_rows), y_train)
    probabilities = pipeline.predict_proba(build_features(test_rows))[:, 1]
    predicted = (probabilities >= 0.5).astype(int)
    majority = int(y_train.mean() >= 0.5)
    base_rate = float(y_train.mean())
    both_classes = y_test.nunique() == 2
    metrics: dict[str, Any] = {
        "train_rows": len(train_rows),
        "test_rows": len(test_rows),
        "positive_rate_train": round(base_rate, 4),
        "accuracy": round(float(accuracy_score(y_test, predicted)), 4),
        "test_correct": int((predicted == y_test.to_numpy()).sum()),
        "baseline_accuracy": round(
            float(accuracy_score(y_test, np.full(len(y_test), majority))), 4
        ),
        "precision": round(float(precision_score(y_test, predicted, zero_division=0)), 4),
        "recall": round(float(recall_score(y_test, predicted, zero_division=0)), 4),
        "roc_auc": round(float(roc_auc_score(y_test, probabilities)), 4) if both_classes else None,
        # Calibration: the Brier score of the probabilities beside that of always saying the
        # training window's positive rate (lower is better).
        "brier": round(float(brier_score_loss(y_test, probabilities)), 4),
        "baseline_brier": round(
            float(brier_score_loss(y_test, np.full(len(y_test), base_rate))), 4
        ),
        "train_window_end": str(train_rows["detected_at"].max()),
        "test_window_start": str(test_rows["detected_at"].min()),
    }
    report = {
        "confusion_matrix": confusion_matrix(y_test, predicted, labels=[0, 1]).tolist(),
        "feature_importances": feature_importances(pipeline),
        "calibration": calibration(y_test.to_numpy(), probabilities),
    }
    return TrainedModel(pipeline, metrics, version, CATEGORICAL + NUMERIC, report)


def feature_importances(pipeline: Pipeline) -> dict[str, float]:
    """The forest's impurity importances per input feature, one-hot columns summed back into
    the categorical feature they encode; largest first."""
    preprocess = pipeline.named_steps["preprocess"]
    encoder = preprocess.named_transformers_["categorical"]
    widths = [len(c) for c in encoder.categories_] + [1] * len(NUMERIC)
    importances = pipeline.named_steps["model"].feature_importances_
    bounds = np.cumsum([0, *widths])
    summed = {
        name: round(float(importances[bounds[i] : bounds[i + 1]].sum()), 4)
        for i, name in enumerate(CATEGORICAL + NUMERIC)
    }
    return dict(sorted(summed.items(), key=lambda item: -item[1]))


def calibration(y_true: np.ndarray, probabilities: np.ndarray) -> list[dict[str, float]]:
    """Reliability bins (quantile bins of the predicted probability): mean predicted beside
    observed deletion rate; a calibrated model's two columns agree."""
    from sklearn.calibration import calibration_curve

    observed, predicted = calibration_curve(
        y_true, probabilities, n_bins=CALIBRATION_BINS, strategy="quantile"
    )
    return [
        {"predicted": round(float(p), 4), "observed": round(float(o), 4)}
        for p, o in zip(predicted, observed, strict=True)
    ]


def promotion_verdict(metrics: dict[str, Any]) -> tuple[bool, str]:
    """Whether a trained model may become the active one, and why.

    It must beat the trivial baselines on the newer, held-out window:

    - accuracy above the majority class's, significantly: a one-sided binomial test of its
      correct predictions against the baseline's accuracy at ``PROMOTION_ALPHA``, so a small
      test window needs a larger margin (19 of 22 against 0.45 passes; 8 of 10 against 0.6
      does not), with no fixed minimum size to tune;
    - a Brier score below that of always saying the base rate (its probabilities are shown to
      users, so they must be better than the base rate);
    - ROC AUC above 0.5 when the window holds both classes.
    """
    from scipy.stats import binomtest

    n = int(metrics["test_rows"])
    correct = int(metrics.get("test_correct", round(metrics["accuracy"] * n)))
    baseline = float(metrics["baseline_accuracy"])
    p_value = binomtest(correct, n, baseline, alternative="greater").pvalue if n else 1.0
    failures = []
    if not (metrics["accuracy"] > baseline and p_value < PROMOTION_ALPHA):
        failures.append(
            f"accuracy {metrics['accuracy']} ({correct}/{n}) not significantly above the "
            f"baseline {baseline} (p = {p_value:.3g})"
        )
    if not metrics["brier"] < metrics["baseline_brier"]:
        failures.append(f"Brier {metrics['brier']} >= baseline {metrics['baseline_brier']}")
    if metrics.get("roc_auc") is not None and not metrics["roc_auc"] > 0.5:
        failures.append(f"ROC AUC {metrics['roc_auc']} <= 0.5")
    if failures:
        return False, "does not beat the baseline: " + "; ".join(failures)
    return True, (
        f"beats the baseline: accuracy {metrics['accuracy']} > {baseline} (p = {p_value:.3g}), "
        f"Brier {metrics['brier']} < {metrics['baseline_brier']}"
    )


def save(model: TrainedModel, folder: Path, trained_at: datetime) -> Path:
    """``waste_prediction_model-<version>.skops`` plus its metadata, written side by side."""
    import skops.io as sio

    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"waste_prediction_model-{model.version}.skops"
    sio.dump(model.pipeline, path)
    meta = {
        "version": model.version,
        "trained_at": trained_at.isoformat(),
        "features": model.features,
        "metrics": model.metrics,
        "report": model.report,
        "file": path.name,
    }
    path.with_suffix(".json").write_text(json.dumps(meta, indent=2, sort_keys=True))
    return path


def load(path: Path) -> Pipeline:
    """Load a saved model, trusting only the scikit-learn/numpy types skops reports."""
    import skops.io as sio

    untrusted = sio.get_untrusted_types(file=path)
    allowed = [t for t in untrusted if t.startswith(("sklearn.", "numpy.", "builtins."))]
    rejected = sorted(set(untrusted) - set(allowed))
    if rejected:
        raise ValueError(f"{path.name} holds types that are not trusted: {rejected}")
    return sio.load(path, trusted=allowed)
