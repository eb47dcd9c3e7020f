"""Check rules against real traffic: `firebreak check rules/ --events sample.jsonl` (or `--topic`).

A rule can pass every static check and still never fire on the events a team really
sends: a flag that is never true, a score that is never a number, a `by` field that
is always missing, a `where` nothing passes, a `min N events` no group reaches. Or it
fires all the time. For each rule this says, over a sample of events:

- for every name it reads (its flag, its field, its `by` and `where` fields): in how
  many events it is present, true (flags) or a number (the metric's field), and how
  many distinct values a `by` field takes;
- how many events pass its `where`, how many groups it makes, the most events one
  group had in one window (against `min N events`);
- how many incidents the engine itself opens over the sample, and for how much of it
  one was open — the sample goes through `Engine.process`, as in a replay;
- warnings: "never fires" (flag never true, field never numeric, nothing passes
  `where`, `min N events` never reached) and "fires all the time".

Events are read with the replays' readers (file_replay.decode_event/open_input,
topic_replay.read_topic_events); bad lines are counted and sampled as in a replay.
The report is data (`TrafficReport`); `render_text` and `to_json` present it.
"""

from __future__ import annotations

import dataclasses
import gzip
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson

from firebreak.adapters.calibration import Calibration, calibrate, reference_text
from firebreak.adapters.calibration import render as render_calibration
from firebreak.adapters.file_replay import InputError, ReplayResult, decode_event, open_input
from firebreak.core import DEFAULT_LATENESS_MS, Engine, Event, InvalidEvent, format_ts, parse_ts
from firebreak.core.engine import _key_part
from firebreak.core.events import format_duration
from firebreak.dsl import CompiledRule, parse_rule
from firebreak.dsl.compiler import getter
from firebreak.dsl.metrics import SUM
from firebreak.dsl.parser import RuleSyntaxError
from firebreak.dsl.vocabulary import NameUse, names_used
from firebreak.event_types import COUNTED, EventType
from firebreak.records import RecordKind, is_incident

MAX_VALUES = 1_000  # distinct values kept per name: "1000+" beyond
MAX_GROUPS = 100_000  # group keys of each `by` list the live worker's native watch counts (native/src/watch.rs)
WATCH_MS = 3_600_000  # event time the live worker watches after loading rules before it warns
WATCH_STARTS = 63  # the first events whose times' median tells a stray first event (native/src/watch.rs STARTS)
WATCH_OUTLIER_MS = 1_800_000  # a first event this far from that median does not start the watch's hour
ALWAYS_OPEN = 0.8  # open at least this share of the time it could fire: "fires all the time"


@dataclass
class NameSeen:
    """One name a rule reads, over the sample's events of the rule's type (inference or report)."""

    role: str  # flag | label | metric | by | where
    path: str
    present: int = 0  # not missing (nor null)
    true: int = 0  # exactly true (flags)
    numeric: int = 0  # a number (not a boolean, not NaN)
    values: int = 0  # distinct values, up to MAX_VALUES

    @property
    def is_flag(self) -> bool:
        return self.path.startswith("flags.") and self.path.count(".") == 1


@dataclass
class RuleTraffic:
    name: str
    location: str  # path:line
    names: list[NameSeen]
    passed: int = 0  # events of its type (inference; report for reports()) that pass `where`
    groups: int = 0
    busiest_window: int = 0  # most events behind the metric in one group's window
    min_events: int = 0  # 0: `min N events` does not gate this rule
    window: str = ""
    warmup: str = ""  # window + baseline span + `for`: traffic needed before it can fire
    opened: int = 0
    groups_fired: int = 0  # groups with at least one incident
    open_share: float = 0.0  # of the time after the warm-up with an incident of the rule open
    warnings: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    counts: EventType = EventType.INFERENCE  # the event type the rule counts
    sample: int = 0  # events of that type in the sample
    reference: str = ""  # what it compares with, and what it does before that exists (warm-up)
    calibration: Calibration | None = None  # with a budget (`--false-per-day`): adapters/calibration.py


