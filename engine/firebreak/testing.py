"""Helpers for testing rules and the code around Firebreak: build rules from text, make events,
run them through an engine, read the records — what our own tests use, shipped for yours.

    from firebreak.testing import event, rules, run, of_type, MIN

    pack = rules('rate(pii) > 0.01 over 10m by tenant min 5 events -> sev1 contain disable_feature')
    events = [event(f"e{i}", i * 10_000, tenant="acme", flags={"pii": i % 20 == 0}) for i in range(600)]
    records = run(pack, events)                    # the Python core; engine="native" for the Rust one
    assert of_type(records, "incident.opened") == []

Times are milliseconds after `T0` (2026-01-01T00:00:00Z) unless given. For whole scenarios in
files, see `firebreak test` (docs/rule-tests.md).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from typing import Any

from firebreak.core import Event, parse_ts, run_events
from firebreak.core.events import validate_event
from firebreak.dsl import CompiledRule, load_rules
from firebreak.dsl.diagnostics import render_all
from firebreak.event_types import EventType

__all__ = [
    "HOUR",
    "MIN",
    "SEC",
    "T0",
    "RuleError",
    "event",
    "merged",
    "of_type",
    "offset",
    "report",
    "rules",
    "run",
    "steady",
]

T0 = 1_767_225_600_000  # 2026-01-01T00:00:00Z
SEC = 1_000
MIN = 60_000
HOUR = 3_600_000


class RuleError(ValueError):
    """The rule text does not compile; the message holds every diagnostic, with its line and caret."""


def rules(text: str, vocabulary: str | None = None, policy: str | None = None) -> tuple[CompiledRule, ...]:
    """Compile rule text (one file's worth). ``vocabulary`` / ``policy``: the texts of a
    vocabulary.toml and a policy.toml to load with it (names are checked only with one)."""
    companions = {}
    if vocabulary is not None:
        companions["vocabulary.toml"] = vocabulary
    if policy is not None:
        companions["policy.toml"] = policy
    sources = {"test.rules": text}
    compiled, problems = load_rules(sources, companions if companions else None)
    if problems:
        raise RuleError(render_all(problems, sources | companions))
    return compiled


def event(event_id: str, at_ms: int, *, t0: int = T0, validate: bool = False, **fields: Any) -> Event:
    """An event ``at_ms`` after ``t0`` (an inference event unless ``type=`` says otherwise). Not
    validated unless asked (``validate=True``: as a publisher's would be), so that a test can
    give the core the odd values a lenient source lets through."""
    data = {"event_id": event_id, "ts": t0 + at_ms, **fields}
    if validate:
        return validate_event(data)
    return Event(event_id, t0 + at_ms, data.get("type", EventType.INFERENCE), data)


def report(event_id: str, at_ms: int, *labels: str, t0: int = T0, **fields: Any) -> Event:
    """A user report with these labels (docs/sdk.md#user-reports)."""
    return event(event_id, at_ms, t0=t0, type=EventType.REPORT, labels=list(labels), **fields)


def steady(
    start_ms: int,
    end_ms: int,
    every_ms: int,
    prefix: str = "e",
    flagged: Iterable[str] = (),
    every_nth: int = 0,
    **fields: Any,
) -> Iterator[Event]:
    """One event every ``every_ms``; with ``every_nth`` > 0, every nth event carries the ``flagged`` flags."""
    flagged = tuple(flagged)
    for i, at in enumerate(range(start_ms, end_ms, every_ms)):
        data = dict(fields)
        if flagged:
            hit = every_nth > 0 and i % every_nth == 0
            data["flags"] = {name: hit for name in flagged}
        yield event(f"{prefix}{i}", at, **data)


def merged(*streams: Iterable[Event]) -> list[Event]:
    """Several streams as one, in time order (ties by event id)."""
    return sorted((e for s in streams for e in s), key=lambda e: (e.ts, e.event_id))


def run(
    rule_set: str | Sequence[CompiledRule],
    events: Iterable[Event],
    *,
    lateness_ms: int = 30 * SEC,
    engine: str = "python",
    finish: bool = True,
) -> list[dict[str, Any]]:
    """Every record the engine gives for ``events`` (rule text or compiled rules). ``engine``:
    "python" (the core, the specification) or "native" (the Rust engine: the same records)."""
    compiled = rules(rule_set) if isinstance(rule_set, str) else tuple(rule_set)
    events = list(events)
    if engine == "python":
        return run_events(compiled, events, lateness_ms, finish)
    if engine != "native":
        raise ValueError(f"engine is python or native, not {engine!r}")
    from firebreak.native import NativeEngine

    native = NativeEngine(compiled, lateness_ms)
    records = native.feed_events(events).records
    return records + native.finish() if finish else records


def of_type(records: Iterable[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    """The records of one type (``"incident.opened"``, or a RecordKind)."""
    return [r for r in records if r["type"] == kind]


def offset(record: dict[str, Any], t0: int = T0) -> int:
    """A record's ``ts`` as milliseconds after ``t0``."""
    return parse_ts(record["ts"]) - t0
