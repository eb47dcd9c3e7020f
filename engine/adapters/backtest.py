"""`firebreak backtest`: two versions of the rules over the same history, incident by incident.

    backtest = compare(old_records, new_records, old_names, new_names, truths)   # pure
    print(render_text(backtest))  /  to_json(backtest)                           # pure
    run = run_backtest(old_rules, new_rules, source, lateness_ms)                 # the I/O

``compare`` takes two lists of records (what `firebreak replay` writes) and pairs each
incident the old rules open with the one the new rules open for the same thing (same rule
and group — or, for a renamed rule, same group and category — with overlapping open
intervals). Every incident lands in exactly one row: ``both``, ``only old`` or ``only new``.
With ground truth (``firebreak demo``'s truth.json) it also says, per injected incident,
when each version first detected it. The runner replays the events once per rule version
through the same code as `firebreak replay`; the event source is file paths or any
iterable of events (a topic reader, a test list).
"""

from __future__ import annotations

import dataclasses
import shutil
import statistics
import sys
import tempfile
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from engine.adapters.demo import IncidentRow, incident_rows, match
from engine.adapters.file_replay import MAX_REPORTED_BAD_LINES, ReplayResult, replay_files
from engine.core import DEFAULT_LATENESS_MS, Engine, Event, format_ts, parse_ts
from engine.dsl import CompiledRule
from engine.synthetic import GroundTruth

BOTH, ONLY_OLD, ONLY_NEW = "both", "only old", "only new"
INCIDENT_TYPES = frozenset({"incident.opened", "incident.escalated", "incident.resolved"})


# ---- incidents, from records ------------------------------------------------------------------


@dataclass(frozen=True)
class Incident:
    incident_id: str
    rule: str
    category: str
    group: dict[str, Any]
    opened: int
    onset: int  # the first step at which the condition held (the `onset` field): opened − onset is the `for` delay
    resolved: int | None  # None: still open at the end of the input
    severity: str  # final, after escalations
    first_severity: str
    truth: GroundTruth | None = None  # the injected incident it detects (same category, same target, in time)

    @property
    def group_key(self) -> str:
        return group_key(self.group)

    @property
    def lag_ms(self) -> int:
        return self.opened - self.onset

    def overlaps(self, other: Incident) -> bool:
        """Open intervals [opened, resolved] overlap; an unresolved incident is open to the end
        of the input. Both ends are included: one resolving at T and the other opening at T overlap."""
        return (self.resolved is None or other.opened <= self.resolved) and (
            other.resolved is None or self.opened <= other.resolved
        )


def group_key(group: dict[str, Any]) -> str:
    """Canonical JSON of a group: equal groups, equal keys (true and 1 stay apart)."""
    return orjson.dumps(group, option=orjson.OPT_SORT_KEYS).decode()


def incidents(records: Iterable[dict[str, Any]], truths: list[GroundTruth] | None = None) -> list[Incident]:
    """The incidents the records describe (opened, then escalated/resolved), each tied to the
    injected incident it detects when ``truths`` are given (demo.match: same category, a group
    pointing at the target, opened from 5 minutes before onset to 15 after the end)."""
    records = [r for r in records if r.get("type") in INCIDENT_TYPES]
    onsets = {r["incident_id"]: parse_ts(r["onset"]) for r in records if r["type"] == "incident.opened"}
    rows: list[IncidentRow] = incident_rows(records)
    if truths:
        match(rows, truths, {})
    out = []
    for row in rows:
        out.append(Incident(row.incident_id, row.rule, row.category, row.group, row.opened, onsets[row.incident_id],
                            row.resolved, row.severity, row.first_severity, row.truth))  # fmt: skip
    return out


# ---- the comparison (pure) ------------------------------------------------------------------------


@dataclass(frozen=True)
class Row:
    status: str  # both | only old | only new
    old: Incident | None
    new: Incident | None
    renamed: bool = False  # paired by group and category: the rule has another name in the other version

    @property
    def first(self) -> Incident:
        return min((i for i in (self.old, self.new) if i is not None), key=lambda i: i.opened)

    @property
    def truth(self) -> GroundTruth | None:
        """The injected incident either side detects (with --truth)."""
        return next((i.truth for i in (self.old, self.new) if i is not None and i.truth is not None), None)

    @property
    def delta_ms(self) -> int | None:
        """new − old opening time: negative when the new rules detect earlier."""
        return self.new.opened - self.old.opened if self.old is not None and self.new is not None else None

    @property
    def severity_differs(self) -> bool:
        return self.old is not None and self.new is not None and self.old.severity != self.new.severity


