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

from bisect import bisect_left
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from operator import itemgetter
from typing import Any

from firebreak.core.events import Event
from firebreak.core.significance import SQ_MAX
from firebreak.core.sketch import DistinctSketch, QuantileSketch, user_hash
from firebreak.dsl.compiler import CompiledRule, getter
from firebreak.dsl.metrics import SCALE, Accumulates

EVIDENCE_K = 5
# A metric reads a number only within -1e15..1e15 (NaN and infinities neither): past it, as a
# string or a boolean, the event is not a value. So no sum can wrap (millionths of it fit an
# i128 in the native engine for any number of events) and no sketch meets an infinity.
MAX_METRIC_VALUE = 1e15


class Bucket:
    """Partial aggregates of one step of one group of one rule."""

    __slots__ = ("n", "hits", "vn", "total", "lo", "hi", "quantiles", "distinct", "users", "evidence", "sq")

    def __init__(self, rule: CompiledRule) -> None:
        self.n = 0  # events that passed `where`
        self.hits = 0  # of those, flagged (rate / count(flag))
        self.vn = 0  # of those, with a numeric value at the metric's field
        self.total = 0  # sum of those values, in millionths
        self.lo: float | None = None
        self.hi: float | None = None
        self.quantiles = QuantileSketch() if rule.metric.quantile is not None else None
        self.distinct = DistinctSketch() if rule.metric.accumulates is Accumulates.DISTINCT else None
        self.users = DistinctSketch()  # users of the events that make the metric
        # (order key, event_id), best first, at most EVIDENCE_K; for a rule with scope dimensions
        # (CompiledRule.scope_dimensions) (order key, event_id, ((dimension, value), ...))
        self.evidence: list[tuple] = []
        # the values' sum of squares, in millionths squared, saturating at SQ_MAX: kept only
        # for a rule whose test reads the window's spread (CompiledRule.keeps_squares)
        self.sq: int | None = 0 if rule.keeps_squares else None

    def snapshot(self) -> list:
        data = [
            self.n,
            self.hits,
            self.vn,
            self.total,
            self.lo,
            self.hi,
            self.quantiles.snapshot() if self.quantiles is not None else None,
            self.distinct.snapshot() if self.distinct is not None else None,
            self.users.snapshot(),
            [[e[0], e[1]] if len(e) == 2 else [e[0], e[1], dict(e[2])] for e in self.evidence],
        ]
        if self.sq is not None:  # an eleventh part, only where kept (older snapshots lack it),
            data.append(str(self.sq))  # in decimal digits: it outgrows 64 bits (JSON readers' integers)
        return data

    @staticmethod
    def restore(rule: CompiledRule, data: list) -> Bucket:
        b = Bucket(rule)
        b.n, b.hits, b.vn, b.total, b.lo, b.hi = data[:6]
        if data[6] is not None:
            b.quantiles = QuantileSketch.restore(data[6])
        if data[7] is not None:
            b.distinct = DistinctSketch.restore(data[7])
        b.users = DistinctSketch.restore(data[8])
        b.evidence = [
            (_tuple(e[0]), e[1]) if len(e) == 2 else (_tuple(e[0]), e[1], tuple(e[2].items())) for e in data[9]
        ]
        if b.sq is not None and b.vn > 0:  # values saved without their squares: no known spread
            b.sq = _squares(data[10]) if len(data) > 10 else SQ_MAX
        return b


def _squares(saved: Any) -> int:
    """A saved sum of squares (decimal digits), or `SQ_MAX` — no known spread — if it is not one."""
    if isinstance(saved, str) and saved.isascii() and saved.isdigit() and len(saved) <= 39:
        return min(int(saved), SQ_MAX)
    return SQ_MAX


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


_evidence_key = itemgetter(0, 1)  # (order key, event_id): what evidence is sorted by


def _keep_scoped_evidence(bucket: Bucket, order: Any, event_id: str, scope: tuple) -> None:
    """``_keep_evidence`` with the event's scope values; ordered by (order, id) only, a new
    item before equal ones (as the native engine's partition point puts it)."""
    evidence = bucket.evidence
    key = (order, event_id)
    if len(evidence) >= EVIDENCE_K and key >= evidence[-1][:2]:
        return
    evidence.insert(bisect_left(evidence, key, key=_evidence_key), (order, event_id, scope))
    del evidence[EVIDENCE_K:]


