"""Rule unit tests kept next to the rules (promtool-style): ``*.test.toml``.

A test file names its rule files, describes input traffic with times relative
to a start, and lists the records expected at given times:

    rules = ["hallucination.rules"]
    start = "2026-01-01T00:00:00Z"

    [[input]]                       # steady traffic: one event every 2s for 3h
    from = "0m"
    until = "3h"
    every = "2s"
    event = { service = "support-bot", model = "gpt-4o" }
    users = 200                     # user = u0..u199, in turn
    flags = { hallucination = 0.02 }  # this fraction flagged, spread evenly

    [[expect]]
    type = "incident.opened"
    rule = "hallucination_spike"
    group = { model = "gpt-4o" }
    between = ["2h", "2h15m"]       # or: at = "2h05m"

Unless the file says ``only_expected = false``, every ``incident.opened``
record must match an expectation: a rule that fires where nobody expected it
fails its test. Expectations with ``absent = true`` assert no such record.
Format reference: docs/rule-tests.md.
"""

from __future__ import annotations

import math
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from engine.adapters.rule_files import RuleFileError, read_rule_sources
from engine.core import Engine, Event, parse_ts
from engine.dsl import load_rules
from engine.dsl.checker import DURATION_UNITS
from engine.dsl.diagnostics import render_all

TEST_SUFFIX = ".test.toml"
MAX_EVENTS_PER_TEST = 2_000_000


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
        parts = [f"{k}={v}" for k, v in self.fields.items()]
        if self.start_ms is not None:
            if self.start_ms == self.end_ms:
                parts.append(f"at {_offset(self.start_ms - origin)}")
            else:
                parts.append(f"between {_offset(self.start_ms - origin)} and {_offset(self.end_ms - origin)}")
        return ("no " if self.absent else "") + " ".join(parts)

    def matches(self, record: dict[str, Any]) -> bool:
        for key, want in self.fields.items():
            got = record.get(key)
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

    @property
    def passed(self) -> bool:
        return self.error is None and not self.failures


def parse_offset(text: Any, where: str) -> int:
    """``"1h30m"``, ``"90s"``, ``"0m"`` → milliseconds."""
    if not isinstance(text, str) or not text:
        raise SpecError(f"{where}: expected a duration like \"1h30m\", got {text!r}")
    total, number = 0, ""
    for char in text:
        if char.isdigit():
            number += char
        elif char in DURATION_UNITS and number:
            total += int(number) * DURATION_UNITS[char]
            number = ""
        else:
            raise SpecError(f"{where}: `{text}` is not a duration; use e.g. 90s, 10m, 1h30m")
    if number:
        raise SpecError(f"{where}: `{text}` needs a unit (s, m, h, d)")
    return total


def _offset(ms: int) -> str:
    sign, ms = ("-" if ms < 0 else ""), abs(ms)
    h, rest = divmod(ms, 3_600_000)
    m, rest = divmod(rest, 60_000)
    s = rest / 1000
    text = (f"{h}h" if h else "") + (f"{m}m" if m else "") + (f"{s:g}s" if s or not (h or m) else "")
    return sign + text


def generate_events(spec: dict[str, Any], origin: int) -> list[Event]:
    """The events an ``[[input]]`` list describes, in time order."""
    events: list[tuple[int, int, int, Event]] = []
    for n, block in enumerate(spec.get("input", [])):
        where = f"input {n + 1}"
        if not isinstance(block, dict):
            raise SpecError(f"{where}: expected a table")
        begin = origin + parse_offset(block.get("from", "0s"), f"{where}.from")
        if "at" in block:
            begin = origin + parse_offset(block["at"], f"{where}.at")
            end, every = begin + 1, 1
        else:
            end = origin + parse_offset(block.get("until"), f"{where}.until")
            every = parse_offset(block.get("every"), f"{where}.every")
            if every <= 0:
                raise SpecError(f"{where}.every must be longer than zero")
        count = max(0, math.ceil((end - begin) / every))
        if count > MAX_EVENTS_PER_TEST:
            raise SpecError(f"{where}: {count} events is too many for a rule test (max {MAX_EVENTS_PER_TEST})")
        base = block.get("event", {})
        flags = block.get("flags", {})
        users = block.get("users")
        kind = block.get("type", "inference")
        if not isinstance(base, dict) or not isinstance(flags, dict):
            raise SpecError(f"{where}: `event` and `flags` must be tables")
        for name, fraction in flags.items():
            if isinstance(fraction, bool) or not isinstance(fraction, int | float) or not 0 <= fraction <= 1:
                raise SpecError(f"{where}: flags.{name} must be a fraction between 0 and 1")
        for i in range(count):
            data = dict(base)
            data["event_id"] = f"{n + 1}-{i}"
            data["type"] = kind
            ts = begin + i * every
            data["ts"] = ts
            if users:
                data["user"] = f"u{i % int(users)}"
            if flags:
                data["flags"] = {
                    name: math.floor((i + 1) * fraction) > math.floor(i * fraction) for name, fraction in flags.items()
                }
            events.append((ts, n, i, Event(data["event_id"], ts, kind, data)))
    events.sort(key=lambda item: item[:3])
    return [event for *_, event in events]