@dataclass(frozen=True)
class RuleCount:
    rule: str
    old: int | None  # incidents opened; None: no such rule in that version
    new: int | None


@dataclass(frozen=True)
class TruthRow:
    truth: GroundTruth
    old: Incident | None  # the first incident of that version detecting it
    new: Incident | None

    @property
    def ttd_old_ms(self) -> int | None:
        return self.old.opened - self.truth.onset_ts if self.old is not None else None

    @property
    def ttd_new_ms(self) -> int | None:
        return self.new.opened - self.truth.onset_ts if self.new is not None else None

    @property
    def difference_ms(self) -> int | None:
        """TTD new − TTD old: negative when the new rules detect it earlier."""
        return self.new.opened - self.old.opened if self.old is not None and self.new is not None else None


@dataclass(frozen=True)
class Backtest:
    rows: tuple[Row, ...]
    counts: tuple[RuleCount, ...]
    truths: tuple[TruthRow, ...] | None = None  # None: no ground truth given

    def _count(self, status: str) -> int:
        return sum(1 for row in self.rows if row.status == status)

    @property
    def summary(self) -> dict[str, Any]:
        deltas = [row.delta_ms for row in self.rows if row.delta_ms is not None]
        out = {
            "old_incidents": sum(1 for row in self.rows if row.old is not None),
            "new_incidents": sum(1 for row in self.rows if row.new is not None),
            "both": len(deltas),
            "only_old": self._count(ONLY_OLD),
            "only_new": self._count(ONLY_NEW),
            "renamed": sum(1 for row in self.rows if row.renamed),
            "new_earlier": sum(1 for d in deltas if d < 0),
            "new_later": sum(1 for d in deltas if d > 0),
            "same_time": sum(1 for d in deltas if d == 0),
            "median_delta_ms": round(statistics.median(deltas)) if deltas else None,
            "severity_differs": sum(1 for row in self.rows if row.severity_differs),
        }
        if self.truths is not None:
            out["truths"] = len(self.truths)
            out["truths_detected_old"] = sum(1 for t in self.truths if t.old is not None)
            out["truths_detected_new"] = sum(1 for t in self.truths if t.new is not None)
        return out


def compare(
    old_records: Iterable[dict[str, Any]],
    new_records: Iterable[dict[str, Any]],
    old_rules: Iterable[str] | None = None,
    new_rules: Iterable[str] | None = None,
    truths: list[GroundTruth] | None = None,
    since_ms: int | None = None,
) -> Backtest:
    """Pair the incidents of two rule versions run over the same events.

    ``old_rules``/``new_rules``: the rule names of each version (default: those that opened
    something). They decide what counts as renamed: the second pass pairs an old incident of
    a rule missing from the new version with a new incident of a rule missing from the old
    one, on the same group and category — never two rules both versions have.
    ``since_ms``: rows in which every incident opened before it are left out (a warm-up read
    before the range); pairing is done first, so a row with one side before it stays."""
    old, new = incidents(old_records, truths), incidents(new_records, truths)
    old_names = set(old_rules) if old_rules is not None else {i.rule for i in old}
    new_names = set(new_rules) if new_rules is not None else {i.rule for i in new}
    rows = [Row(BOTH, o, n) for o, n in _pair(old, new, lambda o, n: o.rule == n.rule)]
    taken = {id(i) for row in rows for i in (row.old, row.new)}
    old_left = [i for i in old if id(i) not in taken and i.rule not in new_names]
    new_left = [i for i in new if id(i) not in taken and i.rule not in old_names]
    rows += [Row(BOTH, o, n, renamed=True) for o, n in _pair(old_left, new_left, lambda o, n: o.category == n.category)]
    taken = {id(i) for row in rows for i in (row.old, row.new)}
    rows += [Row(ONLY_OLD, i, None) for i in old if id(i) not in taken]
    rows += [Row(ONLY_NEW, None, i) for i in new if id(i) not in taken]
    rows.sort(key=lambda r: (r.first.opened, r.first.rule, r.first.group_key))
    if since_ms is not None:
        rows = [row for row in rows if any(i is not None and i.opened >= since_ms for i in (row.old, row.new))]
        old = [row.old for row in rows if row.old is not None]
        new = [row.new for row in rows if row.new is not None]
    return Backtest(tuple(rows), _counts(old, new, old_names, new_names), _truth_rows(old, new, truths))


