"""Rule unit tests kept next to the rules (promtool-style): ``*.test.toml``.

A test file names its rule files, describes input traffic with times relative
to a start, and lists the records expected at given times:

    rules = ["hallucination.rules"]
    start = "2026-01-01T00:00:00Z"

    [[input]]                       # steady traffic: one event every 2s for 3h
    from = "0m"
    until = "3h"
    every = "2s"                    # durations: ms, s, m, h, d ("500ms", "1h30m")
    event = { service = "support-bot", model = "gpt-4o" }
    users = 200                     # user = u0..u199, in turn (user_prefix = "u")
    flags = { hallucination = 0.02 }  # this fraction flagged, spread evenly

    [[expect]]
    type = "incident.opened"
    rule = "hallucination_spike"
    group = { model = "gpt-4o" }
    between = ["2h", "2h15m"]       # or: at = "2h05m"

Unless the file says ``only_expected = false``, every ``incident.opened``
record must match an expectation: a rule that fires where nobody expected it
fails its test. Expectations with ``absent = true`` assert no such record.
An expectation's ``group`` is a subset match, also against the ``target`` of
containment records; ``at`` is exact, ``between`` inclusive.
Format reference: docs/rule-tests.md.
"""

from __future__ import annotations

import dataclasses
import math
import tomllib
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import orjson

from firebreak.adapters.drive import Driver, decode_event
from firebreak.adapters.rule_files import RuleFileError, read_companion_sources, read_rule_sources
from firebreak.core import Event, InvalidEvent, parse_ts
from firebreak.core.engine import DEFAULT_MAX_SKEW_MS
from firebreak.core.events import EVENT_TYPES
from firebreak.dsl import load_rules
from firebreak.dsl.diagnostics import render_all
from firebreak.durations import DurationError, format_duration, parse_duration
from firebreak.event_types import EventType
from firebreak.records import RecordKind

TEST_SUFFIX = ".test.toml"
MAX_EVENTS_PER_TEST = 2_000_000  # in all the [[input]] blocks of one test file
TOP_KEYS = {"rules", "start", "lateness", "only_expected", "input", "expect"}
INPUT_KEYS = {"from", "until", "every", "at", "event", "users", "user_prefix", "flags", "type"}
EXAMPLE_START = '"2026-01-05T00:00:00Z"'


class SpecError(Exception):
    """A test file that is not a valid test description."""


@dataclass
class Expectation:
    index: int
    fields: dict[str, Any]  # type, rule, group (subset), severity, category, ...
    start_ms: int | None
    end_ms: int | None
    absent: bool = False

    def describe(self, origin: int) -> str:
        parts = [f"{k}={_brief(v)}" for k, v in self.fields.items()]
        if self.start_ms is not None:
            if self.start_ms == self.end_ms:
                parts.append(f"at {_offset(self.start_ms - origin)}")
            else:
                parts.append(f"between {_offset(self.start_ms - origin)} and {_offset(self.end_ms - origin)}")
        return ("no " if self.absent else "") + " ".join(parts)

    def matches(self, record: dict[str, Any]) -> bool:
        for key, want in self.fields.items():
            got = record.get(key)
            if key == "group" and "group" not in record:
                got = record.get("target")  # containment records name their group `target`
            if key == "group" and isinstance(want, dict):
                if not isinstance(got, dict) or any(got.get(k) != v for k, v in want.items()):
                    return False
            elif got != want:
                return False
        if self.start_ms is not None:
            ts = parse_ts(record["ts"])
            if not self.start_ms <= ts <= self.end_ms:
                return False
        return True


@dataclass
class TestOutcome:
    path: str
    expectations: int = 0
    failures: list[str] = field(default_factory=list)
    error: str | None = None
    records: list[dict] = field(default_factory=list)  # every record the rules gave

    @property
    def passed(self) -> bool:
        return self.error is None and not self.failures


def parse_offset(text: Any, where: str) -> int:
    """``"1h30m"``, ``"90s"``, ``"0m"``, ``"250ms"`` → milliseconds (engine/firebreak/durations.py)."""
    try:
        return parse_duration(text)
    except DurationError as error:
        raise SpecError(f"{where}: {error}") from None


