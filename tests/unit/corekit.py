"""Small builders for core tests: rules from text, events from a few fields."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

from engine.core import Event, run_events
from engine.dsl import CompiledRule, load_rules

T0 = 1_767_225_600_000  # 2026-01-01T00:00:00Z
SEC = 1_000
MIN = 60_000
HOUR = 3_600_000


def rules(text: str) -> tuple[CompiledRule, ...]:
    compiled, problems = load_rules({"test.rules": text})
    assert not problems, problems
    return compiled


def event(event_id: str, at_ms: int, **fields: Any) -> Event:
    data = {"event_id": event_id, "ts": T0 + at_ms, **fields}
    return Event(event_id, T0 + at_ms, data.get("type", "inference"), data)


def steady(
    start_ms: int, end_ms: int, every_ms: int, prefix: str = "e", flagged: Iterable[str] = (), every_nth: int = 0,
    **fields: Any,
) -> Iterator[Event]:  # fmt: skip
    """One event every ``every_ms``; with ``every_nth`` > 0, every nth event carries the ``flagged`` flags."""
    for i, at in enumerate(range(start_ms, end_ms, every_ms)):
        data = dict(fields)
        if flagged:
            hit = every_nth > 0 and i % every_nth == 0
            data["flags"] = {name: hit for name in flagged}
        yield event(f"{prefix}{i}", at, **data)


def merged(*streams: Iterable[Event]) -> list[Event]:
    return sorted((e for s in streams for e in s), key=lambda e: (e.ts, e.event_id))


def of_type(records: list[dict], kind: str) -> list[dict]:
    return [r for r in records if r["type"] == kind]


def offset(record: dict) -> int:
    """A record's ts as ms since T0."""
    from engine.core import parse_ts

    return parse_ts(record["ts"]) - T0


def run(rule_text: str, events: Iterable[Event], **kwargs: Any) -> list[dict]:
    return run_events(rules(rule_text), events, **kwargs)