def _pair(old: list[Incident], new: list[Incident], same: Callable[[Incident, Incident], bool]) -> list[tuple]:
    """One-to-one pairs on the same group with overlapping intervals, closest openings first."""
    candidates = sorted(
        (abs(n.opened - o.opened), o.opened, n.opened, i, j)
        for i, o in enumerate(old)
        for j, n in enumerate(new)
        if o.group_key == n.group_key and same(o, n) and o.overlaps(n)
    )
    used_old: set[int] = set()
    used_new: set[int] = set()
    pairs = []
    for *_, i, j in candidates:
        if i not in used_old and j not in used_new:
            used_old.add(i)
            used_new.add(j)
            pairs.append((old[i], new[j]))
    return pairs


def _counts(old: list[Incident], new: list[Incident], old_names: set[str], new_names: set[str]) -> tuple:
    opened_old, opened_new = Counter(i.rule for i in old), Counter(i.rule for i in new)
    names = sorted(old_names | new_names | set(opened_old) | set(opened_new))
    counts = []
    for name in names:
        in_old, in_new = name in old_names or name in opened_old, name in new_names or name in opened_new
        counts.append(RuleCount(name, opened_old[name] if in_old else None, opened_new[name] if in_new else None))
    return tuple(counts)


def _truth_rows(old: list[Incident], new: list[Incident], truths: list[GroundTruth] | None) -> tuple | None:
    if truths is None:
        return None

    def first(found: list[Incident], truth: GroundTruth) -> Incident | None:
        hits = [i for i in found if i.truth is truth]
        return min(hits, key=lambda i: (i.opened, i.rule)) if hits else None

    return tuple(TruthRow(truth, first(old, truth), first(new, truth)) for truth in truths)


# ---- ground truth files --------------------------------------------------------------------------


class TruthFileError(Exception):
    """A --truth file that cannot be read as ground truth."""


def read_truths(path: str) -> list[GroundTruth]:
    """``firebreak demo``'s truth.json (a JSON array), or the same objects one per line."""
    try:
        data = Path(path).read_bytes()
    except OSError as error:
        raise TruthFileError(f"{path}: cannot open: {error.strerror or error}") from None
    try:
        parsed = orjson.loads(data)
        items = parsed if isinstance(parsed, list) else [parsed]
    except orjson.JSONDecodeError:
        items = []
        for number, line in enumerate(data.splitlines(), start=1):
            if line.strip():
                try:
                    items.append(orjson.loads(line))
                except orjson.JSONDecodeError as error:
                    raise TruthFileError(f"{path}:{number}: invalid JSON: {error}") from None
    return [_truth(path, number, item) for number, item in enumerate(items, start=1)]


def _truth(path: str, number: int, item: Any) -> GroundTruth:
    names = {f.name for f in dataclasses.fields(GroundTruth)}
    required = ("category", "dimension", "value", "onset_ts", "end_ts")
    if not isinstance(item, dict):
        raise TruthFileError(f"{path}: truth {number}: expected an object, not {type(item).__name__}")
    missing = [k for k in required if k not in item]
    unknown = sorted(set(item) - names)
    if missing or unknown:
        problem = f"missing {', '.join(missing)}" if missing else f"unknown key {', '.join(unknown)}"
        raise TruthFileError(f"{path}: truth {number}: {problem}")
    try:
        onset, end = parse_ts(item["onset_ts"]), parse_ts(item["end_ts"])
    except ValueError as error:
        raise TruthFileError(f"{path}: truth {number}: {error}") from None
    return GroundTruth(
        item["category"], item["dimension"], item["value"], item.get("cause_event_id"), item.get("cause_ts"),
        onset, end, tuple(item.get("users") or ()), item.get("description", ""),
        tuple(tuple(pair) for pair in item.get("scope") or ((item["dimension"], item["value"]),)),
    )  # fmt: skip


# ---- running both versions -----------------------------------------------------------------------


@dataclass
class BacktestRun:
    backtest: Backtest
    events: int = 0
    bad: int = 0
    late: int = 0
    bad_samples: list[str] = field(default_factory=list)
    read_from: int | None = None  # a topic source: the start of the warm-up read before ``since``
    bad_noun: str = "line"  # what a bad input is: a line of a file, a message of a topic


@dataclass(frozen=True)
class TopicSource:
    """Events of a Kafka topic with ``since_ms <= ts < until_ms`` (topic_replay.read_topic_events),
    read from a warm-up before ``since_ms`` (topic_replay.warmup_ms of both versions) so that
    windows, baselines and `for` timers are full at ``since_ms``. Incidents opened during the
    warm-up are left out of the comparison, unless paired with one opened in the range."""

    bootstrap: str
    topic: str
    since_ms: int
    until_ms: int


