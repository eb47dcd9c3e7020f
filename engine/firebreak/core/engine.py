"""The detection engine: events in, records out, time from the events only.

    engine = Engine(rules)
    for event in events:
        records += engine.process(event)
    records += engine.finish()          # end of a replay; a live worker never calls it

`process` adds the event to every matching (rule, group) and, when the
watermark (max event time − allowed lateness) passes evaluation steps, runs
them in (time, rule, group) order. Events older than the watermark are late:
counted, and their reason given back to the caller for a dead-letter sink.

Nothing here reads a clock or does I/O; all state is in plain objects that
`snapshot` turns into JSON-ready data and `restore` turns back.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from firebreak.core.events import Event
from firebreak.core.flapping import Cooldowns
from firebreak.core.incidents import (
    FIRING,
    INACTIVE,
    Counts,
    Lifecycle,
    Status,
    close_for_reload,
    evaluate_group,
    population_rate,
    read,
)
from firebreak.core.sketch import DistinctSketch
from firebreak.core.window import Bucket, Summary, accumulator, summarize
from firebreak.dsl.compiler import CompiledRule, getter
from firebreak.dsl.metrics import Accumulates
from firebreak.event_types import COUNTED
from firebreak.event_types import DEFAULT as DEFAULT_TYPE

DEFAULT_LATENESS_MS = 30_000
# An event more than this ahead of the latest event time taken is refused (dead-lettered) and
# moves no clock: one event with a wrong date must not make the next hours of events late.
# A real jump (a producer back after an outage) is taken at its AHEAD_CONFIRM-th event in a
# row ahead: the ones before it are refused. docs/live.md, "Time".
DEFAULT_MAX_SKEW_MS = 3_600_000
AHEAD_CONFIRM = 8
SNAPSHOT_VERSION = 2  # 2: groups carry the spans kept out of their baseline (`excluded`)
READS_VERSIONS = (1, 2)  # a version 1 snapshot restores with nothing kept out


class GroupState:
    __slots__ = ("key", "group", "order", "buckets", "life", "first_seen", "excluded")

    def __init__(self, rule: CompiledRule, key: tuple) -> None:
        self.key = key
        self.group = {".".join(path): group_value(part) for path, part in zip(rule.by, key, strict=True)}
        self.order = tuple((_type_rank(v), str(v)) for v in key)  # sorts mixed-type values
        self.buckets: dict[int, Bucket] = {}
        self.life = Lifecycle()
        self.first_seen: int | None = None  # start of the group's earliest step: baselines wait for it
        # `Kx baseline` rules: the spans the group's incidents covered, kept out of its baseline
        # (`excluded_span`): [start, end, the baseline frozen at the onset], oldest first.
        self.excluded: list[tuple[int, int, float | None]] = []


def _type_rank(value: Any) -> int:
    return 0 if value is None else 1 if isinstance(value, tuple) else 2 if isinstance(value, int | float) else 3


BOOL_TAG = "__bool__"


_INT64 = 2**63


def _key_part(value: Any) -> Any:
    """A group value as part of a hashable key. Booleans are tagged, because in Python
    ``True == 1``: a field that is sometimes ``true`` and sometimes ``1`` has two groups.
    A whole float that fits a 64-bit int is that int: ``1`` and ``1.0`` are one group, and it
    is shown (and sharded) as ``1`` whichever arrived first."""
    if value is None or value.__class__ is str:
        return value
    if value.__class__ is bool:
        return (BOOL_TAG, value)
    if value.__class__ is float:
        return int(value) if value.is_integer() and -_INT64 <= value < _INT64 else value
    return value if isinstance(value, int | float) else str(value)


def group_value(part: Any) -> Any:
    """The value a key part stands for (what records show)."""
    return part[1] if isinstance(part, tuple) else part


def key_from_json(parts: list) -> tuple:
    """A key back from JSON, where tagged booleans became lists."""
    return tuple(tuple(p) if isinstance(p, list) else p for p in parts)


class RuleState:
    """One rule's groups and its evaluation clock."""

    def __init__(self, rule: CompiledRule) -> None:
        self.rule = rule
        self.add = accumulator(rule)
        self.groups: dict[tuple, GroupState] = {}
        self.next_eval: int | None = None  # the next step boundary to evaluate
        # A group is kept while a bucket is this recent, or while it has an incident or is pending.
        self.memory_ms = rule.window_ms + max(rule.baseline_ms, rule.window_ms)
        self.getters = tuple(getter(path) for path in rule.by)
        # Evaluation is by need: an inactive group's result can only change when a bucket enters
        # or leaves its window or baseline span, or its baseline becomes ready; pending and firing
        # groups are evaluated at every step.
        self.due: dict[int, set[tuple]] = {}  # step boundary → groups to evaluate then
        self.active: set[tuple] = set()  # pending or firing groups
        # `Kx population` and `baseline(S, population)`: per step, [events, flagged events] of all
        # groups (None for other rules)
        counts = rule.population is not None or rule.population_fallback
        self.population: dict[int, list[int]] | None = {} if counts else None
        self.flag = rule.arg[1] if counts and rule.arg is not None else None

    def count_population(self, start: int, data: dict) -> None:
        flags = data.get("flags")
        self.count_in_population(start, bool(flags and flags.get(self.flag) is True))

    def count_in_population(self, start: int, flagged: bool) -> None:
        """One event in the population's totals of the step ``start``."""
        totals = self.population.get(start)
        if totals is None:
            totals = self.population[start] = [0, 0]
        totals[0] += 1
        totals[1] += flagged

    def population_at(self, at: int) -> tuple[int, int]:
        """(events, flagged events) of all groups in the window ending at ``at``; older steps dropped."""
        window_from = at - self.rule.window_ms
        n = hits = 0
        for start in [s for s in self.population if s < window_from]:
            del self.population[start]
        for start, (events, flagged) in self.population.items():
            if start < at:
                n += events
                hits += flagged
        return n, hits

    def schedule(self, key: tuple, start: int, first: bool, after: int | None = None) -> None:
        """The boundaries at which a new bucket at ``start`` changes what ``key`` can see."""
        rule, step = self.rule, self.rule.step_ms
        times = [start + step, start + rule.window_ms + step, start + self.memory_ms + step]
        if rule.factor is not None:
            times.append(start + rule.window_ms + rule.baseline_ms + step)
            if first:  # the baseline is ready once the group has been seen for the whole span
                times.append(start + rule.window_ms + rule.baseline_ms)
                if rule.warmup_ms:  # and its own shorter history once it covers the warm-up
                    times.append(start + rule.window_ms + rule.warmup_ms)
        for at in times:
            if after is None or at >= after:
                self.due.setdefault(at, set()).add(key)

    def key_of(self, data: dict) -> tuple:
        return tuple(_key_part(get(data)) for get in self.getters)


