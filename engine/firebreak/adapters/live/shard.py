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
(engine/firebreak/adapters/live/checkpoints.py).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import orjson

from firebreak.adapters.live import routed
from firebreak.core import Engine
from firebreak.core.engine import READS_VERSIONS, reload
from firebreak.core.sharding import owner, rules_version
from firebreak.dsl import CompiledRule

SNAPSHOT_VERSION = 1


class CheckpointError(ValueError):
    """A checkpoint this worker cannot restore (its message says why and what to do)."""


class ShardState:
    def __init__(
        self,
        rules: Sequence[CompiledRule],
        shard: int,
        shards: int,
        input_partitions: int,
        lateness_ms: int,
        engine: str = "native",
    ) -> None:
        """``engine``: ``native`` (the worker) or ``python`` (the Python core: the oracle tests
        compare the native shard with)."""
        self.shard, self.shards, self.input_partitions = shard, shards, input_partitions
        self.kind = engine
        self.engine: Any = self._engine(rules, lateness_ms)
        self.rules = tuple(rules)
        self.rules_version = rules_version(rules)
        self.routed_next = 0  # the next offset of this shard's routed partition to take
        self.next_offset: dict[int, int] = {}  # per input partition: the next offset to take
        self.max_ts: dict[int, int] = {}  # per input partition: the largest event time heard of
        self.idle: set[int] = set()
        self.pending: list[dict[str, Any]] = []  # records not yet committed
        self.derived = 0  # records derived since the shard began (committed or to be)
        self.suppress = 0  # after a restore: records to derive again without sending (already committed)
        self.stats: Counter[str] = Counter()

    def _engine(self, rules: Sequence[CompiledRule], lateness_ms: int, snapshot: dict[str, Any] | None = None) -> Any:
        """This shard's engine (only its pairs), fresh or from a snapshot of either engine."""
        if self.kind == "native":
            from firebreak.native import NativeEngine

            engine = (
                NativeEngine(rules, lateness_ms)
                if snapshot is None
                else NativeEngine.restore(rules, snapshot, lateness_ms)
            )
            engine.own(self.shard, self.shards)
            return engine
        owns = owner(self.shard, self.shards)
        return (
            Engine(rules, lateness_ms, owns=owns)
            if snapshot is None
            else Engine.restore(rules, snapshot, lateness_ms, owns=owns)
        )

    def accept(self, offset: int, value: bytes) -> bool:
        """Take one routed message (routed.py) without evaluating (`tick` does); False when it
        was already taken (before a checkpoint)."""
        message = self._begin(offset, value)
        if message is None:
            return False
        self._feed(message, None)
        return True

    async def accept_offloaded(
        self, offset: int, value: bytes, offload: Callable[[Callable[[], Any]], Awaitable[Any]]
    ) -> bool:
        """`accept` then `tick`, with the feeding and the evaluation run by ``offload`` (the
        worker: on a thread, where the native core lets go of the GIL, so stage 1, the event
        loop and the other shards go on meanwhile) — one native call. The worker holds the
        shard's lock."""
        message = self._begin(offset, value)
        if message is None:
            return False
        watermark = self.watermark()  # time depends only on the headers: heard of in `_begin`
        if self.kind != "native":
            await offload(lambda: self._feed(message, None))
            self.tick()
            return True
        await offload(lambda: self._feed(message, watermark))
        return True

    def _begin(self, offset: int, value: bytes) -> routed.Routed | None:
        """The message, its heartbeats and idle markers heard of; None for a re-delivery."""
        if offset < self.routed_next:
            self.stats["redelivered"] += 1
            return None
        message = routed.decode(value)
        self.routed_next = offset + 1
        for partition, ts in message.heads:
            self._heard(partition, ts)
        self.idle.update(message.idle)
        return message

    def _feed(self, message: routed.Routed, watermark: int | None) -> None:
        """The message's events into the engine, then (native, ``watermark`` given) evaluated."""
        same_rules = message.rules_version == self.rules_version  # masks name rules by index
        if self.kind == "python":
            if message.body:
                self._took(*routed.feed_python(self.engine, message.body, self.next_offset, same_rules))
            return
        if not message.body and watermark is None:
            return
        next_offset, taken, late, duplicates, records = self.engine.take_routed(
            message.body, self.next_offset, same_rules, watermark
        )
        self.next_offset = next_offset
        self._took(taken, late, duplicates)
        self._derived(records)

    def _took(self, taken: int, late: int, duplicates: int) -> None:
        self.stats["events"] += taken
        self.stats["late"] += late
        self.stats["duplicates"] += duplicates  # stage 1 re-sent them after a restart

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
        if self.kind == "native":  # the reload's records are the Python core's: through its snapshot
            python = Engine.restore(self.rules, self.engine.snapshot(), owns=owner(self.shard, self.shards))
            python, records = reload(python, rules)
            self.engine = self._engine(rules, self.engine.lateness_ms, python.snapshot())
        else:
            self.engine, records = reload(self.engine, rules)
        self.rules = tuple(rules)
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
        """The small checkpoint committed with every batch of records: how far this shard got, and
        ``mark``, its watermark: its records up to there are committed (the case stage waits for it)."""
        return {
            "kind": "head",
            "version": SNAPSHOT_VERSION,
            "routed_next": self.routed_next,
            "derived": self.derived,
            "mark": self.engine.watermark,
        }

    def snapshot(self) -> dict[str, Any]:
        """The full checkpoint. ``engine`` is the core's snapshot layout (Engine.snapshot), which
        both engines write and restore: a checkpoint of a worker on either restores on either."""
        return {**self.snapshot_head(), "engine": self.engine.snapshot()}

    def snapshot_head(self) -> dict[str, Any]:
        """The full checkpoint but the engine's state."""
        return {
            "kind": "full",
            "version": SNAPSHOT_VERSION,
            "mark": self.engine.watermark,
            "derived": self.derived,
            "shard": self.shard,
            "shards": self.shards,
            "routed_next": self.routed_next,
            "next_offset": {str(p): o for p, o in sorted(self.next_offset.items())},
            "max_ts": {str(p): t for p, t in sorted(self.max_ts.items())},
            "idle": sorted(self.idle),
            "stats": dict(self.stats),
            "written_by": self.kind,
        }

    def checkpoint(self) -> dict[str, Any]:
        """`snapshot` as the worker commits it: on the native engine, its state is JSON the
        core wrote in one call (an ``orjson.Fragment``: ``orjson.dumps`` gives the same
        bytes' meaning as of `snapshot`, sooner — benchmarks/README.md, "Full checkpoints" — and no
        Python object per group)."""
        if self.kind != "native" or not hasattr(orjson, "Fragment"):
            return self.snapshot()
        return {**self.snapshot_head(), "engine": orjson.Fragment(self.engine.snapshot_json())}

    @classmethod
    def restore(
        cls,
        rules: Sequence[CompiledRule],
        snapshot: dict[str, Any],
        input_partitions: int,
        lateness_ms: int,
        engine: str = "native",
    ) -> ShardState:
        version = snapshot.get("version")
        inner = (snapshot.get("engine") or {}).get("version")
        if version != SNAPSHOT_VERSION or inner not in READS_VERSIONS:
            raise CheckpointError(
                f"shard {snapshot.get('shard')}: its checkpoint has version {version!r} (engine state {inner!r}); "
                f"this worker reads version {SNAPSHOT_VERSION} (engine state "
                f"{' or '.join(map(str, READS_VERSIONS))}). It was written by another "
                "release of Firebreak: run that release, or start this group afresh with a new --app-id "
                "(its shards then begin with empty windows)"
            )
        state = cls(rules, snapshot["shard"], snapshot["shards"], input_partitions, lateness_ms, engine)
        state.engine = state._engine(rules, lateness_ms, snapshot["engine"])
        state.routed_next = snapshot["routed_next"]
        state.derived = snapshot["derived"]
        state.next_offset = {int(p): o for p, o in snapshot["next_offset"].items()}
        state.max_ts = {int(p): t for p, t in snapshot["max_ts"].items()}
        state.idle = set(snapshot["idle"])
        state.stats.update(snapshot["stats"])
        return state
