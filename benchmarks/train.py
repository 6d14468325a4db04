"""The waste model at scale: fit time and inference rows/s on 100,000 labelled rows.

Rows are the scale benchmark's simulated detections (varied env tags), anonymized exactly as
the pipeline does (``derive.training_rows``), labelled by the simulated users' rule with noise
(``simulation.behaviour.decide``). The fit is ``ml.train.train``: the same time split, forest
and metrics as the asset, so the accuracy printed beside the baseline says the signal is found
at this size too. Inference is timed twice: the fitted pipeline on training rows, and
``api.predict_waste`` on raw detections (skops load, anonymize, features, forest).

    python -m benchmarks.train [--rows 100000]
"""

from __future__ import annotations

import argparse
import os
import resource
import secrets
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pandas as pd

from benchmarks.scale import scans
from cloudwaste_pipeline import api
from cloudwaste_pipeline.ml import registry
from cloudwaste_pipeline.ml.features import build_features
from cloudwaste_pipeline.ml.train import save, train
from cloudwaste_pipeline.privacy.derive import training_rows
from cloudwaste_pipeline.simulation.behaviour import decide

ENVS = ("prod", "dev", "staging", "test", "")


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def labelled_rows(rows: int, key: bytes, keep_raw: int = 20_000) -> tuple[pd.DataFrame, list[dict]]:
    """Anonymized, labelled rows (resources acted on only) from ``rows`` detections, and the
    first ``keep_raw`` raw detections acted on (for the API's path)."""
    frames, raw = [], []
    for day, detections in scans(rows, 1_000):
        for n, detection in enumerate(detections):
            detection["tags"] = {"env": ENVS[n % len(ENVS)], "owner": "jane@example.com"}
        collected = datetime.combine(day, datetime.min.time(), tzinfo=UTC) + timedelta(hours=2)
        frame = training_rows(detections, key, day, collected)
        first_seen = collected - timedelta(minutes=30)
        actions = [decide(7, d, first_seen) for d in detections]
        frame["user_action"] = [a.action if a else None for a in actions]
        frames.append(frame[frame["user_action"].notna()])
        if len(raw) < keep_raw:
            raw.extend(d for d, a in zip(detections, actions, strict=True) if a)
    return pd.concat(frames, ignore_index=True), raw


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=100_000, help="labelled rows to train on")
    args = parser.parse_args()
    os.environ.setdefault("CLOUDWASTE_ANONYMIZATION_KEY", secrets.token_hex(32))
    key = os.environ["CLOUDWASTE_ANONYMIZATION_KEY"].encode()

    started = time.perf_counter()
    # The simulated users act on 3 detections in 4: generate enough for ``rows`` labels.
    examples, raw = labelled_rows(int(args.rows / 0.75) + 1_000, key)
    examples, sample = examples.iloc[: args.rows], raw[:20_000]
    del raw
    print(f"{len(examples):,} labelled rows in {time.perf_counter() - started:.1f} s")

    started = time.perf_counter()
    model = train(examples, "bench")
    fit = time.perf_counter() - started
    m = model.metrics
    print(
        f"fit (train {m['train_rows']:,}, test {m['test_rows']:,}, 200 trees, 1 core): "
        f"{fit:.1f} s; accuracy {m['accuracy']} vs baseline {m['baseline_accuracy']}, "
        f"ROC AUC {m['roc_auc']}, Brier {m['brier']} vs {m['baseline_brier']}"
    )

    started = time.perf_counter()
    features = build_features(examples)
    model.pipeline.predict_proba(features)
    seconds = time.perf_counter() - started
    print(f"inference on training rows: {len(examples) / seconds:,.0f} rows/s")

    with tempfile.TemporaryDirectory() as folder:
        trained_at = datetime.now(UTC)
        save(model, Path(folder), trained_at)
        registry.promote(Path(folder), registry.latest_candidate(Path(folder)), trained_at, "bench")
        started = time.perf_counter()
        api.predict_waste(sample, models_dir=folder)  # loads the skops file, then predicts
        seconds = time.perf_counter() - started
    print(f"api.predict_waste from raw detections: {len(sample) / seconds:,.0f} rows/s")
    print(f"peak RSS {peak_rss_mb():.0f} MB")


if __name__ == "__main__":
    main()
