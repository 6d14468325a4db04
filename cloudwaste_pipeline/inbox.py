"""JSON-lines drop folder for user actions, for apps that cannot reach the database.

Each ``*.jsonl`` file holds one event per line (the fields of ``api.record_user_action``). Valid
events go to the outbox (a repeated event id is ignored), bad lines to quarantine with
``file:line`` and the reason; the file then moves to ``processed/`` so it is read once.
"""

import json
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import pandas as pd
from sqlalchemy.engine import Engine

from cloudwaste_pipeline.privacy.derive import naive_utc, validate_action_event
from cloudwaste_pipeline.warehouse import schema
from cloudwaste_pipeline.warehouse.load import insert_new

FIELDS = ("event_id", "user_id", "account_id", "provider", "resource_id", "action", "action_at")


@dataclass
class IngestReport:
    files: list[str] = field(default_factory=list)
    events: int = 0
    quarantined: int = 0


def parse_line(line: str) -> tuple[dict[str, Any] | None, str | None]:
    """(event, None) for a usable line, (None, reason) otherwise."""
    try:
        event = json.loads(line)
    except json.JSONDecodeError as exc:
        return None, f"malformed JSON ({exc.msg})"
    if not isinstance(event, dict):
        return None, "a line must be a JSON object"
    problem = validate_action_event(event)
    return (None, problem) if problem else (event, None)


def ingest_folder(engine: Engine, folder: Path, now: datetime) -> IngestReport:
    report = IngestReport()
    if not folder.is_dir():
        return report
    done = folder / "processed"
    for path in sorted(folder.glob("*.jsonl")):
        good, bad = [], []
        for number, line in enumerate(path.read_text(errors="replace").splitlines(), 1):
            if not line.strip():
                continue
            event, reason = parse_line(line)
            if event is None:
                bad.append(
                    {
                        "source": "user_action_file",
                        "source_ref": f"{path.name}:{number}",
                        "payload": {"line": line[:2000]},
                        "reason": reason,
                        "quarantined_at": naive_utc(now),
                    }
                )
                continue
            good.append(
                {
                    **{k: str(event[k]) for k in FIELDS if k != "action_at"},
                    "action_at": naive_utc(str(event["action_at"])),
                    "context": event.get("context"),
                    "received_at": naive_utc(now),
                }
            )
        with engine.begin() as conn:
            report.events += insert_new(
                conn, schema.resource_action_events, pd.DataFrame(good), ["event_id"]
            )
            report.quarantined += insert_new(
                conn, schema.quarantine, pd.DataFrame(bad), ["source", "source_ref"]
            )
        done.mkdir(exist_ok=True)
        path.replace(done / path.name)
        report.files.append(path.name)
    return report