def run_backtest(
    old_rules: tuple[CompiledRule, ...],
    new_rules: tuple[CompiledRule, ...],
    source: list[str] | Iterable[Event] | TopicSource,
    lateness_ms: int = DEFAULT_LATENESS_MS,
    truths: list[GroundTruth] | None = None,
    reuse_unchanged: bool = True,
) -> BacktestRun:
    """Replay ``source`` through each version and compare. ``source``: event file paths (JSON
    lines, ``-``, ``.gz``: replayed by file_replay; stdin is spooled to a temporary file when
    it must be read twice), an iterable of events (one pass, both engines side by side), or a
    TopicSource (read once into memory, then as an iterable; raises topic_replay.TopicError).

    A rule's records depend on that rule and the events only, so with ``reuse_unchanged`` a
    new rule with the same name and canonical text as an old one is not run again: it gets
    the old run's records. The second replay runs only the rules that changed (none: no
    second replay). Raises file_replay.InputError for an input that cannot be read."""
    unchanged = {(r.name, r.text) for r in old_rules} if reuse_unchanged else set()
    changed = tuple(r for r in new_rules if (r.name, r.text) not in unchanged)
    reused = {r.name for r in new_rules} - {r.name for r in changed}
    since, read_from, bad, bad_samples = None, None, 0, []
    if isinstance(source, TopicSource):
        since = source.since_ms
        source, bad_samples, read_from = _read_topic(source, old_rules + new_rules)
        bad = len(bad_samples)
    if isinstance(source, list) and all(isinstance(p, str) for p in source):
        old_records, new_records, result = _replay_files(source, old_rules, changed, lateness_ms)
        counts = (result.events, result.bad, result.late, result.bad_samples)
    else:
        old_records, new_records, events, late = _replay_events(source, old_rules, changed, lateness_ms)
        counts = (events, bad, late, bad_samples[:MAX_REPORTED_BAD_LINES])
    new_records = [r for r in old_records if r["rule"] in reused] + new_records
    old_names, new_names = [r.name for r in old_rules], [r.name for r in new_rules]
    backtest = compare(old_records, new_records, old_names, new_names, truths, since)
    return BacktestRun(backtest, *counts, read_from=read_from, bad_noun="line" if read_from is None else "message")


def _read_topic(source: TopicSource, rules: tuple[CompiledRule, ...]) -> tuple[list[Event], list[str], int]:
    from engine.adapters import topic_replay  # imports aiokafka: only for a topic

    bad: list[str] = []
    read_from = source.since_ms - topic_replay.warmup_ms(rules)
    events = topic_replay.read_topic_events(
        source.bootstrap, source.topic, read_from, source.until_ms,
        on_bad=lambda where, reason, _raw: bad.append(f"{where}: {reason}"),
    )  # fmt: skip
    return events, bad, read_from


def _replay_files(paths: list[str], old_rules, new_rules, lateness_ms: int) -> tuple[list, list, ReplayResult]:
    old_records: list[dict[str, Any]] = []
    new_records: list[dict[str, Any]] = []
    with _rereadable(paths, twice=bool(new_rules)) as (readable, spool):
        result = replay_files(readable, old_rules, _keep_incidents(old_records), None, lateness_ms)
        if new_rules:
            replay_files(readable, new_rules, _keep_incidents(new_records), None, lateness_ms)
    if spool is not None:  # bad lines of stdin say `-`, not the spool file
        result.bad_samples = [s.replace(spool, "-", 1) if s.startswith(spool) else s for s in result.bad_samples]
    return old_records, new_records, result


def _replay_events(events: Iterable[Event], old_rules, new_rules, lateness_ms: int) -> tuple[list, list, int, int]:
    old, new = Engine(old_rules, lateness_ms), Engine(new_rules, lateness_ms)
    old_records: list[dict[str, Any]] = []
    new_records: list[dict[str, Any]] = []
    keep_old, keep_new = _keep_incidents(old_records), _keep_incidents(new_records)
    count = late = 0
    for event in events:
        if old.is_late(event):  # the watermark depends on the events only: the same in both engines
            late += 1
            continue
        count += 1
        for record in old.process(event):
            keep_old(record)
        if new_rules:
            for record in new.process(event):
                keep_new(record)
    for record in old.finish():
        keep_old(record)
    for record in new.finish():
        keep_new(record)
    return old_records, new_records, count, late