def _offset(ms: int) -> str:
    return format_duration(ms)


def generate_events(spec: dict[str, Any], origin: int, source: str = "<test>") -> list[Event]:
    """The events an ``[[input]]`` list describes, in time order. Each block's events are
    checked as replay checks a line (JSON, then the event contract): one line per bad block,
    naming the file (``source``), the block and its first event; at most MAX_EVENTS_PER_TEST
    events in all the blocks of a file."""
    blocks = [_Block.read(n, block, origin) for n, block in enumerate(_tables(spec, "input"))]
    total = sum(b.count for b in blocks)
    if total > MAX_EVENTS_PER_TEST:
        sizes = ", ".join(f"input {b.number}: {b.count}" for b in blocks if b.count)
        raise SpecError(
            f"{source}: {total} events is too many for a rule test (max {MAX_EVENTS_PER_TEST} per file; {sizes})"
        )
    bad = [f"{source}: input {b.number}: {problem}" for b in blocks if (problem := b.problem()) is not None]
    if bad:
        raise SpecError("\n".join(bad))
    events = [item for b in blocks for item in b.events()]
    events.sort(key=lambda item: item[:3])
    return [event for *_, event in events]


@dataclass
class _Block:
    """One ``[[input]]`` block: its times, and the fields every one of its events shares."""

    number: int  # from 1
    begin: int
    every: int
    count: int
    base: dict[str, Any]
    flags: dict[str, float]
    users: int
    prefix: str
    kind: EventType

    @staticmethod
    def read(n: int, block: dict[str, Any], origin: int) -> _Block:
        where = f"input {n + 1}"
        unknown = sorted(set(block) - INPUT_KEYS)
        if unknown:
            raise SpecError(f"{where}: unknown key `{unknown[0]}`; expected {', '.join(sorted(INPUT_KEYS))}")
        begin = origin + parse_offset(block.get("from", "0s"), f"{where}.from")
        if "at" in block:
            begin = origin + parse_offset(block["at"], f"{where}.at")
            end, every = begin + 1, 1
        else:
            end = origin + parse_offset(block.get("until"), f"{where}.until")
            every = parse_offset(block.get("every"), f"{where}.every")
            if every <= 0:
                raise SpecError(f"{where}.every must be longer than zero")
        count = max(0, -(-(end - begin) // every))
        base = block.get("event", {})
        flags = block.get("flags", {})
        users = block.get("users", 0)
        prefix = block.get("user_prefix", "u")
        written = block.get("type", EventType.INFERENCE)
        if written not in EVENT_TYPES:
            raise SpecError(f"{where}: `type` {str(written)[:40]!r} is not one of {', '.join(EVENT_TYPES)}")
        if not isinstance(base, dict) or not isinstance(flags, dict):
            raise SpecError(f"{where}: `event` and `flags` must be tables")
        if isinstance(users, bool) or not isinstance(users, int) or users < 0:
            raise SpecError(f"{where}: `users` must be a whole number of users (u0..uN-1)")
        if not isinstance(prefix, str):
            raise SpecError(f"{where}: `user_prefix` must be a string")
        for name, fraction in flags.items():
            if isinstance(fraction, bool) or not isinstance(fraction, int | float) or not 0 <= fraction <= 1:
                raise SpecError(f"{where}: flags.{name} must be a fraction between 0 and 1")
        return _Block(n + 1, begin, every, count, base, flags, users, prefix, EventType(written))

    def event(self, i: int) -> dict[str, Any]:
        data = dict(self.base)
        data["event_id"] = f"{self.number}-{i}"
        data["type"] = self.kind
        data["ts"] = self.begin + i * self.every
        if self.users:
            data["user"] = f"{self.prefix}{i % self.users}"
        if self.flags:
            fixed = self.base.get("flags", {}) if isinstance(self.base.get("flags"), dict) else {}
            data["flags"] = fixed | {
                name: math.floor((i + 1) * fraction) > math.floor(i * fraction) for name, fraction in self.flags.items()
            }
        return data

    def problem(self) -> str | None:
        """Why this block's events are not events, as replay would say of their JSON lines:
        its first and last events stand for all (they differ only in id, time, user and flags)."""
        for i in sorted({0, self.count - 1}) if self.count else ():
            data = self.event(i)
            try:
                raw = orjson.dumps(data)
            except orjson.JSONEncodeError as error:
                return f"event {data['event_id']} cannot be written as JSON: {error}"
            try:
                decode_event(raw)
            except InvalidEvent as error:
                return f"event {data['event_id']} is not a valid event: {error}"
        return None

    def events(self) -> list[tuple[int, int, int, Event]]:
        base = orjson.loads(orjson.dumps(self.base))  # as replay reads it: TOML dates become text
        plain = dataclasses.replace(self, base=base)
        out = []
        for i in range(self.count):
            data = plain.event(i)
            out.append((data["ts"], self.number, i, Event(data["event_id"], data["ts"], self.kind, data)))
        return out


def parse_expectations(spec: dict[str, Any], origin: int) -> list[Expectation]:
    out = []
    for n, block in enumerate(_tables(spec, "expect")):
        where = f"expect {n + 1}"
        block = dict(block)
        absent = bool(block.pop("absent", False))
        start = end = None
        if "at" in block:
            start = end = origin + parse_offset(block.pop("at"), f"{where}.at")
        elif "between" in block:
            pair = block.pop("between")
            if not isinstance(pair, list) or len(pair) != 2:
                raise SpecError(f'{where}.between: expected ["FROM", "UNTIL"]')
            start, end = (origin + parse_offset(p, f"{where}.between") for p in pair)
        if "type" not in block:
            raise SpecError(f'{where}: `type` is required (e.g. "incident.opened")')
        out.append(Expectation(n + 1, block, start, end, absent))
    return out


def _parse_start(start: Any) -> int:
    """``start``: an RFC 3339 string with a zone, or an unquoted TOML offset date-time."""
    if isinstance(start, datetime):
        if start.tzinfo is None:
            raise SpecError(f"start: {start.isoformat()} has no zone; add Z or an offset")
        start = start.isoformat()
    if not isinstance(start, str):
        raise SpecError(f"start: expected an RFC 3339 time like {EXAMPLE_START}, got {start!r}")
    try:
        return parse_ts(start)
    except ValueError:
        raise SpecError(f"start: `{start}` is not an RFC 3339 time with a zone, like {EXAMPLE_START}") from None


def _tables(spec: dict[str, Any], key: str) -> list[dict[str, Any]]:
    """``[[input]]`` / ``[[expect]]``: a list of tables."""
    blocks = spec.get(key, [])
    if not isinstance(blocks, list) or not all(isinstance(b, dict) for b in blocks):
        raise SpecError(f"`{key}` must be a list of tables: write each one under [[{key}]]")
    return blocks


def run_test_file(path: Path, engine: str | None = None, max_skew_ms: int | None = DEFAULT_MAX_SKEW_MS) -> TestOutcome:
    """Run one rule test; ``engine``: ``python`` or ``native`` (None: drive.default_engine);
    ``max_skew_ms``: the replay engine's maximum skew (`Engine.is_ahead`; None: no bound)."""
    outcome = TestOutcome(str(path))
    try:
        spec = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as error:
        outcome.error = f"cannot read: {error}"
        return outcome
    except tomllib.TOMLDecodeError as error:
        outcome.error = f"not valid TOML: {error}"
        return outcome
    except RecursionError:  # tomllib reads nested tables and arrays recursively
        outcome.error = f"{path}: not readable TOML: tables or arrays nested too deeply"
        return outcome
    try:
        return _run(path, spec, outcome, engine, max_skew_ms)
    except (SpecError, RuleFileError) as error:
        outcome.error = str(error)
        return outcome


def _run(
    path: Path,
    spec: dict[str, Any],
    outcome: TestOutcome,
    engine: str | None = None,
    max_skew_ms: int | None = DEFAULT_MAX_SKEW_MS,
) -> TestOutcome:
    unknown = sorted(set(spec) - TOP_KEYS)
    if unknown:
        raise SpecError(f"unknown key `{unknown[0]}`; expected {', '.join(sorted(TOP_KEYS))}")
    rule_names = spec.get("rules", [path.name.removesuffix(TEST_SUFFIX) + ".rules"])
    if isinstance(rule_names, str):
        rule_names = [rule_names]
    if not isinstance(rule_names, list) or not rule_names or not all(isinstance(n, str) for n in rule_names):
        raise SpecError("`rules` must be a list of rule files, relative to the test file")
    rule_paths = [str(path.parent / name) for name in rule_names]
    sources = read_rule_sources(rule_paths)
    vocabularies = read_companion_sources(rule_paths)
    rules, problems = load_rules(sources, vocabularies)
    if not rules:
        no_rules = f"no rules in {', '.join(rule_names)}"
        outcome.error = (
            "rules do not compile:\n" + render_all(problems, sources | vocabularies) if problems else no_rules
        )
        return outcome
    if "start" not in spec:
        raise SpecError("`start` is required (an RFC 3339 time)")
    origin = _parse_start(spec["start"])
    lateness = parse_offset(spec.get("lateness", "30s"), "lateness")
    events = generate_events(spec, origin, str(path))
    expectations = parse_expectations(spec, origin)
    outcome.expectations = len(expectations)
    driver = Driver(rules, lateness, engine, max_skew_ms=max_skew_ms)
    records = driver.feed_events(events).records + driver.finish()
    outcome.records = records

    matched: set[int] = set()
    for expectation in expectations:
        hits = [i for i, r in enumerate(records) if expectation.matches(r)]
        if expectation.absent:
            if hits:
                got = _listing([records[i] for i in hits], origin)
                outcome.failures.append(f"expected {expectation.describe(origin)}\n  but got:\n{got}")
            continue
        if not hits:
            rule, kind = expectation.fields.get("rule"), expectation.fields.get("type")
            related = [r for r in records if r.get("rule") == rule]
            label = "records of that rule"
            if not related:
                related = [r for r in records if r["type"] == kind]
                label = f"no records of that rule; {kind} records" if rule is not None else f"{kind} records"
            missing = f"missing: {expectation.describe(origin)}\n  {label}:\n"
            outcome.failures.append(missing + _listing(related, origin))
        matched.update(hits)
    if spec.get("only_expected", True):
        extra = [r for i, r in enumerate(records) if r["type"] == RecordKind.OPENED and i not in matched]
        if extra:
            outcome.failures.append("unexpected incidents:\n" + _listing(extra, origin))
    return outcome


def _brief(value: Any) -> str:
    """A table as in the listings (``{model=gpt-4o}``), anything else as itself."""
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}={v}" for k, v in value.items()) + "}"
    return str(value)


def _listing(records: list[dict[str, Any]], origin: int, limit: int = 10) -> str:
    if not records:
        return "    (none)"
    lines = []
    for r in records[:limit]:
        at = _offset(parse_ts(r["ts"]) - origin)
        group = _brief(r.get("group") or r.get("target") or {})
        severity = f" {r['severity']}" if "severity" in r else ""
        detail = f" value={r['value']} threshold={r['threshold']}" if r.get("value") is not None else ""
        if "action" in r:
            detail = f" action={r['action']}"
        lines.append(f"    +{at} {r['type']} rule={r.get('rule')}{severity} {group}{detail}")
    if len(records) > limit:
        lines.append(f"    ... and {len(records) - limit} more")
    return "\n".join(lines)


def collect_test_files(paths: list[str]) -> list[Path]:
    found: list[Path] = []
    for name in paths:
        path = Path(name)
        if path.is_dir():
            found.extend(sorted(path.rglob(f"*{TEST_SUFFIX}")))
        elif path.is_file():
            found.append(path)
        else:
            raise SpecError(f"{name}: no such file or directory")
    return found