@dataclass
class TrafficReport:
    source: str
    read: ReplayResult  # lines/messages, valid events, bad and late inputs with samples
    inference: int = 0
    reports: int = 0  # user reports
    first_ts: int | None = None
    last_ts: int | None = None
    rules: list[RuleTraffic] = field(default_factory=list)

    @property
    def bad(self) -> int:
        return self.read.bad

    @property
    def bad_samples(self) -> list[str]:
        return self.read.bad_samples

    @property
    def bad_noun(self) -> str:
        return self.read.bad_noun

    def warnings(self) -> int:
        return sum(len(r.warnings) for r in self.rules)


# ---- collecting -------------------------------------------------------------------------------


class _PathTally:
    """One event path over the sample; shared by every rule that reads it."""

    def __init__(self, path: tuple[str, ...]) -> None:
        self.path = path
        self.label = path[1] if path[0] == "labels" and len(path) == 2 else None  # a report label
        self.present = self.true = self.numeric = 0
        self.values: set[Any] = set()
        self.distinct: int | None = None  # distinct values as the native watch counted them (`values` unused)

    def add(self, value: Any) -> None:
        """One event's value of the path (for a report label: True when the report carries it, else None)."""
        if value is None:
            return
        self.present += 1
        if value is True:
            self.true += 1
        if _is_number(value):
            self.numeric += 1
        if len(self.values) < MAX_VALUES:
            self.values.add(_hashable(value))

    def seen(self, role: str, dotted: str) -> NameSeen:
        distinct = len(self.values) if self.distinct is None else self.distinct
        return NameSeen(role, dotted, self.present, self.true, self.numeric, distinct)


class _Counted:
    """What rules that count alike share: the events of one type (and report label) that pass
    one `where`, and their groups by one `by`; per step length and metric field, per-step counts
    of the metric's events (`steps`). Rules that differ only in threshold, window, reference or
    metric share one: each event is checked and keyed once."""

    def __init__(self, rule: CompiledRule, index: int = 0) -> None:
        self.source, self.label = rule.source, rule.label
        self.index = index  # of the rule it was made from, in the rules: its plan's label and `where`
        self.where = rule.where
        self.by_paths = rule.by
        self.by_fields: list[int] = []  # indexes of the `by` paths in the event's field values (`_Tallies`)
        self.passed = 0
        self.groups: set[tuple] = set()
        self.native_groups: int | None = None  # groups as the native watch counted them (`groups` unused)
        self.capped = False  # the native watch stopped counting new groups at MAX_GROUPS
        # (step, metric field or None) → {(group, step start): events behind the metric}
        self.metrics: dict[tuple[int, tuple[str, ...] | None], dict[tuple[tuple, int], int]] = {}
        self.steps_of: list[tuple[int, int | None, dict]] = []  # (step, field index or None, counts): `_Tallies`

    @staticmethod
    def key(rule: CompiledRule) -> tuple:
        """Rules with equal keys count the same events alike (`where` compared as plan data)."""
        if rule.where is None:
            where: Any = None
        elif rule.where_plan is not None:
            where = repr(rule.where_plan)
        else:
            where = id(rule)  # a `where` with no plan data: shared with no other rule
        return (rule.source, rule.label, where, rule.by)

    def group_count(self) -> int:
        return len(self.groups) if self.native_groups is None else self.native_groups

    def steps(self, rule: CompiledRule) -> dict[tuple[tuple, int], int]:
        """The per-step counts ``rule``'s metric reads (shared with the rules of the same step and field)."""
        arg = tuple(rule.arg) if rule.metric.numeric and rule.arg else None
        return self.metrics.setdefault((rule.step_ms, arg), {})

    def add(self, ts: int, data: Mapping[str, Any], values: list[Any], keys: dict[tuple, tuple]) -> None:
        """``values``: the event's field values (`_Tallies.fields`); ``keys``: its group keys so far,
        by `by` paths (counts grouped alike share them), as the engine keys its groups (`_key_part`)."""
        if self.label is not None:
            labels = data.get("labels")
            if not (isinstance(labels, list) and self.label in labels):
                return
        if self.where is not None and not self.where(data):
            return
        self.passed += 1
        key = keys.get(self.by_paths)
        if key is None:
            key = keys[self.by_paths] = tuple([_key_part(values[i]) for i in self.by_fields])
        self.groups.add(key)
        for step_ms, at, steps in self.steps_of:
            if at is None or _is_number(values[at]):
                step = (key, ts - ts % step_ms)
                steps[step] = steps.get(step, 0) + 1