def _keep_incidents(records: list[dict[str, Any]]) -> Callable[[dict[str, Any]], None]:
    def emit(record: dict[str, Any]) -> None:
        if record["type"] in INCIDENT_TYPES:
            records.append(record)

    return emit


@contextmanager
def _rereadable(paths: list[str], twice: bool) -> Iterator[tuple[list[str], str | None]]:
    """The paths, with stdin (``-``) copied to a temporary file when it is to be read twice."""
    if "-" not in paths or not twice:
        yield paths, None
        return
    with tempfile.NamedTemporaryFile(prefix="firebreak-backtest-", suffix=".jsonl") as spool:
        shutil.copyfileobj(sys.stdin.buffer, spool)
        spool.flush()
        yield [spool.name if p == "-" else p for p in paths], spool.name


# ---- the report ------------------------------------------------------------------------------------


def summary_line(backtest: Backtest) -> str:
    s = backtest.summary
    median = f" (median {signed_duration(s['median_delta_ms'])})" if s["median_delta_ms"] is not None else ""
    return (
        f"old: {s['old_incidents']} incidents, new: {s['new_incidents']}; both {s['both']}, "
        f"only old {s['only_old']}, only new {s['only_new']}; new detects earlier in {s['new_earlier']} of "
        f"{s['both']}{median}"
    )


def render_text(run: BacktestRun, old_label: str = "old", new_label: str = "new", source_label: str = "") -> str:
    backtest = run.backtest
    s = backtest.summary
    stamps = [i.opened for row in backtest.rows for i in (row.old, row.new) if i is not None]
    days = {format_ts(ms)[:10] for ms in stamps}
    clock = _clock if len(days) <= 1 else _stamp
    if run.read_from is not None:
        source_label += f" (read from {format_ts(run.read_from)} for the rules' warm-up)"
    day = f" on {days.pop()}" if len(days) == 1 else ""
    lines = [
        f"Backtest: {old_label} (old) vs {new_label} (new) on {run.events:,} events{source_label} "
        f"(bad {run.bad_noun}s: {run.bad}, late events: {run.late}); times UTC{day}",
        "",
        summary_line(backtest),
        f"same time in {s['same_time']}, later in {s['new_later']}; renamed rules paired in {s['renamed']}; "
        f"final severity differs in {s['severity_differs']}",
        "",
    ]
    truth_column = backtest.truths is not None
    header = ["status", "rule", "group", "opened old", "opened new", "delta", "severity", "lag old", "lag new"]
    table = [header + (["detects"] if truth_column else [])]
    for row in backtest.rows:
        old, new = row.old, row.new
        if row.renamed:
            rule = f"{old.rule} → {new.rule} (renamed)"
        else:
            rule = row.first.rule
        severities = [i.severity for i in (old, new) if i is not None]
        severity = " → ".join(severities) if row.severity_differs else severities[0]
        cells = [
            row.status, rule, _group(row.first.group), clock(old.opened) if old else "-",
            clock(new.opened) if new else "-", signed_duration(row.delta_ms) if row.delta_ms is not None else "-",
            severity, duration(old.lag_ms) if old else "-", duration(new.lag_ms) if new else "-",
        ]  # fmt: skip
        if truth_column:
            truth = row.truth
            cells.append(f"{truth.category} {truth.dimension}={truth.value}" if truth else "-")
        table.append(cells)
    lines += markdown_table(table) if backtest.rows else ["no incidents opened by either version"]
    quiet = [c for c in backtest.counts if c.old == 0 and c.new == 0]
    lines += ["", "incidents opened, by rule (-: no such rule in that version):", ""]
    counts = [["rule", "old", "new", "change"]]
    for count in backtest.counts:
        if count in quiet:
            continue
        differs = count.old is not None and count.new is not None and count.new != count.old
        change = f"{count.new - count.old:+d}" if differs else ""
        counts.append([count.rule, _opt(count.old), _opt(count.new), change])
    lines += markdown_table(counts) if len(counts) > 1 else ["(none)"]
    if quiet:
        lines += ["", f"{len(quiet)} more rules in both versions opened nothing in either."]
    if backtest.truths is not None:
        lines += [
            "",
            f"ground truth: old detected {s['truths_detected_old']} of {s['truths']}, "
            f"new {s['truths_detected_new']} of {s['truths']} (time to detect = first opened − injection onset)",
            "",
        ]
        header = ["category", "target", "onset", "old: first rule", "TTD old", "new: first rule", "TTD new"]
        table = [header + ["new − old"]]
        for t in backtest.truths:
            table.append([
                t.truth.category, f"{t.truth.dimension}={t.truth.value}", clock(t.truth.onset_ts),
                t.old.rule if t.old else "MISSED", _opt(t.ttd_old_ms, signed_duration),
                t.new.rule if t.new else "MISSED", _opt(t.ttd_new_ms, signed_duration),
                _opt(t.difference_ms, signed_duration),
            ])  # fmt: skip
        lines += markdown_table(table) if backtest.truths else ["(the truth file is empty)"]
    return "\n".join(lines)