class Engine:
    def __init__(
        self,
        rules: Sequence[CompiledRule],
        lateness_ms: int = DEFAULT_LATENESS_MS,
        owns: Callable[[str, tuple], bool] | None = None,
        max_skew_ms: int | None = DEFAULT_MAX_SKEW_MS,
    ) -> None:
        """``owns(rule_name, group_key)``: when given, only those (rule, group) pairs are
        aggregated and evaluated — one shard of a scaled-out worker (engine/firebreak/core/sharding.py).
        ``max_skew_ms``: how far ahead of the latest event time an event may be (`is_ahead`;
        None: no bound)."""
        if lateness_ms < 0:
            raise ValueError("allowed lateness cannot be negative")
        if max_skew_ms is not None and max_skew_ms < 0:
            raise ValueError("the maximum skew cannot be negative")
        self.max_skew_ms = max_skew_ms
        self.ahead_run = 0  # events refused as ahead since the last one taken
        self.owns = owns
        self.rules = tuple(rules)
        self.lateness_ms = lateness_ms
        self.states = [RuleState(rule) for rule in self.rules]
        self.max_ts: int | None = None
        self.watermark: int | None = None
        self.stats: Counter[str] = Counter()
        self.opened: Counter[str] = Counter()  # incidents opened, by rule
        self.cooldowns = Cooldowns()  # resolved incidents that reopen within their cool-down

    # ---- input --------------------------------------------------------------------

    def process(self, event: Event) -> list[dict[str, Any]]:
        """Add one event; return the records of every step the watermark
        (max event time − allowed lateness) passes."""
        if not self.add(event):
            return []
        watermark = event.ts - self.lateness_ms
        if self.watermark is None or watermark > self.watermark:
            return self.advance(watermark)
        return []

    def add(self, event: Event, pairs: Sequence[tuple[int, tuple]] | None = None) -> bool:
        """Aggregate one event without moving time; False (and counted) when it is late.
        ``pairs``: its (rule index, group key) pairs when a router already computed them."""
        ts = event.ts
        if self.watermark is not None and ts < self.watermark:
            self.stats["late"] += 1
            return False
        self.stats["events"] += 1
        if event.type in COUNTED:
            if pairs is None:
                self._aggregate(event)
            else:
                for index, key in pairs:
                    state = self.states[index]
                    start = ts - ts % state.rule.step_ms
                    state.add(self._bucket(state, key, start), event)
                    if state.population is not None:  # a shard's population: the events routed to it
                        state.count_population(start, event.data)
        else:
            self.stats["changes"] += 1
        if self.max_ts is None or ts > self.max_ts:
            self.max_ts = ts
        return True

    def add_population(self, ts: int, counted: Iterable[tuple[int, bool]]) -> bool:
        """A routed event that only counts population rules on this shard (routed format 7: a
        row whose mask is empty; docs/live.md, "The routed format"): at ``ts``, one event for each
        (rule index, flagged) of ``counted`` in that rule's population totals — what `add` does
        for a population rule whose group another shard owns — without the event itself. False
        (and counted) when it is late."""
        if self.watermark is not None and ts < self.watermark:
            self.stats["late"] += 1
            return False
        self.stats["events"] += 1
        for index, flagged in counted:
            state = self.states[index] if index < len(self.states) else None
            if state is None or state.population is None:  # a bit no rule of ours has: nothing to count
                continue
            state.count_in_population(ts - ts % state.rule.step_ms, flagged)
        if self.max_ts is None or ts > self.max_ts:
            self.max_ts = ts
        return True

    def is_late(self, event: Event) -> bool:
        return self.watermark is not None and event.ts < self.watermark

    def is_ahead(self, event: Event) -> bool:
        """Whether ``event`` (not late) is refused for being more than ``max_skew_ms`` after the
        latest event time taken. Asked once per event, by the input's edge (drive.py, the
        worker's shards), before it is added: the AHEAD_CONFIRM-th such event in a row is taken
        (the clock jumps: a producer back after an outage), so this counts them."""
        skew = self.max_skew_ms
        if skew is None or self.max_ts is None or event.ts <= self.max_ts + skew:
            self.ahead_run = 0
            return False
        self.ahead_run += 1
        if self.ahead_run >= AHEAD_CONFIRM:
            self.ahead_run = 0
            return False
        return True

    def _aggregate(self, event: Event) -> None:
        ts, owns, data, kind = event.ts, self.owns, event.data, event.type
        keys: dict[tuple, tuple] = {}  # rules grouped by the same fields share the key
        for state in self.states:
            rule = state.rule
            if rule.source != kind or (rule.label is not None and not rule.admits(kind, data)):
                continue
            if rule.where is not None and not rule.where(data):
                continue
            key = keys.get(rule.by)
            if key is None:
                key = keys[rule.by] = state.key_of(data) if rule.by else ()
            step = rule.step_ms
            start = ts - ts % step
            if state.population is not None:  # every group's events, before sharding
                state.count_population(start, data)
            if owns is not None and not owns(rule.name, key):
                continue
            group = state.groups.get(key)
            bucket = group.buckets.get(start) if group is not None else None
            if bucket is None:
                bucket = self._bucket(state, key, start)
            state.add(bucket, event)

    def _bucket(self, state: RuleState, key: tuple, start: int) -> Bucket:
        group = state.groups.get(key)
        if group is None:
            group = state.groups[key] = GroupState(state.rule, key)
        bucket = group.buckets.get(start)
        if bucket is None:
            bucket = group.buckets[start] = Bucket(state.rule)
            first = group.first_seen is None or start < group.first_seen
            if first:
                group.first_seen = start
            state.schedule(key, start, first)
            boundary = start + state.rule.step_ms  # after the watermark: not evaluated yet
            if state.next_eval is None or boundary < state.next_eval:
                state.next_eval = boundary
        return bucket

    # ---- explicit time (the worker: watermark = min over input partitions) -----------

    def advance(self, watermark: int) -> list[dict[str, Any]]:
        """Move the watermark explicitly (the worker's min over partitions); return the records."""
        if self.watermark is not None and watermark <= self.watermark:
            return []
        self.watermark = watermark
        return self._advance(watermark)

    def finish(self, max_ts: int | None = None) -> list[dict[str, Any]]:
        """End of input (replay): evaluate every step up to and including the one that
        holds the last event (``max_ts``: the last event time, when events came through
        aggregators). Open incidents stay open: the stream ended, the anomaly did not."""
        if max_ts is not None:
            self.max_ts = max(self.max_ts or max_ts, max_ts)
        if self.max_ts is None:
            return []
        end = self.max_ts + 1
        records = self._advance(end, closing=True)
        self.watermark = max(self.watermark or end, end)
        return records

    # ---- evaluation ---------------------------------------------------------------------

    def _advance(self, watermark: int, closing: bool = False) -> list[dict[str, Any]]:
        """Evaluate every rule's steps up to ``watermark`` (``closing``: up to the end of the
        step holding it). Only steps with work are visited: those with groups due, and every
        step while a group is pending or firing; a step with neither would change nothing,
        so empty time between two events costs nothing. Each rule is evaluated on its own
        (nothing one rule does is seen by another); the records are then put in
        (step time, rule index) order."""
        done: list[tuple[int, int, list[dict[str, Any]]]] = []
        for index, state in enumerate(self.states):
            at = state.next_eval
            if at is None:
                continue
            step = state.rule.step_ms
            last = watermark if not closing else watermark - watermark % step + (step if watermark % step else 0)
            if at > last:
                continue
            state.next_eval = at + ((last - at) // step + 1) * step  # the clock's next step after `last`
            while at is not None and at <= last:
                if state.active or at in state.due:
                    records = self._evaluate(state, at)
                    if records:
                        done.append((at, index, records))
                    if state.next_eval is None:
                        break  # no groups left: nothing is due
                at = _next_step(state, at + step)
        done.sort(key=lambda item: (item[0], item[1]))
        return [record for _, _, records in done for record in records]

    def _evaluate(self, state: RuleState, at: int) -> list[dict[str, Any]]:
        rule = state.rule
        records: list[dict[str, Any]] = []
        dead = []
        keys = state.due.pop(at, set())
        if state.active:
            keys |= state.active
        groups = state.groups
        population = state.population_at(at) if state.population is not None else None
        for group in sorted((groups[k] for k in keys if k in groups), key=lambda g: g.order):
            horizon = at - state.memory_ms
            window_from = at - rule.window_ms
            if group.excluded:
                expire_excluded(group.excluded, horizon)
            for start, bucket in list(group.buckets.items()):
                if start < horizon:
                    del group.buckets[start]
                elif start < window_from and (bucket.evidence or bucket.users.mins):
                    # No later window shows this bucket: only baselines read it, and they
                    # need neither its users nor its evidence (memory; docs/native.md).
                    bucket.users = DistinctSketch()
                    bucket.evidence = []
            if group.life.status == INACTIVE and not any(s < at for s in group.buckets):
                # Nothing this step can see. Buckets at or after `at` (early events of a
                # shuffled stream) keep the group, but must not make it evaluate.
                if not group.buckets:
                    dead.append(group.key)
                continue
            in_window = [b for s, b in group.buckets.items() if window_from <= s < at]
            summary = summarize(rule, in_window, detail=False)
            baseline, counts = (
                self._baseline(state, group, at, summary, population) if rule.factor is not None else (None, None)
            )
            reading = read(rule, summary, baseline, population, counts)
            if reading.holds or group.life.status != INACTIVE:  # records may follow: users and evidence
                reading = read(rule, summarize(rule, in_window, detail=True), baseline, population, counts)
            life = group.life
            before = (life.status, life.onset, life.frozen_baseline)
            records.extend(evaluate_group(rule, group.group, life, at, reading, self.cooldowns))
            span = excluded_span(rule, *before, life.status, at)
            if span is not None:
                add_excluded(group.excluded, span)
            if group.life.status == INACTIVE:
                state.active.discard(group.key)
            else:
                state.active.add(group.key)
                if group.life.status == FIRING and group.life.incident.opened_at == at:
                    self.opened[rule.name] += 1
        for key in dead:
            del state.groups[key]
        if not state.groups:
            state.next_eval = None  # idle: the next event restarts the clock
            state.due.clear()
        return records

    def _baseline(
        self, state: RuleState, group: GroupState, at: int, window: Summary, population: tuple[int, int] | None
    ) -> Reference:
        """While the group is pending or firing, the baseline frozen at its onset (no counts:
        tested as a known value); else `span_reference` of its buckets (``window``,
        ``population``: for the rest's rate, which `baseline(S, population)` falls back to)."""
        if group.life.status != INACTIVE:
            return group.life.frozen_baseline, None
        rule = state.rule

        def peers() -> Reference:
            return population_rate(window, population), None  # a rate of the same window: one-sample

        return span_reference(
            rule, group.buckets, group.first_seen, at, group.excluded, peers if rule.population_fallback else None
        )

    # ---- state ----------------------------------------------------------------------------

    def open_incidents(self) -> list[dict[str, Any]]:
        out = []
        for state in self.states:
            for group in sorted(state.groups.values(), key=lambda g: g.order):
                if group.life.status == FIRING:
                    incident = group.life.incident
                    out.append(
                        {
                            "rule": state.rule.name,
                            "group": group.group,
                            "incident_id": incident.incident_id,
                            "severity": str(incident.severity),
                        }
                    )
        return out

    def snapshot(self) -> dict[str, Any]:
        """The whole state as JSON-ready data (rules are configuration, not state)."""
        return {
            "version": SNAPSHOT_VERSION,
            "lateness_ms": self.lateness_ms,
            "max_ts": self.max_ts,
            "watermark": self.watermark,
            "stats": dict(sorted(self.stats.items())),
            "opened": dict(sorted(self.opened.items())),
            "rules": {
                state.rule.name: {
                    "fingerprint": rule_fingerprint(state.rule),
                    "next_eval": state.next_eval,
                    **(
                        {"population": [[start, *totals] for start, totals in sorted(state.population.items())]}
                        if state.population is not None
                        else {}
                    ),
                    "groups": [
                        {
                            "key": list(group.key),
                            "first_seen": group.first_seen,
                            "buckets": [[start, b.snapshot()] for start, b in sorted(group.buckets.items())],
                            "life": group.life.to_json(),
                            **({"excluded": [list(span) for span in group.excluded]} if group.excluded else {}),
                        }
                        for group in sorted(state.groups.values(), key=lambda g: g.order)
                    ],
                }
                for state in self.states
            },
            "cooldowns": self.cooldowns.to_json(),
        }

    @classmethod
    def restore(
        cls,
        rules: Sequence[CompiledRule],
        snapshot: dict[str, Any],
        lateness_ms: int | None = None,
        owns: Callable[[str, tuple], bool] | None = None,
        max_skew_ms: int | None = DEFAULT_MAX_SKEW_MS,
    ) -> Engine:
        """Rebuild an engine. A rule whose text changed since the snapshot starts afresh;
        state of rules no longer present is dropped (their open incidents are reported by
        `dropped_incidents` so the caller can resolve them)."""
        check_version(snapshot)
        engine = cls(rules, snapshot["lateness_ms"] if lateness_ms is None else lateness_ms, owns, max_skew_ms)
        engine.max_ts, engine.watermark = snapshot["max_ts"], snapshot["watermark"]
        engine.stats.update(snapshot["stats"])
        engine.opened.update(snapshot["opened"])
        saved = snapshot["rules"]
        engine.cooldowns = restore_cooldowns(engine.rules, snapshot)
        for state in engine.states:
            data = saved.get(state.rule.name)
            if data is None or data["fingerprint"] != rule_fingerprint(state.rule):
                continue
            state.next_eval = data["next_eval"]
            if state.population is not None:
                state.population = {start: [n, hits] for start, n, hits in data.get("population", [])}
            for item in data["groups"]:
                key = key_from_json(item["key"])
                group = state.groups[key] = GroupState(state.rule, key)
                group.buckets = {start: Bucket.restore(state.rule, b) for start, b in item["buckets"]}
                group.first_seen = item["first_seen"]
                group.life = Lifecycle.from_json(item["life"])
                group.excluded = [(start, end, baseline) for start, end, baseline in item.get("excluded", ())]
                for start in group.buckets:
                    state.schedule(key, start, start == group.first_seen, after=state.next_eval)
                if group.life.status != INACTIVE:
                    state.active.add(key)
        return engine


def _next_step(state: RuleState, at: int) -> int | None:
    """The first step boundary from ``at`` on with work for ``state``: every step while a
    group is pending or firing, else the next with groups due (None: none)."""
    if state.active or at in state.due:
        return at
    step = state.rule.step_ms
    return min((t for t in state.due if t >= at and t % step == 0), default=None)


def restore_cooldowns(rules: Sequence[CompiledRule], snapshot: dict[str, Any]) -> Cooldowns:
    """The snapshot's cool-downs of these rules, those whose text is unchanged."""
    saved = snapshot["rules"]
    same = {r.name for r in rules if r.name in saved and saved[r.name]["fingerprint"] == rule_fingerprint(r)}
    return Cooldowns.from_json(snapshot.get("cooldowns"), keep=same.__contains__)


def check_version(snapshot: dict[str, Any]) -> None:
    """Refuse a snapshot this engine cannot read (both engines read versions 1 and 2)."""
    if snapshot.get("version") not in READS_VERSIONS:
        raise ValueError(f"unsupported snapshot version {snapshot.get('version')!r}")


# ---- what a baseline is made of after an incident ----------------------------------------------


def excluded_span(
    rule: CompiledRule, status: Status, onset: int | None, frozen: float | None, now: Status, at: int
) -> tuple[int, int, float | None] | None:
    """The span a `Kx baseline` group's incident covered, once it is over (the group went
    from pending or firing back to inactive at ``at``): every window judged while it was
    pending or open, [onset − window, at), with the baseline frozen at its onset. It is kept
    out of the group's baseline (docs/detection.md#baselines). None otherwise."""
    if rule.factor is None or status == INACTIVE or now != INACTIVE or onset is None:
        return None
    return (onset - rule.window_ms, at, frozen)


def add_excluded(spans: list[tuple[int, int, float | None]], span: tuple[int, int, float | None]) -> None:
    """Add a span after the others; one that overlaps the last (an incident that opened within
    a window of the one before it resolving) joins it, with the earlier baseline: one episode,
    judged against what came before it."""
    if spans and span[0] < spans[-1][1]:
        start, _, baseline = spans[-1]
        spans[-1] = (start, span[1], baseline)
    else:
        spans.append(span)


def expire_excluded(spans: list[tuple[int, int, float | None]], horizon: int) -> None:
    """Drop the spans that end before ``horizon`` (no baseline span reaches them any more),
    when buckets that start before it are dropped: the spans held stay bounded."""
    while spans and spans[0][1] <= horizon:
        del spans[0]


def span_baseline(
    rule: CompiledRule,
    buckets: dict[int, Bucket],
    first_seen: int | None,
    at: int,
    excluded: Sequence[tuple[int, int, float | None]] = (),
    peers: Callable[[], tuple[float | None, Counts | None]] | None = None,
) -> float | None:
    """The metric over the baseline span before the window ending at ``at`` (`span_reference`
    without its counts). Pure: investigations call it to draw the baseline."""
    return span_reference(rule, buckets, first_seen, at, excluded, peers)[0]


Reference = tuple[float | None, Counts | None]


def span_reference(
    rule: CompiledRule,
    buckets: dict[int, Bucket],
    first_seen: int | None,
    at: int,
    excluded: Sequence[tuple[int, int, float | None]] = (),
    peers: Callable[[], Reference] | None = None,
) -> Reference:
    """The metric over the baseline span before the window ending at ``at``, scaled to the
    window for count/sum (distinct: the mean over window-length slices); None until the
    group has been seen for the whole span (``first_seen``: the start of its earliest step)
    and the span has `min N events`. With it, for a rule `with C% confidence` whose reference
    is its warm-up's shorter history, the counts that history holds (`incidents.Counts`),
    which the test compares the window's with (two-sample); None for every other reference —
    a whole span (as long as the rule asks: taken as known), the population, a prior.

    ``excluded``: the spans of the group's past incidents (`excluded_span`); their buckets are
    left out, and what remains is scaled by its own length. When what remains is less than half
    the span, or has fewer than `min N events` (distinct: no whole window-length slice), the
    baseline is the one frozen at the onset of the latest incident whose span reaches into it.

    Cold start (`baseline(S, warmup D, prior P)`, docs/detection.md#cold-start-the-reference-
    fallback-chain): while the group has not been seen for the whole span, its own shorter
    history ``[first_seen, T − window)`` once it is at least D long and holds `min N events`
    (measured as the span is, by its own length); else, with `population`, ``peers()`` (the
    rest of the rule's groups in the window, `incidents.population_rate`) when there is a rest;
    else the prior P; else None."""
    end = at - rule.window_ms
    start = end - rule.baseline_ms
    if first_seen is None:
        return None, None
    if start < first_seen:  # the group has not been seen for a whole baseline span yet
        if rule.warmup_ms and end - first_seen >= rule.warmup_ms:
            own = _history_baseline(rule, buckets, first_seen, end, excluded)
            if own[0] is not None:
                return own
        if peers is not None:
            rest = peers()
            if rest[0] is not None:
                return rest
        return rule.prior, None
    # a whole span: as long as the author asked for, its value is tested as known (one-sample)
    return _history_baseline(rule, buckets, start, end, excluded)[0], None


def _counts(rule: CompiledRule, summary: Summary, span_ms: int) -> Counts | None:
    """The counts of a reference measured over ``span_ms`` (`incidents.Counts`), for a rule
    whose `with C% confidence` compares them with the window's; else None."""
    if rule.confidence is None or rule.metric.slices_baseline or rule.keeps_squares:
        return None  # no test, or one that reads no reference counts (distinct; a mean's t-test)
    k, n = rule.metric.significance_counts(summary)
    least = -(-span_ms // rule.window_ms)  # one per window length of the span, as the value's floor
    return Counts(k, n if rule.metric.rate else span_ms, least)


def _history_baseline(
    rule: CompiledRule,
    buckets: dict[int, Bucket],
    start: int,
    end: int,
    excluded: Sequence[tuple[int, int, float | None]],
) -> Reference:
    """The group's own history ``[start, end)`` (the whole span, or a warm-up's shorter one)
    as a window's reference: `span_reference` without the cold start."""
    if rule.slices_every_ms:
        return _sliced_reference(rule, buckets, start, end, excluded)
    span_ms = end - start
    cut = [span for span in excluded if span[0] < end and span[1] > start]
    if cut:
        return _baseline_around(rule, buckets, start, end, cut)
    summary = summarize(rule, (b for s, b in buckets.items() if start <= s < end), detail=False)
    if rule.metric.sample_size(summary) < rule.min_events:
        return None, None
    if rule.metric.slices_baseline:
        # Distinct values do not add up over time (the same users return), so the baseline
        # is the mean distinct count of the window-length slices of the span.
        slices = max(1, span_ms // rule.window_ms)
        counts = []
        for i in range(slices):
            lo, hi = start + i * rule.window_ms, start + (i + 1) * rule.window_ms
            part = summarize(rule, (b for s, b in buckets.items() if lo <= s < hi), detail=False)
            counts.append(rule.metric.value(part))
        return sum(counts) / len(counts), None
    value = rule.metric.value(summary)
    if value is None:
        return None, None
    return rule.metric.scale_baseline(value, summary.n, rule.window_ms / span_ms), _counts(rule, summary, span_ms)


def _baseline_around(
    rule: CompiledRule, buckets: dict[int, Bucket], start: int, end: int, cut: list[tuple[int, int, float | None]]
) -> Reference:
    """`span_reference` of a span that past incidents reach into (``cut``: their spans, in
    time order, not overlapping): measured on the rest of the span when the rest is at least
    half of it and holds `min N events`, else the baseline frozen at the latest one's onset."""
    fallback = cut[-1][2], None
    span_ms = end - start
    kept_ms = span_ms - sum(min(hi, end) - max(lo, start) for lo, hi, _ in cut)
    if 2 * kept_ms < span_ms:
        return fallback  # a few minutes between two incidents are no baseline

    def kept(s: int) -> bool:
        return not any(lo <= s < hi for lo, hi, _ in cut)

    summary = summarize(rule, (b for s, b in buckets.items() if start <= s < end and kept(s)), detail=False)
    if rule.metric.sample_size(summary) < rule.min_events:
        return fallback
    if rule.metric.slices_baseline:  # the mean over the slices no incident reaches into
        slices = max(1, span_ms // rule.window_ms)
        counts = []
        for i in range(slices):
            lo, hi = start + i * rule.window_ms, start + (i + 1) * rule.window_ms
            if any(a < hi and b > lo for a, b, _ in cut):
                continue
            part = summarize(rule, (b for s, b in buckets.items() if lo <= s < hi), detail=False)
            counts.append(rule.metric.value(part))
        return (sum(counts) / len(counts), None) if counts else fallback
    value = rule.metric.value(summary)
    if value is None:
        return fallback
    return rule.metric.scale_baseline(value, summary.n, rule.window_ms / kept_ms), _counts(rule, summary, kept_ms)


def _sliced_reference(
    rule: CompiledRule,
    buckets: dict[int, Bucket],
    start: int,
    end: int,
    excluded: Sequence[tuple[int, int, float | None]],
) -> Reference:
    """`baseline(S, median | trimmed P% | seasonal D)` over the history ``[start, end)``
    (docs/detection.md#robust-and-seasonal-references): the metric of each window-length slice
    ``[end − j·every, end − j·every + window)`` (j = 1, 2, … while it starts in the history;
    every: the window's length, or the season D), then their mean with ``rule.trim`` of the
    values cut from each end (`robust_mean`). A slice a past incident reaches into is left out;
    when fewer than half the slices are left, or they hold fewer than `min N events`, or none
    has a value, the baseline frozen at the latest incident's onset (None without one). Floored
    as a window's reference is: a count at one event, a rate at one flagged event of the slices'
    mean number of events. Tested as known (one-sample): no counts."""
    every, width = rule.slices_every_ms, rule.window_ms
    cut = [span for span in excluded if span[0] < end and span[1] > start]
    fallback: Reference = (cut[-1][2], None) if cut else (None, None)
    total = (end - start) // every
    kept = [
        j
        for j in range(1, total + 1)
        if not any(lo < end - j * every + width and hi > end - j * every for lo, hi, _ in cut)
    ]
    if not kept or 2 * len(kept) < total:
        return fallback
    parts: dict[int, list[Bucket]] = {j: [] for j in kept}
    for s, b in buckets.items():
        if start <= s < end:
            back = end - s
            j = -(-back // every)
            if back > j * every - width and j in parts:
                parts[j].append(b)
    summaries = [summarize(rule, parts[j], detail=False) for j in kept]
    if sum(rule.metric.sample_size(x) for x in summaries) < rule.min_events:
        return fallback
    values = [v for v in (rule.metric.value(x) for x in summaries) if v is not None]
    if not values:
        return fallback
    value = robust_mean(values, rule.trim)
    if rule.metric.additive and rule.metric.accumulates is not Accumulates.VALUES:
        value = max(value, 1.0)  # count: at least one event a window
    elif rule.metric.rate:
        value = max(value, len(kept) / sum(x.n for x in summaries))  # one flagged of a mean slice's events
    return value, None


def robust_mean(values: Sequence[float], trim: float) -> float:
    """The mean of ``values`` with ⌊n·trim⌋ of them cut from each end; the median when
    ``trim`` is 0.5 or nothing would be left. Summed in sorted order, one addition at a time
    (the native engine adds in the same order: the same float)."""
    ordered = sorted(values)
    n = len(ordered)
    cut = int(n * trim)
    if 2 * cut >= n:
        middle = n // 2
        return ordered[middle] if n % 2 else (ordered[middle - 1] + ordered[middle]) / 2
    total = 0.0
    for v in ordered[cut : n - cut]:
        total += v
    return total / (n - 2 * cut)


def reload(engine: Engine, rules: Sequence[CompiledRule]) -> tuple[Engine, list[dict[str, Any]]]:
    """Swap the rules of a running engine without losing state.

    Rules whose canonical text is unchanged keep their windows, baselines and open
    incidents. A rule that was removed, or whose text changed, loses its state: each of
    its open incidents gets an `incident.resolved` record (why: removed/changed by a
    reload) and its containment a `containment.release` (held commands excepted) — so
    nothing downstream stays contained by a rule that no longer exists."""
    at = engine.watermark if engine.watermark is not None else 0
    kept = {rule_fingerprint(rule) for rule in rules}
    names = {rule.name for rule in rules}
    records: list[dict[str, Any]] = []
    for state in engine.states:
        if rule_fingerprint(state.rule) in kept:
            continue
        change = "changed" if state.rule.name in names else "removed"
        for group in sorted(state.groups.values(), key=lambda g: g.order):
            records.extend(close_for_reload(state.rule, group.group, group.life, at, change))
    fresh = Engine.restore(rules, engine.snapshot(), owns=engine.owns, max_skew_ms=engine.max_skew_ms)
    return fresh, records


def routes_indexed(states: Sequence[RuleState], data: dict) -> Iterable[tuple[RuleState | None, tuple]]:
    """For every rule in order: (its state, the event's group key) if the event passes its
    `where`, else (None, ()) — so that the position is the rule's index."""
    keys: dict[tuple, tuple] = {}
    kind = data.get("type", DEFAULT_TYPE)
    for state in states:
        rule = state.rule
        if not rule.admits(kind, data) or (rule.where is not None and not rule.where(data)):
            yield None, ()
            continue
        key = keys.get(rule.by)
        if key is None:
            key = keys[rule.by] = state.key_of(data) if rule.by else ()
        yield state, key


def rule_fingerprint(rule: CompiledRule) -> str:
    return hashlib.sha256(rule.text.encode()).hexdigest()[:16]


def run_events(
    rules: Sequence[CompiledRule], events: Iterable[Event], lateness_ms: int = DEFAULT_LATENESS_MS, finish: bool = True
) -> list[dict[str, Any]]:
    """Test and replay helper: every record the engine produces for ``events``."""
    engine = Engine(rules, lateness_ms)
    records: list[dict[str, Any]] = []
    for event in events:
        records.extend(engine.process(event))
    if finish:
        records.extend(engine.finish())
    return records