class _Tallies:
    """Everything the sample is counted into: per (event type, path) a `_PathTally`, per way of
    counting a `_Counted`, each shared by the rules that read it; `observe` touches each once
    per event (the live watch's hot path: precomputed per event type)."""

    def __init__(self, rules: Sequence[CompiledRule]) -> None:
        self.paths: dict[tuple[str, tuple[str, ...]], _PathTally] = {}  # (event type, path) → its tally
        self.counts: dict[tuple, _Counted] = {}
        self.rules = [
            _RuleTally(rule, _names_of(rule), self.paths, self.counts, index) for index, rule in enumerate(rules)
        ]
        # per event type: the getters of every path read (each read once per event), the path
        # tallies with their value's index (None: a report label) and the counts
        self.by_type: dict[str, tuple[list, list[tuple[_PathTally, int | None]], list[_Counted]]] = {}
        self.fields_of: dict[str, list[tuple[str, ...]]] = {}  # per event type: the paths read (`native_spec`)
        for kind in (EventType.INFERENCE, EventType.REPORT):
            fields: dict[tuple[str, ...], int] = {}
            tallies = [
                (t, None if t.label is not None else fields.setdefault(path, len(fields)))
                for (source, path), t in self.paths.items()
                if source == kind
            ]
            counts = [c for c in self.counts.values() if c.source == kind]
            for counted in counts:
                counted.by_fields = [fields.setdefault(tuple(p), len(fields)) for p in counted.by_paths]
                counted.steps_of = [
                    (step, None if arg is None else fields.setdefault(arg, len(fields)), steps)
                    for (step, arg), steps in counted.metrics.items()
                ]
            self.by_type[kind] = ([getter(path) for path in fields], tallies, counts)
            self.fields_of[kind] = list(fields)

    def native_spec(self) -> dict[str, Any]:
        """The tallies' layout for the native router's watch (native/src/watch.rs, `NativeRouter.watch_start`):
        per event type the paths read, the path tallies (a field index, or a report label), the
        counts (the index of a rule whose label and `where` they count by, `by` field indexes,
        per step and metric field); per rule (event type, count, steps, window) for its busiest
        window."""
        kinds = list(self.by_type)
        spec: dict[str, Any] = {"kinds": [], "rules": []}
        for kind in kinds:
            _, tallies, counts = self.by_type[kind]
            spec["kinds"].append(
                {
                    "kind": str(kind),
                    "paths": [list(path) for path in self.fields_of[kind]],
                    "tallies": [{"field": at, "label": t.label} for t, at in tallies],
                    "counts": [
                        {"rule": c.index, "by": c.by_fields, "steps": [[step, at] for step, at, _ in c.steps_of]}
                        for c in counts
                    ],
                }
            )
        for tally in self.rules:
            counted = tally.counted
            kind = kinds.index(counted.source)
            at = self.by_type[counted.source][2].index(counted)
            steps = next(i for i, (_, _, steps) in enumerate(counted.steps_of) if steps is tally.steps)
            spec["rules"].append([kind, at, steps, tally.rule.window_ms])
        return spec

    def load_native(self, facts: tuple, report: TrafficReport) -> None:
        """The native watch's tallies (`NativeRouter.watch_take`, laid out by `native_spec`) into these
        tallies and ``report``, as if `observe` had counted every event."""
        first, last, report.inference, report.reports, per_kind, busiest = facts
        report.first_ts, report.last_ts = first, last
        for kind, (paths, counts) in zip(self.by_type, per_kind, strict=True):
            _, tallies, counted = self.by_type[kind]
            for (tally, _), (present, true, numeric, distinct) in zip(tallies, paths, strict=True):
                tally.present, tally.true, tally.numeric, tally.distinct = present, true, numeric, distinct
            for c, (passed, groups, capped) in zip(counted, counts, strict=True):
                c.passed, c.native_groups, c.capped = passed, groups, capped
        for tally, most in zip(self.rules, busiest, strict=True):
            tally.busiest = most

    def observe(self, event: Event, report: TrafficReport) -> None:
        """Count one valid event into the names and rules that read its type."""
        kind = event.type
        if kind == EventType.INFERENCE:
            report.inference += 1
        elif kind == EventType.REPORT:
            report.reports += 1
        else:
            return
        getters, tallies, counts = self.by_type[kind]
        data = event.data
        values = [get(data) for get in getters]
        for tally, at in tallies:
            if at is not None:
                tally.add(values[at])
            else:
                labels = data.get("labels")
                tally.add(True if isinstance(labels, list) and tally.label in labels else None)
        keys: dict[tuple, tuple] = {}
        ts = event.ts
        for counted in counts:
            counted.add(ts, data, values, keys)


