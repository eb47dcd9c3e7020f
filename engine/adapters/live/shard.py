"""Stage 2 — evaluate: one shard of (rule, group) pairs, fed by every input partition.

`ShardState` is the shard's whole state and logic without Kafka: it takes the
routed messages in order, drops re-deliveries (by input partition and offset),
feeds events to an `Engine` that owns only this shard's pairs, and moves time
(the watermark, less the allowed lateness):

- to the minimum event time over the input partitions that are active;
- partitions marked idle (caught up and quiet) do not hold it back;
- when every partition is idle, everything published has been seen: time
  reaches the largest event time heard of, so a quiet system finishes every
  decision its events allow;
- it never goes backwards: a partition that speaks again with older events
  gets them counted late (docs/live.md, "Time").

Its snapshot, with the position in the routed partition, is the full
checkpoint; `header` is the small one committed with each batch of records
(engine/adapters/live/checkpoints.py).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from typing import Any

import orjson

from engine.core import Engine, Event, parse_ts
from engine.core.engine import key_from_json, reload
from engine.core.sharding import owner, rules_version
from engine.dsl import CompiledRule

SNAPSHOT_VERSION = 1


class ShardState:
    def __init__(self, rules: Sequence[CompiledRule], shard: int, shards: int, input_partitions: int,
                 lateness_ms: int) -> None:  # fmt: skip
        self.shard, self.shards, self.input_partitions = shard, shards, input_partitions
        self.engine = Engine(rules, lateness_ms, owns=owner(shard, shards))
        self.rules_version = rules_version(rules)
        self.routed_next = 0  # the next offset of this shard's routed partition to take
        self.next_offset: dict[int, int] = {}  # per input partition: the next offset to take
        self.max_ts: dict[int, int] = {}  # per input partition: the largest event time heard of
        self.idle: set[int] = set()
        self.pending: list[dict[str, Any]] = []  # records not yet committed
        self.derived = 0  # records derived since the shard began (committed or to be)
        self.suppress = 0  # after a restore: records to derive again without sending (already committed)
        self.stats: Counter[str] = Counter()

    def accept(self, offset: int, value: bytes) -> bool:
        """Take one routed message; False when it was already taken (before a checkpoint)."""
        if offset < self.routed_next:
            self.stats["redelivered"] += 1
            return False
        self.routed_next = offset + 1
        message = orjson.loads(value)
        partition = message["p"]
        next_offset = self.next_offset.get(partition, 0)
        same_rules = message.get("rv") == self.rules_version  # else: work the pairs out again
        for source_offset, data, *pairs in message.get("ev", ()):
            if source_offset < next_offset:
                self.stats["duplicates"] += 1  # stage 1 re-sent it after a restart
                continue
            next_offset = source_offset + 1
            event = Event(data["event_id"], parse_ts(data["ts"]), data.get("type", "inference"), data)
            routed = [(index, key_from_json(key)) for index, key in pairs[0]] if same_rules and pairs else None
            if not self.engine.add(event, routed):
                self.stats["late"] += 1
        self.next_offset[partition] = next_offset
        self._heard(partition, message.get("hb"))
        if message.get("idle"):
            self.idle.add(partition)
        return True

    def _heard(self, partition: int, ts: int | None) -> None:
        self.idle.discard(partition)
        if ts is not None and ts > self.max_ts.get(partition, -1):
            self.max_ts[partition] = ts

    def watermark(self) -> int | None:
        """Where time stands for this shard (never behind where it stood): the minimum event
        time over active input partitions, or the maximum over all when every one is idle,
        less the lateness. None while an active partition has not been heard of at all, or
        nothing has been heard of anywhere."""
        active = []
        for partition in range(self.input_partitions):
            if partition in self.idle:
                continue
            if partition not in self.max_ts:
                return self.engine.watermark
            active.append(self.max_ts[partition])
        if active:
            mark = min(active)
        elif self.max_ts:
            mark = max(self.max_ts.values())  # all quiet and caught up: every event published was seen
        else:
            return self.engine.watermark
        mark -= self.engine.lateness_ms
        current = self.engine.watermark
        return mark if current is None or mark > current else current

    def tick(self) -> list[dict[str, Any]]:
        """Evaluate every step the watermark has passed; the records join `pending`."""
        watermark = self.watermark()
        if watermark is None:
            return []
        return self._derived(self.engine.advance(watermark))

    def set_rules(self, rules: Sequence[CompiledRule]) -> list[dict[str, Any]]:
        self.engine, records = reload(self.engine, rules)
        self.rules_version = rules_version(rules)
        return self._derived(records)

    def _derived(self, records: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Count records as derived; the first `suppress` after a restore were committed before."""
        self.derived += len(records)
        if self.suppress:
            skip = min(self.suppress, len(records))
            self.suppress -= skip
            records = records[skip:]
        self.pending.extend(records)
        return records

    def header(self) -> dict[str, Any]:
        """The small checkpoint committed with every batch of records: how far this shard got."""
        return {"kind": "head", "version": SNAPSHOT_VERSION, "routed_next": self.routed_next, "derived": self.derived}

    def snapshot(self) -> dict[str, Any]:
        return {
            "kind": "full",
            "version": SNAPSHOT_VERSION,
            "derived": self.derived,
            "shard": self.shard,
            "shards": self.shards,
            "routed_next": self.routed_next,
            "next_offset": {str(p): o for p, o in sorted(self.next_offset.items())},
            "max_ts": {str(p): t for p, t in sorted(self.max_ts.items())},
            "idle": sorted(self.idle),
            "stats": dict(self.stats),
            "engine": self.engine.snapshot(),
        }

    @classmethod
    def restore(cls, rules: Sequence[CompiledRule], snapshot: dict[str, Any], input_partitions: int,
                lateness_ms: int) -> ShardState:  # fmt: skip
        if snapshot.get("version") != SNAPSHOT_VERSION:
            raise ValueError(f"unsupported shard snapshot version {snapshot.get('version')!r}")
        state = cls(rules, snapshot["shard"], snapshot["shards"], input_partitions, lateness_ms)
        state.engine = Engine.restore(rules, snapshot["engine"], lateness_ms, owns=owner(state.shard, state.shards))
        state.routed_next = snapshot["routed_next"]
        state.derived = snapshot["derived"]
        state.next_offset = {int(p): o for p, o in snapshot["next_offset"].items()}
        state.max_ts = {int(p): t for p, t in snapshot["max_ts"].items()}
        state.idle = set(snapshot["idle"])
        state.stats.update(snapshot["stats"])
        return state
