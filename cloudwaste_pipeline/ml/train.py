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
from typing import Any

import numpy as np
import pandas as pd
import skops.io as sio
from sklearn.compose import ColumnTransformer
from sklearn.ensemble import RandomForestClassifier
from sklearn.impute import SimpleImputer
from sklearn.metrics import accuracy_score, precision_score, recall_score, roc_auc_score
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder

from cloudwaste_pipeline.ml.features import CATEGORICAL, NUMERIC, build_features, labels

TEST_FRACTION = 0.25
MIN_LABELLED = 20
RANDOM_STATE = 0


class NotEnoughLabels(ValueError):
    """Too few labelled resources, or a single class: no model can be measured yet."""


@dataclass
class TrainedModel:
    pipeline: Pipeline
    metrics: dict[str, Any]
    version: str
    features: list[str]


def make_pipeline() -> Pipeline:
    preprocess = ColumnTransformer(
        [
            ("categorical", OneHotEncoder(handle_unknown="ignore"), CATEGORICAL),
            ("numeric", SimpleImputer(strategy="median", keep_empty_features=True), NUMERIC),
        ]
    )
    forest = RandomForestClassifier(
        n_estimators=200,
        min_samples_leaf=3,
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
    if len(examples) < MIN_LABELLED:
        raise NotEnoughLabels(
            f"{len(examples)} labelled resources; at least {MIN_LABELLED} are needed"
        )
    train_rows, test_rows = time_split(examples)
    y_train, y_test = labels(train_rows), labels(test_rows)
    if y_train.nunique() < 2:
        raise NotEnoughLabels("the training window holds a single class (all deleted or none)")
    pipeline = make_pipeline().fit(build_features(train_rows), y_train)
    probabilities = pipeline.predict_proba(build_features(test_rows))[:, 1]
    predicted = (probabilities >= 0.5).astype(int)
    majority = int(y_train.mean() >= 0.5)
    metrics: dict[str, Any] = {
        "train_rows": len(train_rows),
        "test_rows": len(test_rows),
        "positive_rate_train": round(float(y_train.mean()), 4),
        "accuracy": round(float(accuracy_score(y_test, predicted)), 4),
        "baseline_accuracy": round(
            float(accuracy_score(y_test, np.full(len(y_test), majority))), 4
        ),
        "precision": round(float(precision_score(y_test, predicted, zero_division=0)), 4),
        "recall": round(float(recall_score(y_test, predicted, zero_division=0)), 4),
        "roc_auc": round(float(roc_auc_score(y_test, probabilities)), 4)
        if y_test.nunique() == 2
        else None,
        "train_window_end": str(train_rows["detected_at"].max()),
        "test_window_start": str(test_rows["detected_at"].min()),
    }
    return TrainedModel(pipeline, metrics, version, CATEGORICAL + NUMERIC)


def save(model: TrainedModel, folder: Path, trained_at: datetime) -> Path:
    """``waste_prediction_model-<version>.skops`` plus its metadata, written side by side."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"waste_prediction_model-{model.version}.skops"
    sio.dump(model.pipeline, path)
    meta = {
        "version": model.version,
        "trained_at": trained_at.isoformat(),
        "features": model.features,
        "metrics": model.metrics,
        "file": path.name,
    }
    path.with_suffix(".json").write_text(json.dumps(meta, indent=2, sort_keys=True))
    return path


def load(path: Path) -> Pipeline:
    """Load a saved model, trusting only the scikit-learn/numpy types skops reports."""
    untrusted = sio.get_untrusted_types(file=path)
    allowed = [t for t in untrusted if t.startswith(("sklearn.", "numpy.", "builtins."))]
    rejected = sorted(set(untrusted) - set(allowed))
    if rejected:
        raise ValueError(f"{path.name} holds types that are not trusted: {rejected}")
    return sio.load(path, trusted=allowed)
