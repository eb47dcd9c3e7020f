"""Per-step buckets of partial aggregates, and the windows assembled from them.

A rule's time axis is cut into steps (compiler.pick_step). Each (rule, group)
keeps one `Bucket` per non-empty step, and only for as long as some window or
baseline can still see it, so memory per group is bounded by
(window + baseline) / step buckets whatever the event rate.

Sums are kept as integers of millionths (`SCALE`), so a bucket's total is the
same whatever order its events arrived in: that is what makes a replay of a
shuffled stream byte-identical to the sorted one.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from engine.core.events import Event
from engine.core.sketch import DistinctSketch, QuantileSketch, user_hash
from engine.dsl.compiler import CompiledRule, getter

SCALE = 1_000_000  # sums are exact integers of millionths
EVIDENCE_K = 5
PERCENTILES = {"p50": 0.50, "p90": 0.90, "p95": 0.95, "p99": 0.99}
NUMERIC_FUNCS = {"sum", "avg", "min", "max", *PERCENTILES}


class Bucket:
    """Partial aggregates of one step of one group of one rule."""

    __slots__ = ("n", "hits", "vn", "total", "lo", "hi", "quantiles", "distinct", "users", "evidence")

    def __init__(self, rule: CompiledRule) -> None:
        self.n = 0  # events that passed `where`
        self.hits = 0  # of those, flagged (rate / count(flag))
        self.vn = 0  # of those, with a numeric value at the metric's field
        self.total = 0  # sum of those values, in millionths
        self.lo: float | None = None
        self.hi: float | None = None
        self.quantiles = QuantileSketch() if rule.func in PERCENTILES else None
        self.distinct = DistinctSketch() if rule.func == "distinct" else None
        self.users = DistinctSketch()  # users of the events that make the metric
        self.evidence: list[tuple[Any, str]] = []  # (order key, event_id), best first, at most EVIDENCE_K

    def snapshot(self) -> list:
        return [
            self.n, self.hits, self.vn, self.total, self.lo, self.hi,
            self.quantiles.snapshot() if self.quantiles is not None else None,
            self.distinct.snapshot() if self.distinct is not None else None,
            self.users.snapshot(), [list(e) for e in self.evidence],
        ]  # fmt: skip

    @staticmethod
    def restore(rule: CompiledRule, data: list) -> Bucket:
        b = Bucket(rule)
        b.n, b.hits, b.vn, b.total, b.lo, b.hi = data[:6]
        if data[6] is not None:
            b.quantiles = QuantileSketch.restore(data[6])
        if data[7] is not None:
            b.distinct = DistinctSketch.restore(data[7])
        b.users = DistinctSketch.restore(data[8])
        b.evidence = [(_tuple(k), i) for k, i in data[9]]
        return b


def _tuple(key: Any) -> Any:
    return tuple(key) if isinstance(key, list) else key


def _keep_evidence(bucket: Bucket, order: Any, event_id: str) -> None:
    item = (order, event_id)
    evidence = bucket.evidence
    if len(evidence) >= EVIDENCE_K and item >= evidence[-1]:
        return
    evidence.append(item)
    evidence.sort()
    del evidence[EVIDENCE_K:]


def accumulator(rule: CompiledRule) -> Callable[[Bucket, Event], None]:
    """The function that adds one event to a bucket, specialised per metric."""
    arg = rule.arg
    if rule.func in {"rate", "count"}:
        if arg is None:  # count(): every event counts

            def add_all(b: Bucket, ev: Event) -> None:
                b.n += 1
                user = ev.data.get("user")
                if user is not None:
                    b.users.add_hash(user_hash(user))
                _keep_evidence(b, ev.ts, ev.event_id)

            return add_all
        flag = arg[1]

        def add_flag(b: Bucket, ev: Event) -> None:
            b.n += 1
            flags = ev.data.get("flags")
            if flags and flags.get(flag) is True:
                b.hits += 1
                user = ev.data.get("user")
                if user is not None:
                    b.users.add_hash(user_hash(user))
                _keep_evidence(b, ev.ts, ev.event_id)

        return add_flag
    if rule.func == "distinct":
        get = getter(arg)

        def add_distinct(b: Bucket, ev: Event) -> None:
            b.n += 1
            value = get(ev.data)
            if value is not None:
                b.distinct.add(value)
                user = ev.data.get("user")
                if user is not None:
                    b.users.add_hash(user_hash(user))
                _keep_evidence(b, ev.ts, ev.event_id)

        return add_distinct
    get = getter(arg)
    low_is_bad = rule.op in {"<", "<="}  # evidence: the most extreme values in the rule's direction

    def add_value(b: Bucket, ev: Event) -> None:
        b.n += 1
        value = get(ev.data)
        kind = value.__class__
        if kind is float:
            if value != value:  # NaN
                return
        elif kind is not int:  # bools, strings, missing: not a number
            return
        b.vn += 1
        b.total += round(value * SCALE)
        if b.lo is None or value < b.lo:
            b.lo = value
        if b.hi is None or value > b.hi:
            b.hi = value
        if b.quantiles is not None:
            b.quantiles.add(value)
        user = ev.data.get("user")
        if user is not None:
            b.users.add_hash(user_hash(user))
        _keep_evidence(b, (value if low_is_bad else -value, ev.ts), ev.event_id)

    return add_value


@dataclass(slots=True)
class Summary:
    """A window (or baseline span) assembled from buckets."""

    n: int = 0
    hits: int = 0
    vn: int = 0
    total: int = 0
    lo: float | None = None
    hi: float | None = None
    quantiles: QuantileSketch | None = None
    distinct: DistinctSketch | None = None
    users: DistinctSketch | None = None
    evidence: list | None = None


def summarize(rule: CompiledRule, buckets: Iterable[Bucket], detail: bool) -> Summary:
    """Merge buckets; ``detail`` also merges users and evidence (for records, not for
    deciding whether a condition holds)."""
    s = Summary()
    buckets = list(buckets)
    if rule.func in PERCENTILES:
        s.quantiles = QuantileSketch()
    if rule.func == "distinct":
        s.distinct = DistinctSketch.union([b.distinct for b in buckets])
    if detail:
        s.users = DistinctSketch.union([b.users for b in buckets])
        s.evidence = []
    for b in buckets:
        s.n += b.n
        s.hits += b.hits
        s.vn += b.vn
        s.total += b.total
        if b.lo is not None and (s.lo is None or b.lo < s.lo):
            s.lo = b.lo
        if b.hi is not None and (s.hi is None or b.hi > s.hi):
            s.hi = b.hi
        if s.quantiles is not None and b.quantiles is not None:
            s.quantiles.merge(b.quantiles)
        if detail:
            s.evidence.extend(b.evidence)
    if detail:
        s.evidence.sort()
        del s.evidence[EVIDENCE_K:]
    return s


def metric_value(rule: CompiledRule, s: Summary) -> float | None:
    """The rule's metric over a summary; None when it has no value (no events)."""
    func = rule.func
    if func == "rate":
        return s.hits / s.n if s.n else None
    if func == "count":
        return float(s.hits if rule.arg is not None else s.n)
    if func == "sum":
        return s.total / SCALE
    if func == "avg":
        return s.total / SCALE / s.vn if s.vn else None
    if func == "min":
        return s.lo
    if func == "max":
        return s.hi
    if func == "distinct":
        return float(s.distinct.estimate())
    return s.quantiles.quantile(PERCENTILES[func])


def sample_size(rule: CompiledRule, s: Summary) -> int:
    """The events behind the metric: values for numeric functions, events otherwise."""
    return s.vn if rule.func in NUMERIC_FUNCS else s.n


def impact_events(rule: CompiledRule, s: Summary) -> int:
    """`events` in records and in `escalate ... if events`: the events that make the metric
    (flagged events for rate/count(flag), all events otherwise)."""
    return s.hits if rule.func in {"rate", "count"} and rule.arg is not None else sample_size(rule, s)