def parse_expectations(spec: dict[str, Any], origin: int) -> list[Expectation]:
    out = []
    for n, block in enumerate(spec.get("expect", [])):
        where = f"expect {n + 1}"
        if not isinstance(block, dict):
            raise SpecError(f"{where}: expected a table")
        block = dict(block)
        absent = bool(block.pop("absent", False))
        start = end = None
        if "at" in block:
            start = end = origin + parse_offset(block.pop("at"), f"{where}.at")
        elif "between" in block:
            pair = block.pop("between")
            if not isinstance(pair, list) or len(pair) != 2:
                raise SpecError(f"{where}.between: expected [\"FROM\", \"UNTIL\"]")
            start, end = (origin + parse_offset(p, f"{where}.between") for p in pair)
        if "type" not in block:
            raise SpecError(f"{where}: `type` is required (e.g. \"incident.opened\")")
        out.append(Expectation(n + 1, block, start, end, absent))
    return out


def run_test_file(path: Path) -> TestOutcome:
    outcome = TestOutcome(str(path))
    try:
        spec = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as error:
        outcome.error = f"cannot read: {error}"
        return outcome
    except tomllib.TOMLDecodeError as error:
        outcome.error = f"not valid TOML: {error}"
        return outcome
    try:
        return _run(path, spec, outcome)
    except (SpecError, RuleFileError) as error:
        outcome.error = str(error)
        return outcome


def _run(path: Path, spec: dict[str, Any], outcome: TestOutcome) -> TestOutcome:
    rule_names = spec.get("rules", [path.name.removesuffix(TEST_SUFFIX) + ".rules"])
    if isinstance(rule_names, str):
        rule_names = [rule_names]
    sources = read_rule_sources([str(path.parent / name) for name in rule_names])
    rules, problems = load_rules(sources)
    if not rules:
        outcome.error = "rules do not compile:\n" + render_all(problems, sources)
        return outcome
    if "start" not in spec:
        raise SpecError("`start` is required (an RFC 3339 time)")
    try:
        origin = parse_ts(spec["start"])
    except ValueError as error:
        raise SpecError(f"start: {error}") from None
    lateness = parse_offset(spec.get("lateness", "30s"), "lateness")
    events = generate_events(spec, origin)
    expectations = parse_expectations(spec, origin)
    outcome.expectations = len(expectations)
    engine = Engine(rules, lateness)
    records = []
    for event in events:
        records.extend(engine.process(event))
    records.extend(engine.finish())

    matched: set[int] = set()
    for expectation in expectations:
        hits = [i for i, r in enumerate(records) if expectation.matches(r)]
        if expectation.absent:
            if hits:
                got = _listing([records[i] for i in hits], origin)
                outcome.failures.append(f"expected {expectation.describe(origin)}\n  but got:\n{got}")
            continue
        if not hits:
            related = [r for r in records if r.get("rule") == expectation.fields.get("rule")] or [
                r for r in records if r["type"] == expectation.fields.get("type")
            ]
            outcome.failures.append(
                f"missing: {expectation.describe(origin)}\n  records of that rule:\n" + _listing(related, origin)
            )
        matched.update(hits)
    if spec.get("only_expected", True):
        extra = [r for i, r in enumerate(records) if r["type"] == "incident.opened" and i not in matched]
        if extra:
            outcome.failures.append("unexpected incidents:\n" + _listing(extra, origin))
    return outcome


def _listing(records: list[dict[str, Any]], origin: int, limit: int = 10) -> str:
    if not records:
        return "    (none)"
    lines = []
    for r in records[:limit]:
        at = _offset(parse_ts(r["ts"]) - origin)
        group = ", ".join(f"{k}={v}" for k, v in (r.get("group") or r.get("target") or {}).items())
        severity = f" {r['severity']}" if "severity" in r else ""
        lines.append(f"    +{at} {r['type']} rule={r.get('rule')}{severity} {{{group}}}")
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
