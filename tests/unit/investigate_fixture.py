"""An example investigation report, as `firebreak investigate --format json` prints it (`Report.to_json()`).

A hallucination spike on gpt-4o after a model update: two hours of one-minute steps, a baseline
that starts after ten minutes of history (null before), a gap of two steps with no traffic, the
spike from 01:19, containment at 01:22, escalation, and resolution at 01:40. Tests import
`REPORT` (never modify it: copy it with `report()`).
"""

from __future__ import annotations

import copy
import math
from typing import Any

from firebreak.core import format_ts, parse_ts

START = parse_ts("2026-01-01T00:00:00Z")
STEP = 60_000
SPIKE = {79: 0.017, 80: 0.031, 81: 0.083, 82: 0.121, 83: 0.14, 84: 0.136, 85: 0.118, 86: 0.097, 87: 0.074}
GAP = {46, 47}  # steps with no events in the window: value is null


def _ts(step: int) -> str:
    return format_ts(START + step * STEP)


def _points() -> list[dict[str, Any]]:
    points = []
    for i in range(120):
        noise = 0.0016 * math.sin(i * 1.7) + 0.0009 * math.cos(i * 0.61)
        value: float | None = round(0.0118 + noise, 5)
        if i in SPIKE:
            value = SPIKE[i]
        elif 88 <= i < 100:  # traffic on the fallback model: the rate decays back to normal
            value = round(0.0118 + (0.074 - 0.0118) * 0.62 ** (i - 87) + noise, 5)
        events = 0 if i in GAP else 560 + int(90 * math.sin(i / 19))
        if i in GAP:
            value = None
        if i < 10:
            baseline = None
        elif i < 81:
            baseline = round(0.0119 + 0.0003 * math.sin(i / 7), 5)
        else:
            baseline = 0.012  # frozen at onset while the incident is open
        threshold = None if baseline is None else round(3 * baseline, 5)
        points.append({"ts": _ts(i), "value": value, "baseline": baseline, "threshold": threshold, "events": events})
    return points


RULE_TEXT = (
    "rule hallucination_spike:\n"
    "  rate(hallucination) > 3x baseline over 10m by model\n"
    '  -> sev2 contain fallback(model="small-safe") notify "#ai-oncall"'
)