def to_json(run: BacktestRun) -> dict[str, Any]:
    backtest = run.backtest

    def ts(incident: Incident | None) -> str | None:
        return format_ts(incident.opened) if incident is not None else None

    def attr(incident: Incident | None, name: str) -> Any:
        return getattr(incident, name) if incident is not None else None

    rows = []
    for row in backtest.rows:
        old, new = row.old, row.new
        truth = row.truth
        rows.append({
            "status": row.status, "rule_old": attr(old, "rule"), "rule_new": attr(new, "rule"),
            "renamed": row.renamed, "category": row.first.category, "group": row.first.group,
            "opened_old": ts(old), "opened_new": ts(new), "delta_ms": row.delta_ms,
            "severity_old": attr(old, "severity"), "severity_new": attr(new, "severity"),
            "incident_id_old": attr(old, "incident_id"), "incident_id_new": attr(new, "incident_id"),
            "lag_old_ms": attr(old, "lag_ms"), "lag_new_ms": attr(new, "lag_ms"),
            "resolved_old": format_ts(old.resolved) if old and old.resolved is not None else None,
            "resolved_new": format_ts(new.resolved) if new and new.resolved is not None else None,
            "truth": _truth_json(truth),
        })  # fmt: skip
    out: dict[str, Any] = {
        "summary": backtest.summary,
        "input": {
            "events": run.events,
            "bad": run.bad,
            "late_events": run.late,
            "read_from": format_ts(run.read_from) if run.read_from is not None else None,
        },
        "rules": [{"rule": c.rule, "old": c.old, "new": c.new} for c in backtest.counts],
        "rows": rows,
        "truths": None,
    }
    if backtest.truths is not None:
        out["truths"] = [
            _truth_json(t.truth)
            | {
                "onset": format_ts(t.truth.onset_ts),
                "detected_old": t.old is not None,
                "detected_new": t.new is not None,
                "rule_old": attr(t.old, "rule"),
                "rule_new": attr(t.new, "rule"),
                "opened_old": ts(t.old),
                "opened_new": ts(t.new),
                "ttd_old_ms": t.ttd_old_ms,
                "ttd_new_ms": t.ttd_new_ms,
                "difference_ms": t.difference_ms,
            }
            for t in backtest.truths
        ]
    return out


def _truth_json(truth: GroundTruth | None) -> dict[str, Any] | None:
    return {"category": truth.category, "dimension": truth.dimension, "value": truth.value} if truth else None


def markdown_table(rows: list[list[str]]) -> list[str]:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]

    def line(cells: list[str]) -> str:
        return "| " + " | ".join(cell.ljust(w) for cell, w in zip(cells, widths, strict=True)) + " |"

    return [line(rows[0]), "|" + "|".join("-" * (w + 2) for w in widths) + "|"] + [line(row) for row in rows[1:]]


def duration(ms: int) -> str:
    """5m, 1m30s, 45s, 250ms, 1h5m, 0s."""
    if ms == 0:
        return "0s"
    if ms % 1000:
        return f"{ms}ms" if ms < 1000 else f"{ms / 1000:g}s"
    seconds = ms // 1000
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return "".join(f"{n}{u}" for n, u in ((hours, "h"), (minutes, "m"), (secs, "s")) if n)


def signed_duration(ms: int) -> str:
    return "0s" if ms == 0 else ("-" if ms < 0 else "+") + duration(abs(ms))


def _opt(value: Any, show: Callable[[Any], str] = str) -> str:
    return "-" if value is None else show(value)


def _group(group: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v}" for k, v in group.items()) or "(all)"


def _clock(ms: int) -> str:
    return format_ts(ms - ms % 1000)[11:19]


def _stamp(ms: int) -> str:
    return format_ts(ms - ms % 1000)[:19].replace("T", " ")