class _RuleTally:
    """Per rule: the names it reads and how it counts (`_Counted`, shared with the rules that count alike)."""

    def __init__(
        self,
        rule: CompiledRule,
        uses: Sequence[NameUse],
        paths: dict[tuple[str, tuple[str, ...]], _PathTally],
        counts: dict[tuple, _Counted],
        index: int = 0,
    ) -> None:
        self.rule = rule
        self.busiest: int | None = None  # as the native watch found it
        self.names = [
            (role, path, paths.setdefault((rule.source, path), _PathTally(path)))
            for role, path in dict.fromkeys((use.role, use.path) for use in uses)
        ]
        key = _Counted.key(rule)
        self.counted = counts.get(key) or counts.setdefault(key, _Counted(rule, index))
        self.steps = self.counted.steps(rule)

    @property
    def passed(self) -> int:
        return self.counted.passed

    @property
    def groups(self) -> set[tuple]:
        return self.counted.groups

    def busiest_window(self) -> int:
        """The most metric events one group had in one window (whole steps, as the engine counts)."""
        if self.busiest is not None:
            return self.busiest
        per_group: dict[tuple, list[tuple[int, int]]] = {}
        for (key, start), count in self.steps.items():
            per_group.setdefault(key, []).append((start, count))
        best, window = 0, self.rule.window_ms
        for steps in per_group.values():
            steps.sort()
            total, first = 0, 0
            for start, count in steps:
                total += count
                while steps[first][0] <= start - window:
                    total -= steps[first][1]
                    first += 1
                best = max(best, total)
        return best


def _is_number(value: Any) -> bool:
    kind = value.__class__
    return kind is int or (kind is float and value == value)


def _hashable(value: Any) -> Any:
    """A value as a set member; booleans apart from numbers (``True == 1`` in Python), as the engine keys them."""
    if value is None or value.__class__ in (str, int, float):
        return value
    if value.__class__ is bool:
        return ("bool", value)
    return ("json", repr(value))


# ---- running -----------------------------------------------------------------------------------


