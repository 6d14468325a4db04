"""Which trained waste model is active: every training is kept as a candidate, one is promoted.

A file registry in the models folder. Each training writes ``waste_prediction_model-<version>``
``.skops`` and ``.json`` (``train.save``); ``active.json`` names the promoted one. It is replaced
atomically (write, then rename), so a reader sees the previous or the new model, never half a
file; a candidate that fails the promotion gate is never written there, so the last good model
stays active. ``promotions.jsonl`` keeps every promotion, for the audit trail.
"""

from __future__ import annotations

import json
import os
import tempfile
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cloudwaste_pipeline.ml import train

if TYPE_CHECKING:
    from sklearn.pipeline import Pipeline

ACTIVE = "active.json"
HISTORY = "promotions.jsonl"
PATTERN = "waste_prediction_model-*.json"


class NoActiveModel(LookupError):
    """No model has been promoted yet in this models folder."""


def candidates(folder: Path) -> list[dict[str, Any]]:
    """The metadata of every saved model, oldest training first."""
    metas = [json.loads(path.read_text()) for path in folder.glob(PATTERN)]
    return sorted(metas, key=lambda meta: (meta["trained_at"], meta["version"]))


def latest_candidate(folder: Path) -> dict[str, Any] | None:
    found = candidates(folder)
    return found[-1] if found else None


def active(folder: Path) -> dict[str, Any] | None:
    """The promoted model's metadata (with ``promoted_at`` and ``reason``), or None."""
    path = folder / ACTIVE
    return json.loads(path.read_text()) if path.exists() else None


def promote(folder: Path, candidate: dict[str, Any], promoted_at: datetime, reason: str) -> None:
    """Make ``candidate`` the active model (atomically) and append it to the history."""
    if not (folder / candidate["file"]).exists():
        raise FileNotFoundError(f"{candidate['file']} is not in {folder}")
    record = {**candidate, "promoted_at": promoted_at.isoformat(), "reason": reason}
    text = json.dumps(record, indent=2, sort_keys=True)
    handle, temporary = tempfile.mkstemp(dir=folder, prefix=".active-", suffix=".json")
    try:
        with os.fdopen(handle, "w") as out:
            out.write(text)
        os.replace(temporary, folder / ACTIVE)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    with (folder / HISTORY).open("a") as history:
        history.write(json.dumps(record, sort_keys=True) + "\n")


def load_active(folder: Path) -> tuple[Pipeline, dict[str, Any]]:
    """The active model (loaded through skops' trusted types) and its metadata."""
    meta = active(folder)
    if meta is None:
        raise NoActiveModel(
            f"no active waste model in {folder}: materialize waste_prediction_model and "
            "active_waste_model (the weekly export job does both)"
        )
    return train.load(folder / meta["file"]), meta
