"""`firebreak backtest`: two versions of the rules over the same history, incident by incident.

    backtest = compare(old_records, new_records, old_names, new_names, truths)   # pure
    run = run_backtest(old_rules, new_rules, source, lateness_ms)                 # the I/O
    backtest_report.render_text(run) / backtest_report.to_json(run)              # pure

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

from firebreak.adapters.demo import IncidentRow, incident_rows, match
from firebreak.adapters.drive import BATCH_LINES, Driver
from firebreak.adapters.file_replay import MAX_REPORTED_BAD_LINES, ReplayResult, replay_files
from firebreak.core import DEFAULT_LATENESS_MS, Event, parse_ts
from firebreak.dsl import CompiledRule
from firebreak.records import INCIDENT_KINDS, RecordKind
from firebreak.synthetic import GroundTruth

BOTH, ONLY_OLD, ONLY_NEW = "both", "only old", "only new"
INCIDENT_TYPES = frozenset(k.value for k in INCIDENT_KINDS)


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
    onsets = {r["incident_id"]: parse_ts(r["onset"]) for r in records if r["type"] == RecordKind.OPENED}
    rows: list[IncidentRow] = incident_rows(records)
    if truths:
        match(rows, truths, {})
    out = []
    for row in rows:
        out.append(
            Incident(
                row.incident_id,
                row.rule,
                row.category,
                row.group,
                row.opened,
                onsets[row.incident_id],
                row.resolved,
                row.severity,
                row.first_severity,
                row.truth,
            )
        )
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

    def regressions(self) -> list[str]:
        """What the new version loses: injected incidents the old rules detected and the new
        miss (with ground truth), else incidents only the old rules open."""
        if self.truths is not None:
            return [
                f"missed: {t.truth.category} on {t.truth.dimension}={t.truth.value} (old: {t.old.rule})"
                for t in self.truths
                if t.old is not None and t.new is None
            ]
        return [f"only old: {row.old.rule} {group_key(row.old.group)}" for row in self.rows if row.status == ONLY_OLD]

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
            out["truths_missed_by_new"] = sum(1 for t in self.truths if t.old is not None and t.new is None)
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
        item["category"],
        item["dimension"],
        item["value"],
        item.get("cause_event_id"),
        item.get("cause_ts"),
        onset,
        end,
        tuple(item.get("users") or ()),
        item.get("description", ""),
        tuple(tuple(pair) for pair in item.get("scope") or ((item["dimension"], item["value"]),)),
    )


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
    engine: str | None = None,
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
        old_records, new_records, result = _replay_files(source, old_rules, changed, lateness_ms, engine)
        counts = (result.events, result.bad, result.late, result.bad_samples)
    else:
        old_records, new_records, events, late = _replay_events(source, old_rules, changed, lateness_ms, engine)
        counts = (events, bad, late, bad_samples[:MAX_REPORTED_BAD_LINES])
    new_records = [r for r in old_records if r["rule"] in reused] + new_records
    old_names, new_names = [r.name for r in old_rules], [r.name for r in new_rules]
    backtest = compare(old_records, new_records, old_names, new_names, truths, since)
    return BacktestRun(backtest, *counts, read_from=read_from, bad_noun="line" if read_from is None else "message")


def _read_topic(source: TopicSource, rules: tuple[CompiledRule, ...]) -> tuple[list[Event], list[str], int]:
    from firebreak.adapters import topic_replay  # imports aiokafka: only for a topic

    bad: list[str] = []
    read_from = source.since_ms - topic_replay.warmup_ms(rules)
    events = topic_replay.read_topic_events(
        source.bootstrap,
        source.topic,
        read_from,
        source.until_ms,
        on_bad=lambda where, reason, _raw: bad.append(f"{where}: {reason}"),
    )
    return events, bad, read_from


def _replay_files(
    paths: list[str], old_rules, new_rules, lateness_ms: int, engine: str | None = None
) -> tuple[list, list, ReplayResult]:
    old_records: list[dict[str, Any]] = []
    new_records: list[dict[str, Any]] = []
    with _rereadable(paths, twice=bool(new_rules)) as (readable, spool):
        result = replay_files(readable, old_rules, _keep_incidents(old_records), None, lateness_ms, engine=engine)
        if new_rules:
            replay_files(readable, new_rules, _keep_incidents(new_records), None, lateness_ms, engine=engine)
    if spool is not None:  # bad lines of stdin say `-`, not the spool file
        result.bad_samples = [s.replace(spool, "-", 1) if s.startswith(spool) else s for s in result.bad_samples]
    return old_records, new_records, result


def _replay_events(
    events: Iterable[Event], old_rules, new_rules, lateness_ms: int, engine: str | None = None
) -> tuple[list, list, int, int]:
    old, new = Driver(old_rules, lateness_ms, engine), Driver(new_rules, lateness_ms, engine)
    old_records: list[dict[str, Any]] = []
    new_records: list[dict[str, Any]] = []
    keep_old, keep_new = _keep_incidents(old_records), _keep_incidents(new_records)
    count = late = 0
    batch: list[Event] = []

    def feed() -> None:
        nonlocal count, late
        fed = old.feed_events(batch)  # the watermark depends on the events only: the same in both engines
        count += fed.events
        late += len(fed.late)
        for record in fed.records:
            keep_old(record)
        if new_rules:
            for record in new.feed_events(batch).records:
                keep_new(record)
        batch.clear()

    for event in events:
        batch.append(event)
        if len(batch) >= BATCH_LINES:
            feed()
    feed()
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