def check_events(
    events: Iterable[Event],
    rules: Sequence[CompiledRule],
    lateness_ms: int = DEFAULT_LATENESS_MS,
    read: ReplayResult | None = None,
    source: str = "events",
    false_per_day: float | None = None,
) -> TrafficReport:
    """Every rule over ``events``: the sample's facts per rule and the engine's incidents; with
    ``false_per_day``, each rule's incidents a day against that budget and, over it, the least
    stricter setting that meets it (adapters/calibration.py: the sample is then kept in memory)."""
    tallies = _Tallies(rules)
    report = TrafficReport(source, read if read is not None else ReplayResult())
    engine = Engine(rules, lateness_ms)
    records: list[dict[str, Any]] = []
    kept: list[Event] = []
    for event in events:
        if engine.is_late(event):
            report.read.late += 1
            continue
        report.read.events += 1
        if false_per_day is not None:
            kept.append(event)
        if report.first_ts is None or event.ts < report.first_ts:
            report.first_ts = event.ts
        if report.last_ts is None or event.ts > report.last_ts:
            report.last_ts = event.ts
        tallies.observe(event, report)
        records.extend(r for r in engine.process(event) if is_incident(r))
    records.extend(r for r in engine.finish() if is_incident(r))
    span = (report.last_ts - report.first_ts) if report.first_ts is not None else 0
    report.rules = [_rule_traffic(t, records, report, span) for t in tallies.rules]
    if false_per_day is not None:
        for tally, out in zip(tallies.rules, report.rules, strict=True):
            out.calibration = calibrate(tally.rule, out.opened, kept, span, false_per_day, lateness_ms)
    return report


def check_files(
    paths: list[str],
    rules: Sequence[CompiledRule],
    lateness_ms: int = DEFAULT_LATENESS_MS,
    false_per_day: float | None = None,
) -> TrafficReport:
    """`check_events` over JSON-lines files (``-``, ``.gz``); bad lines counted and sampled.
    Raises InputError for a file that cannot be read."""
    read = ReplayResult()
    return check_events(_file_events(paths, read), rules, lateness_ms, read, " ".join(paths), false_per_day)


def check_topic(
    bootstrap: str,
    topic: str,
    since_ms: int,
    until_ms: int,
    rules: Sequence[CompiledRule],
    lateness_ms: int = DEFAULT_LATENESS_MS,
    false_per_day: float | None = None,
) -> TrafficReport:
    """`check_events` over a topic's events with ``since_ms <= ts < until_ms`` (the sample is the
    range: no warm-up is read before it). Raises topic_replay.TopicError for a broker or topic
    that cannot be read."""
    from firebreak.adapters import topic_replay  # imports aiokafka: only for a topic

    read = topic_replay.TopicReplayResult(topic=topic, since=since_ms, until=until_ms)
    events = topic_replay.read_topic_events(
        bootstrap, topic, since_ms, until_ms, on_bad=lambda where, reason, _raw: read.note_bad(where, reason)
    )
    read.lines = len(events) + read.bad
    label = f"{topic} from {format_ts(since_ms)} to {format_ts(until_ms)}"
    return check_events(events, rules, lateness_ms, read, label, false_per_day)


def _file_events(paths: list[str], read: ReplayResult) -> Iterator[Event]:
    for path in paths:
        with open_input(path) as stream:
            try:
                for number, raw in enumerate(stream, start=1):
                    read.lines += 1
                    if not raw.strip():
                        continue
                    try:
                        yield decode_event(raw)
                    except InvalidEvent as error:
                        read.note_bad(f"{path}:{number}", str(error))
            except (OSError, EOFError, gzip.BadGzipFile) as error:
                raise InputError(f"{path}: read failed after line {read.lines}: {error}") from None


# ---- verdicts ----------------------------------------------------------------------------------


def _rule_traffic(tally: _RuleTally, records: list[dict[str, Any]], report: TrafficReport, span: int) -> RuleTraffic:
    rule = tally.rule
    warmup = rule.window_ms + rule.reference_wait_ms + rule.for_ms
    out = RuleTraffic(
        name=rule.name,
        location=f"{rule.path}:{rule.line}",
        names=[t.seen(role, ".".join(path)) for role, path, t in tally.names],
        passed=tally.passed,
        groups=tally.counted.group_count(),
        busiest_window=tally.busiest_window(),
        min_events=rule.min_events if rule.needs_sample else 0,
        window=format_duration(rule.window_ms),
        warmup=format_duration(warmup),
        counts=rule.source,
        sample=report.inference if rule.source is EventType.INFERENCE else report.reports,
        reference=reference_text(rule),
    )
    mine = [r for r in records if r["rule"] == rule.name]
    opened = [r for r in mine if r["type"] == RecordKind.OPENED]
    out.opened = len(opened)
    out.groups_fired = len({tuple(sorted(map(str, r["group"].items()))) for r in opened})
    if report.first_ts is not None and report.last_ts is not None and span > warmup:
        since = report.first_ts + warmup
        out.open_share = _open_time(mine, since, report.last_ts) / (report.last_ts - since)
    out.warnings, out.notes = _verdicts(rule, out, out.sample, span, warmup, tally.counted.capped)
    return out


