"""Operations without Dagster: which accounts stopped delivering scans, and failure alerts.

A daily schedule scans every account, so an account whose last stored scan is older than a day
or two has stopped arriving (revoked role, deleted subscription, a schedule turned off). Dagster's
asset-level freshness sees the asset as fresh as long as *any* partition materialized, so the
per-account view is computed here and surfaced as an asset check. Failure alerts go to the run
log and, when ``CLOUDWASTE_ALERT_WEBHOOK_URL`` is set, to a webhook (Slack-compatible JSON):
their text is scrubbed of cloud ids, as every log line is.
"""

from __future__ import annotations

import json
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date

from cloudwaste_pipeline import settings
from cloudwaste_pipeline.privacy.anonymize import scrub_text

SCAN_MAX_AGE_DAYS = 2  # a daily scan may be late by a day; two missed days is a stopped account
WEBHOOK_ENV = "CLOUDWASTE_ALERT_WEBHOOK_URL"
WEBHOOK_TIMEOUT_SECONDS = 10.0


@dataclass(frozen=True)
class StaleAccount:
    alias: str
    last_scan: date | None  # None: never scanned
    days_since: int | None


def stale_accounts(
    last_scans: Mapping[str, date | None], today: date, max_age_days: int = SCAN_MAX_AGE_DAYS
) -> list[StaleAccount]:
    """Accounts (by alias) whose newest stored scan is more than ``max_age_days`` old, or
    missing, oldest first. ``last_scans`` has every configured account, ``None`` if unscanned."""
    stale = []
    for alias, last in last_scans.items():
        age = None if last is None else (today - last).days
        if age is None or age > max_age_days:
            stale.append(StaleAccount(alias, last, age))
    return sorted(stale, key=lambda s: (s.last_scan is not None, s.last_scan or date.min, s.alias))


def failure_text(job: str, run_id: str, partition: str | None, error: str | None) -> str:
    """One alert line: the job, run and partition (an account alias, never its cloud id), and
    the first line of the error with ids scrubbed."""
    where = f" partition {partition}" if partition else ""
    lines = (error or "").strip().splitlines()
    reason = scrub_text(lines[0])[:300] if lines else "no error message"
    return f"CloudWaste run failed: {job}{where} (run {run_id}): {reason}"


def post_webhook(url: str, text: str, timeout: float = WEBHOOK_TIMEOUT_SECONDS) -> int:
    """POST ``{"text": ...}`` (Slack and Teams incoming webhooks accept it); the HTTP status.

    Raises ``OSError`` (``urllib.error.URLError``) when the hook cannot be reached: the caller
    logs it, an alert channel being down must not fail anything else.
    """
    body = json.dumps({"text": text}).encode()
    request = urllib.request.Request(
        url, data=body, headers={"Content-Type": "application/json"}, method="POST"
    )
    with urllib.request.urlopen(request, timeout=timeout) as response:
        return response.status


def webhook_url() -> str | None:
    return settings.get(WEBHOOK_ENV)
