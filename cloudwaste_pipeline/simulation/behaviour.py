"""How the simulated users act on detections: a known rule with noise.

The rule depends on features the model can see (scenario, cost, confidence, the env tag), so a
model trained on the simulated history has a real signal to recover, and a test can check it
does (ROC AUC well above the baseline) without any hard-coded score.

- A user acts on a detection with probability ``ACT_PROBABILITY``, after an exponential delay.
- P(deleted | acts) = sigmoid(score + noise), where score adds: unambiguous scenarios
  (unattached volume or disk, unassociated IP, NAT without subnets, empty plan) +1.3; log10 of
  the monthly cost, weighted; dev/test/staging +1.2 and prod -1.4; critical/high confidence +0.5.
- Otherwise the user keeps it (prod, mostly) or ignores it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from cloudwaste_pipeline.simulation.fleet import stable_rng

ACT_PROBABILITY = 0.75
MEAN_DELAY_HOURS = 30.0
NOISE = 0.6
UNAMBIGUOUS = {
    "unattached_volume",
    "unattached_disk",
    "unassociated_ip",
    "no_subnets",
    "empty_plan",
}


@dataclass(frozen=True)
class Decision:
    action: str
    action_at: datetime


def delete_score(detection: dict[str, Any]) -> float:
    env = str((detection.get("tags") or {}).get("env", "")).lower()
    score = -0.6
    score += 1.3 if detection["detection_scenario"] in UNAMBIGUOUS else 0.0
    score += 0.9 * min(math.log10(1.0 + float(detection["cost_monthly"])), 3.0) - 1.0
    score += 1.2 if env in {"dev", "test", "staging"} else (-1.4 if env == "prod" else 0.0)
    score += 0.5 if detection["confidence_level"] in {"critical", "high"} else 0.0
    return score


def decide(seed: int, detection: dict[str, Any], first_seen: datetime) -> Decision | None:
    """What the resource's user does about it, and when (None: never acts)."""
    rng = stable_rng(seed, "user", detection["resource_id"])
    if rng.random() >= ACT_PROBABILITY:
        return None
    delay = timedelta(hours=1.0 + float(rng.exponential(MEAN_DELAY_HOURS)))
    probability = 1.0 / (1.0 + math.exp(-(delete_score(detection) + rng.normal(0.0, NOISE))))
    if rng.random() < probability:
        action = "deleted"
    else:
        prod = str((detection.get("tags") or {}).get("env", "")).lower() == "prod"
        action = "kept" if rng.random() < (0.75 if prod else 0.3) else "ignored"
    return Decision(action, first_seen + delay)