def _open_time(records: list[dict[str, Any]], since: int, end: int) -> int:
    """How long, between ``since`` and ``end``, at least one incident of the rule was open (the
    union over its groups)."""
    spans: dict[str, list[int]] = {}
    for record in records:
        if record["type"] == RecordKind.OPENED:
            spans[record["incident_id"]] = [parse_ts(record["ts"]), end]
        elif record["type"] == RecordKind.RESOLVED and record["incident_id"] in spans:
            spans[record["incident_id"]][1] = parse_ts(record["ts"])
    total, reach = 0, None
    for start, stop in sorted((max(a, since), min(b, end)) for a, b in spans.values()):
        if stop <= start:
            continue
        if reach is None or start > reach:
            total += stop - start
            reach = stop
        elif stop > reach:
            total += stop - reach
            reach = stop
    return total


def _verdicts(
    rule: CompiledRule,
    out: RuleTraffic,
    inference: int,
    span: int,
    warmup: int,
    capped: bool = False,
) -> tuple[list[str], list[str]]:
    """Every event was counted (`firebreak check` observes each one; the live worker's router
    counts each one it routes), so a flag never true or a label never carried is evidence.
    ``capped``: the native watch counted the windows of its first MAX_GROUPS groups only — the
    busiest of those is then no evidence that no group reaches `min N events`."""
    warnings: list[str] = []
    notes: list[str] = []
    if inference == 0:
        noun = "inference events" if rule.source is EventType.INFERENCE else "user reports (report events)"
        return warnings, [f"no {noun} in the sample: nothing to say"]
    rises = rule.op in {">", ">="}
    for name in out.names:
        if name.role == "label":
            if name.true == 0 and rises:
                warnings.append(
                    f"never fires: no report in the sample carries the label `{name.path[7:]}` ({inference:,} reports)"
                )
        elif name.role == "flag":
            if name.true == 0 and rises:
                warnings.append(
                    f"never fires: flag `{name.path[6:]}` is never true in the sample "
                    f"(present in {name.present:,} of {inference:,} events)"
                )
        elif name.role == "metric":
            if rule.metric.numeric and name.numeric == 0:
                sums = rule.metric is SUM
                why = "the sum is always 0" if sums else f"`{rule.metric.func}` never has a value"
                if not sums or rises:
                    warnings.append(
                        f"never fires: `{name.path}` is never a number in the sample "
                        f"(present in {name.present:,} events): {why}"
                    )
            elif name.present == 0:
                warnings.append(f"never fires: `{name.path}` is missing in every event: `distinct` is always 0")
        elif name.role == "by" and name.present == 0:
            warnings.append(
                f"`by {name.path}`: missing in every event, so every event falls in the one group {name.path}=null"
            )
        elif name.role == "where":
            if name.is_flag and name.true == 0:
                warnings.append(f"`where` reads `{name.path}`, which is never true in the sample")
            elif name.present == 0:
                warnings.append(f"`where` reads `{name.path}`, which is missing in every event")
    never = any(w.startswith("never fires") for w in warnings)  # one reason is enough: the first
    # the missing label said it already
    if out.passed == 0 and not (rule.label is not None and never):
        warnings.append("never fires: no event of the sample passes its `where`")
    elif out.min_events and out.busiest_window < out.min_events and not never and span >= rule.window_ms and not capped:
        # (a sample shorter than one window holds no whole window: its busiest is no evidence)
        warnings.append(
            f"never fires: no group reaches `min {out.min_events} events` in a {out.window} window "
            f"(the most: {out.busiest_window})"
        )
    if out.open_share >= ALWAYS_OPEN:
        warnings.append(
            f"fires all the time: an incident was open {out.open_share:.0%} of the sample "
            f"(after the first {out.warmup})"
        )
    if span < warmup:
        notes.append(
            f"the sample spans {format_duration(span)}; the rule needs {out.warmup} of traffic "
            f"(window{' + baseline span' if rule.baseline_ms and rule.reference_wait_ms == rule.baseline_ms else ''}"
            f"{' + warm-up' if rule.warmup_ms and rule.reference_wait_ms == rule.warmup_ms else ''}"
            f"{' + for' if rule.for_ms else ''}) before it can fire"
        )
    return warnings, notes


