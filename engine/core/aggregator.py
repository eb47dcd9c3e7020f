"""Pre-aggregation of one input stream (one Kafka partition), for scale-out.

An `Aggregator` turns the events of one partition into per-step partial
buckets, and hands over each bucket once the partition's own watermark has
passed its step: no later event of that partition can change it. An `Engine`
merges the partials of every partition (`Engine.merge_partial`) and evaluates
when the watermark over all partitions — the minimum — passes a step
(`Engine.advance`). Because buckets merge exactly (integer sums, set-based
sketches, sorted evidence), the records are those of one engine reading all
events: see docs/scale-out.md.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

from engine.core.engine import DEFAULT_LATENESS_MS, GroupState, RuleState, routes
from engine.core.events import Event
from engine.core.window import Bucket
from engine.dsl.compiler import CompiledRule

Partial = tuple[int, tuple, int, Bucket]  # (rule index, group key, step start, bucket)


class Aggregator:
    def __init__(self, rules: Sequence[CompiledRule], lateness_ms: int = DEFAULT_LATENESS_MS) -> None:
        self.rules = tuple(rules)
        self.lateness_ms = lateness_ms
        self.states = [RuleState(rule) for rule in self.rules]
        self.open: dict[tuple[int, tuple, int], Bucket] = {}
        self.max_ts: int | None = None
        self.min_ts: int | None = None
        self.watermark: int | None = None
        self.stats: Counter[str] = Counter()
        self._index = {id(state): i for i, state in enumerate(self.states)}

    def is_late(self, event: Event) -> bool:
        return self.watermark is not None and event.ts < self.watermark

    def process(self, event: Event) -> bool:
        """Add one event; False when it is late (counted, not aggregated)."""
        ts = event.ts
        if self.is_late(event):
            self.stats["late"] += 1
            return False
        self.stats["events"] += 1
        if self.min_ts is None or ts < self.min_ts:
            self.min_ts = ts
        if self.max_ts is None or ts > self.max_ts:
            self.max_ts = ts
            self.watermark = max(self.watermark or ts - self.lateness_ms, ts - self.lateness_ms)
        if event.type != "inference":
            self.stats["changes"] += 1
            return True
        for state, key in routes(self.states, event.data):
            step = state.rule.step_ms
            slot = (self._index[id(state)], key, ts - ts % step)
            bucket = self.open.get(slot)
            if bucket is None:
                bucket = self.open[slot] = Bucket(state.rule)
            state.add(bucket, event)
        return True

    def close(self, watermark: int | None = None) -> list[Partial]:
        """Hand over every bucket whose step ends at or before the watermark, in a fixed order."""
        limit = self.watermark if watermark is None else watermark
        if limit is None:
            return []
        done = [slot for slot in self.open if slot[2] + self.rules[slot[0]].step_ms <= limit]
        done.sort(key=lambda slot: (slot[2], slot[0], _order(slot[1])))
        return [(index, key, start, self.open.pop((index, key, start))) for index, key, start in done]

    def close_all(self) -> list[Partial]:
        done = sorted(self.open, key=lambda slot: (slot[2], slot[0], _order(slot[1])))
        return [(index, key, start, self.open.pop((index, key, start))) for index, key, start in done]


def _order(key: tuple) -> tuple:
    return GroupState.order_of(key)