def _affects(bucket: Bucket, ev: Event, order: Any) -> None:
    """An event that makes the metric: its user counts as affected, and it may be evidence
    (``order``: best first — its time, or its value in the rule's direction)."""
    user = ev.data.get("user")
    if user is not None:
        bucket.users.add_hash(user_hash(user))
    _keep_evidence(bucket, order, ev.event_id)


def _scoped_affects(dimensions: tuple[str, ...]) -> Callable[[Bucket, Event, Any], None]:
    """``_affects`` for a rule whose evidence keeps its events' values of ``dimensions``
    (strings only): where an incident's evidence concentrates (``evidence_scope``)."""

    def affects(bucket: Bucket, ev: Event, order: Any) -> None:
        data = ev.data
        user = data.get("user")
        if user is not None:
            bucket.users.add_hash(user_hash(user))
        scope = tuple((d, v) for d in dimensions if (v := data.get(d)).__class__ is str)
        _keep_scoped_evidence(bucket, order, ev.event_id, scope)

    return affects


def evidence_scope(dimensions: Sequence[str], evidence: Sequence[tuple]) -> dict[str, str]:
    """For each of ``dimensions``, the value more than half of the ``evidence`` items'
    events share, if any: the scope an incident's evidence concentrates in."""
    out = {}
    for dim in dimensions:
        values = Counter(v for e in evidence if len(e) > 2 for d, v in e[2] if d == dim)
        if values:
            value, n = values.most_common(1)[0]
            if 2 * n > len(evidence):
                out[dim] = value
    return out


def accumulator(rule: CompiledRule) -> Callable[[Bucket, Event], None]:
    """The function that adds one event to a bucket, specialised per metric kind."""
    arg, accumulates = rule.arg, rule.metric.accumulates
    dimensions = rule.scope_dimensions
    affects = _scoped_affects(dimensions) if dimensions else _affects
    if accumulates is Accumulates.EVENTS:  # count(): every event counts

        def add_all(b: Bucket, ev: Event) -> None:
            b.n += 1
            affects(b, ev, ev.ts)

        return add_all
    if accumulates is Accumulates.FLAGGED:
        flag = arg[1]

        def add_flag(b: Bucket, ev: Event) -> None:
            b.n += 1
            flags = ev.data.get("flags")
            if flags and flags.get(flag) is True:
                b.hits += 1
                affects(b, ev, ev.ts)

        return add_flag
    if accumulates is Accumulates.DISTINCT:
        get = getter(arg)

        def add_distinct(b: Bucket, ev: Event) -> None:
            b.n += 1
            value = get(ev.data)
            if value is not None:
                b.distinct.add(value)
                affects(b, ev, ev.ts)

        return add_distinct
    get = getter(arg)
    low_is_bad = rule.op in {"<", "<="}  # evidence: the most extreme values in the rule's direction

    squares = rule.keeps_squares

    def add_value(b: Bucket, ev: Event) -> None:
        b.n += 1
        value = get(ev.data)
        kind = value.__class__
        if kind is not float and kind is not int:  # bools, strings, missing: not a number
            return
        if not -MAX_METRIC_VALUE <= value <= MAX_METRIC_VALUE:  # NaN, infinities, extremes
            return
        b.vn += 1
        x = round(value * SCALE)
        b.total += x
        if squares:
            b.sq = min(b.sq + x * x, SQ_MAX)
        if b.lo is None or value < b.lo:
            b.lo = value
        if b.hi is None or value > b.hi:
            b.hi = value
        if b.quantiles is not None:
            b.quantiles.add(value)
        affects(b, ev, (value if low_is_bad else -value, ev.ts))

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
    sq: int | None = None  # the values' sum of squares (saturating), where the rule keeps it


def summarize(rule: CompiledRule, buckets: Iterable[Bucket], detail: bool) -> Summary:
    """Merge buckets; ``detail`` also merges users and evidence (for records, not for
    deciding whether a condition holds)."""
    s = Summary()
    buckets = list(buckets)
    if rule.metric.quantile is not None:
        s.quantiles = QuantileSketch()
    if rule.metric.accumulates is Accumulates.DISTINCT:
        s.distinct = DistinctSketch.union([b.distinct for b in buckets])
    if detail:
        s.users = DistinctSketch.union([b.users for b in buckets])
        s.evidence = []
    if rule.keeps_squares:
        s.sq = min(sum(b.sq for b in buckets), SQ_MAX)
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
        s.evidence.sort(key=_evidence_key)
        del s.evidence[EVIDENCE_K:]
    return s