REPORT: dict[str, Any] = {
    "incident": {
        "incident_id": "inc_7f3a9c2e1b40",
        "rule": "hallucination_spike",
        "rule_text": RULE_TEXT,
        "category": "hallucination",
        "severity": "sev1",
        "initial_severity": "sev2",
        "group": {"model": "gpt-4o"},
        "metric": "rate(hallucination)",
        "op": ">",
        "window_ms": 600_000,
        "step_ms": STEP,
        "opened": _ts(82),
        "resolved": _ts(100),
        "value": 0.121,
        "baseline": 0.012,
        "threshold": 0.036,
        "peak": 0.14,
        "users_affected": 1234,
        "events": 567,
    },
    "range": {
        "since": _ts(0),
        "until": _ts(120),
        "events": 123_456,
        "changes": 14,
        "source": "files: events-2026-01-01.jsonl.gz",
    },
    "timeline": [
        {
            "ts": "2026-01-01T01:18:00Z",
            "kind": "cause",
            "label": "model_update gpt-4o 2024-08-06 → 2024-11-20",
            "ref": "chg-1-0003",
            "lag_ms": -41_000,
        },
        {
            "ts": "2026-01-01T01:18:41Z",
            "kind": "first_anomalous_event",
            "label": "first flagged event after the change",
            "ref": "ev-1-081234",
            "lag_ms": 0,
        },
        {
            "ts": "2026-01-01T01:21:00Z",
            "kind": "onset",
            "label": "rate(hallucination) 0.083 > 0.036",
            "ref": None,
            "lag_ms": 139_000,
        },
        {
            "ts": "2026-01-01T01:22:00Z",
            "kind": "detected",
            "label": "incident opened, sev2",
            "ref": "inc_7f3a9c2e1b40",
            "lag_ms": 199_000,
        },
        {
            "ts": "2026-01-01T01:22:00Z",
            "kind": "contained",
            "label": 'fallback(model="small-safe")',
            "ref": "cmd_5d1e0a",
            "lag_ms": 199_000,
        },
        {
            "ts": "2026-01-01T01:27:00Z",
            "kind": "escalated",
            "label": "sev2 → sev1 (impact: 1,000+ users)",
            "ref": "inc_7f3a9c2e1b40",
            "lag_ms": 499_000,
        },
        {
            "ts": "2026-01-01T01:40:00Z",
            "kind": "resolved",
            "label": "condition false for a full window",
            "ref": "inc_7f3a9c2e1b40",
            "lag_ms": 1_279_000,
        },
        {
            "ts": "2026-01-01T01:40:00Z",
            "kind": "released",
            "label": "fallback released",
            "ref": "cmd_5d1e0a",
            "lag_ms": 1_279_000,
        },
    ],
    "lags": {
        "time_to_detect_ms": 199_000,
        "time_to_contain_ms": 199_000,
        "time_to_resolve_ms": 1_279_000,
        "cause_to_onset_ms": 180_000,
    },
    "series": {"step_ms": STEP, "points": _points()},
    "suspected_causes": [
        {
            "rank": 1,
            "event_id": "chg-1-0003",
            "kind": "model_update",
            "ts": "2026-01-01T01:18:00Z",
            "score": 0.91,
            "proximity": 0.95,
            "match": 0.9,
            "prior": 1.0,
            "before_onset_ms": 180_000,
            "dimensions": {"model": "gpt-4o", "model_version": "2024-11-20"},
            "description": "gpt-4o updated from 2024-08-06 to 2024-11-20",
            "why": "3m before onset; touches the incident's model; "
            "model_version=2024-11-20 carries 82% of flagged events",
        },
        {
            "rank": 2,
            "event_id": "chg-1-0002",
            "kind": "prompt_change",
            "ts": "2026-01-01T01:05:00Z",
            "score": 0.34,
            "proximity": 0.55,
            "match": 0.5,
            "prior": 0.8,
            "before_onset_ms": 960_000,
            "dimensions": {"tenant": "acme", "prompt_version": "v42"},
            "description": "acme support prompt v41 → v42",
            "why": "16m before onset; tenant acme is over-represented (lift 1.3), "
            "but the prompt is used by one tenant only",
        },
        {
            "rank": 3,
            "event_id": "chg-1-0005",
            "kind": "config_change",
            "ts": "2026-01-01T01:24:00Z",
            "score": 0.12,
            "proximity": 0.2,
            "match": 0.3,
            "prior": 0.6,
            "before_onset_ms": -180_000,
            "dimensions": {"service": "retrieval", "key": "top_k"},
            "description": "retrieval top_k 8 → 6",
            "why": "after the onset, so it cannot have started it",
        },
    ],
    "contributors": [
        {
            "dimension": "model_version",
            "value": "2024-11-20",
            "lift": 3.4,
            "share": 0.82,
            "baseline_share": 0.0,
            "flagged": 410,
            "events": 4000,
        },
        {
            "dimension": "tenant",
            "value": "acme",
            "lift": 1.3,
            "share": 0.46,
            "baseline_share": 0.35,
            "flagged": 230,
            "events": 2100,
        },
        {
            "dimension": "region",
            "value": "eu-west-1",
            "lift": 1.1,
            "share": 0.58,
            "baseline_share": 0.52,
            "flagged": 290,
            "events": 2700,
        },
        {
            "dimension": "prompt_version",
            "value": "v42",
            "lift": 1.05,
            "share": 0.21,
            "baseline_share": 0.2,
            "flagged": 105,
            "events": 900,
        },
        {
            "dimension": "user_tier",
            "value": "free",
            "lift": 0.9,
            "share": 0.55,
            "baseline_share": 0.61,
            "flagged": 275,
            "events": 2500,
        },
    ],
    "adversarial": {
        "suspected": False,
        "flagged": 12,
        "top_users": [
            {"value": "usr_0f9e21", "share": 0.4, "flagged": 5},
            {"value": "usr_83ab10", "share": 0.17, "flagged": 2},
        ],
        "top_tenants": [{"value": "acme", "share": 0.9, "flagged": 11}],
        "why": "flagged events spread over 1,234 users; no user has more than 1% of them",
    },
    "evidence": ["ev-1-081234", "ev-1-081240", "ev-1-081311", "ev-1-081502", "ev-1-081877"],
    "review": {
        "impact": "1,234 users received answers flagged as hallucinated from gpt-4o for 18m (567 flagged events)",
        "time_to_detect": "3m 19s",
        "time_to_contain": "3m 19s",
        "cause_candidates": [
            "model_update chg-1-0003: gpt-4o 2024-08-06 → 2024-11-20 (score 0.91)",
            "prompt_change chg-1-0002: acme support prompt v41 → v42 (score 0.34)",
        ],
        "follow_ups": [
            "Roll back gpt-4o to 2024-08-06 or gate 2024-11-20 behind an evaluation",
            "Add a canary check for hallucination rate to the model rollout",
            "Review the fallback capacity of small-safe",
        ],
        "monitoring_suggestion": {
            "why": "the spike crossed 3x baseline 3m after the first flagged event; a shorter window would have "
            "opened the incident about 2m earlier",
            "rule_text": "rule hallucination_spike_fast:\n  rate(hallucination) > 4x baseline over 5m by model\n"
            '  -> sev2 contain fallback(model="small-safe") notify "#ai-oncall"',
        },
    },
    "notes": ["2 steps without events (00:46, 00:47): no value", "baseline needs 10m of history; none before 00:10"],
}


def report() -> dict[str, Any]:
    """A deep copy of REPORT, safe to modify."""
    return copy.deepcopy(REPORT)
