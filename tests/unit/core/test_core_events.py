"""The event contract: what validates, what is rejected and why."""

from __future__ import annotations

import pytest
from firebreak.core import InvalidEvent, format_ts, parse_ts, validate_event
from firebreak.core.events import format_duration

GOOD = {"event_id": "e1", "ts": "2026-01-01T00:00:00Z"}


@pytest.mark.parametrize(
    ("ts", "ms"),
    [
        ("2026-01-01T00:00:00Z", 1_767_225_600_000),
        ("2026-01-01T01:00:00+01:00", 1_767_225_600_000),
        ("2026-01-01T00:00:00.250Z", 1_767_225_600_250),
        ("2026-01-01T00:00:00.000999Z", 1_767_225_600_000),  # sub-millisecond truncates
        (1_767_225_600_123, 1_767_225_600_123),
        (1_767_225_600_123.9, 1_767_225_600_123),
    ],
)
def test_timestamps(ts, ms):
    assert parse_ts(ts) == ms


@pytest.mark.parametrize(
    ("obj", "reason"),
    [
        ([], "an event is a JSON object, not list"),
        ({"ts": 1}, "`event_id` is missing"),
        ({"event_id": 7, "ts": 1}, "`event_id` must be a non-empty string"),
        ({"event_id": ""}, "`event_id` must be a non-empty string"),
        ({"event_id": "e"}, "`ts` is missing"),
        ({"event_id": "e", "ts": "yesterday"}, "`ts` 'yesterday' is not an RFC 3339 time"),
        ({"event_id": "e", "ts": "2026-01-01T00:00:00"}, "has no zone"),
        ({"event_id": "e", "ts": True}, "not a boolean"),
        ({"event_id": "e", "ts": -5}, "out of range"),
        ({**GOOD, "type": "metric"}, "`type` 'metric' is not one of inference, change"),
        ({**GOOD, "model": 4}, "`model` must be a string"),
        ({**GOOD, "latency_ms": "fast"}, "`latency_ms` must be a number"),
        ({**GOOD, "cost_usd": True}, "`cost_usd` must be a number"),
        ({**GOOD, "flags": {"pii": "yes"}}, "`flags` must be an object of booleans"),
        ({**GOOD, "flags": [True]}, "`flags` must be an object of booleans"),
        ({**GOOD, "scores": {"quality": "high"}}, "`scores` must be an object of numbers"),
        ({**GOOD, "type": "change"}, "a change event needs `kind`"),
        ({**GOOD, "type": "change", "kind": "reboot"}, "a change event needs `kind`"),
    ],
)
def test_invalid_events_say_why(obj, reason):
    with pytest.raises(InvalidEvent) as error:
        validate_event(obj)
    assert reason in str(error.value)


def test_valid_event_keeps_other_fields_addressable():
    event = validate_event({**GOOD, "region": {"name": "eu"}, "flags": {"pii": False}, "scores": {"q": 0.5}})
    assert event.event_id == "e1" and event.type == "inference" and event.ts == 1_767_225_600_000
    assert event.data["region"] == {"name": "eu"}


def test_change_event():
    event = validate_event({**GOOD, "type": "change", "kind": "model_update", "model": "m"})
    assert event.type == "change"


@pytest.mark.parametrize(
    ("ms", "text"),
    [(1_767_225_600_000, "2026-01-01T00:00:00Z"), (1_767_225_600_250, "2026-01-01T00:00:00.250Z")],
)
def test_format_ts(ms, text):
    assert format_ts(ms) == text
    assert parse_ts(text) == ms


@pytest.mark.parametrize(
    ("ms", "text"),
    [
        (0, "0s"),
        (250, "250ms"),
        (1_500, "1.5s"),
        (20_502, "20.5s"),
        (45_000, "45s"),
        (90_000, "1m30s"),
        (299_954, "4m59s"),
        (3_600_000, "1h"),
        (3_630_000, "1h30s"),
        (3_900_000, "1h5m"),
    ],
)
def test_format_duration(ms, text):
    assert format_duration(ms) == text