# ---- the live worker's view -------------------------------------------------------------------


class TrafficWatch:
    """The traffic check inside the live worker: it watches the events the worker routes (its own
    input partitions) for ``span_ms`` of event time after rules are loaded, then gives the
    warnings, once. Only the warnings that need no incidents: the worker's incidents are its
    real output, not a replay. Costs nothing once it has reported.

    The live worker counts natively, every event it routes: the router keeps the tallies
    (`native_spec` lays them out, `NativeRouter.watch_start`), and when the event time it has seen
    spans ``span_ms`` the worker takes them (`NativeRouter.watch_take`, `load_native`) and reports.
    `observe` and `due` count in Python, event by event — the executable specification the
    native tallies are checked against (tests/unit/native/test_native_traffic_watch.py):

        watch = TrafficWatch(rules)
        for event in events:
            watch.observe(event)
        if watch.due(): warnings = watch.report()
    """

    def __init__(self, rules: Sequence[CompiledRule], span_ms: int = WATCH_MS) -> None:
        # an hour, however long the rules' windows: a rule whose window is longer is judged on
        # everything but its `min N events` (no whole window seen), not waited for
        self.span_ms = span_ms
        self.tallies: _Tallies | None = _Tallies(rules)
        self.report_ = TrafficReport("the worker's input partitions", ReplayResult())
        self.reported = False
        # the times of the first WATCH_STARTS events observed: the hour is measured from the
        # first, not from the smallest time seen (an old but valid event must not end the watch
        # early), or from their median when the first is far from it (native/src/watch.rs)
        self.starts: list[int] = []

    def observe(self, event: Event) -> None:
        if self.reported or event.type not in COUNTED:
            return
        report = self.report_
        if len(self.starts) < WATCH_STARTS:
            self.starts.append(event.ts)
        if report.first_ts is None or event.ts < report.first_ts:
            report.first_ts = event.ts
        if report.last_ts is None or event.ts > report.last_ts:
            report.last_ts = event.ts
        self.tallies.observe(event, report)  # type: ignore[union-attr]  # None once reported

    def native_spec(self) -> bytes:
        """The layout of this watch's tallies for the native router (`NativeRouter.watch_start`): the
        live worker counts every event it routes there."""
        return orjson.dumps(self.tallies.native_spec()) if self.tallies else b"{}"

    def load_native(self, facts: tuple) -> None:
        """What the native router counted (`NativeRouter.watch_take`): every event it routed."""
        if self.tallies is not None and not self.reported:
            self.tallies.load_native(facts, self.report_)

    def due(self) -> bool:
        r = self.report_
        return not self.reported and bool(self.starts) and (r.last_ts or 0) - self.start_ts() >= self.span_ms

    def start_ts(self) -> int:
        """Where the hour starts (`Watch::start`): the first event's time, or the median of the
        first events' times (the upper one of an even count) when the first lies more than half
        an hour from it."""
        median = sorted(self.starts)[len(self.starts) // 2]
        return median if abs(self.starts[0] - median) > WATCH_OUTLIER_MS else self.starts[0]

    def report(self) -> list[tuple[str, str]]:
        """(rule, warning) for every warning over what was seen; the watch stops watching."""
        self.reported = True
        r = self.report_
        span = (r.last_ts or 0) - (r.first_ts or 0)
        r.rules = [_rule_traffic(t, [], r, span) for t in self.tallies.rules] if self.tallies else []
        self.tallies = None
        return [(rule.name, warning) for rule in r.rules for warning in rule.warnings]


def _names_of(rule: CompiledRule) -> list[NameUse]:
    """The names a compiled rule reads, from its canonical text (spans are of that text)."""
    try:
        return names_used(parse_rule(rule.text))
    except RuleSyntaxError:
        return []


# ---- presenting --------------------------------------------------------------------------------


def render_text(report: TrafficReport) -> str:
    read = report.read
    if report.first_ts is None:
        lines = [f"traffic: {report.source}: no events"]
    else:
        span = format_duration(report.last_ts - report.first_ts) if report.last_ts is not None else "0s"
        lines = [
            f"traffic: {report.source}: {read.events:,} events ({report.inference:,} inference, "
            f"{report.reports:,} user reports) from "
            f"{format_ts(report.first_ts)} to {format_ts(report.last_ts or 0)} ({span})"
        ]
    lines.append(f"bad {read.bad_noun}s: {read.bad}   late events: {read.late}")
    for rule in report.rules:
        lines += ["", f"{rule.name}  ({rule.location})"]
        for name in rule.names:
            lines.append(f"  {name.role:<6} {name.path:<24} {_name_facts(name, rule.sample, rule.counts)}")
        gate = f" (min {rule.min_events})" if rule.min_events else ""
        lines.append(
            f"  pass `where`: {rule.passed:,}   groups: {rule.groups:,}   "
            f"busiest {rule.window} window: {rule.busiest_window:,}{gate}"
        )
        lines.append(
            f"  incidents opened: {rule.opened} in {rule.groups_fired} group(s)   "
            f"open {rule.open_share:.0%} of the time after the first {rule.warmup}"
        )
        lines.append(f"  reference: {rule.reference}")
        if rule.calibration is not None:
            lines += render_calibration(rule.calibration)
        lines += [f"  warning: {w}" for w in rule.warnings]
        lines += [f"  note: {n}" for n in rule.notes]
    never = sum(1 for r in report.rules if any(w.startswith("never fires") for w in r.warnings))
    always = sum(1 for r in report.rules if any(w.startswith("fires all the time") for w in r.warnings))
    warned = sum(1 for r in report.rules if r.warnings)
    lines += [
        "",
        f"{len(report.rules)} rules: {never} never fire on this traffic, {always} fire all the time, "
        f"{warned} with warnings ({report.warnings()} in all)",
    ]
    return "\n".join(lines)


def _name_facts(name: NameSeen, sample: int, counts: EventType = EventType.INFERENCE) -> str:
    share = f" ({name.present / sample:.1%})" if sample else ""
    facts = [f"in {name.present:,} of {sample:,} {'events' if counts == EventType.INFERENCE else 'reports'}{share}"]
    if name.is_flag:
        facts.append(f"true in {name.true:,}")
    elif name.role == "metric":
        facts.append(f"a number in {name.numeric:,}")
    if name.role in {"by", "where"} and not name.is_flag:
        facts.append(f"{name.values:,}{'+' if name.values >= MAX_VALUES else ''} values")
    return ", ".join(facts)


def to_json(report: TrafficReport) -> dict[str, Any]:
    read = report.read
    return {
        "source": report.source,
        "events": read.events,
        "inference": report.inference,
        "reports": report.reports,
        "bad": read.bad,
        "late": read.late,
        "from": format_ts(report.first_ts) if report.first_ts is not None else None,
        "to": format_ts(report.last_ts) if report.last_ts is not None else None,
        "rules": [dataclasses.asdict(r) for r in report.rules],
    }
