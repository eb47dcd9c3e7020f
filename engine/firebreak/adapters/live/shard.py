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
from typing import Any, NamedTuple

import orjson

from firebreak.adapters.live import batch_cache
from firebreak.core import Engine, Event, parse_ts
from firebreak.core.engine import READS_VERSIONS, reload
from firebreak.core.sharding import owner, rules_version
from firebreak.dsl import CompiledRule
from firebreak.event_types import EventType

SNAPSHOT_VERSION = 1
Fed = tuple[int, int, int, int]  # (next input offset to take, events taken, late, duplicates)


HEARTBEAT = ("heartbeat",)  # `_Part.kept` of a partition with no event for the shard


class _Part(NamedTuple):
    """One input partition of a routed message, as the shard takes it (`ShardState._part`)."""

    partition: int
    head: dict[str, Any]  # its event time ("hb"), and "idle" for an idle marker
    feed: Callable[[], Fed]  # feeds its events: → Fed
    kept: Any  # (kept batch, next offset, same rules) when `feed` is `Core.feed_batch` of a kept batch;
    #            HEARTBEAT when it has no event for the shard; else None


class MissingBatch(LookupError):
    """A routed reference whose batch is neither given nor kept in this process."""


class CheckpointError(ValueError):
    """A checkpoint this worker cannot restore (its message says why and what to do)."""


def split_routed(value: bytes) -> tuple[dict[str, Any], bytes]:
    """A routed message → (header, event lines). Since the batch path (format 2) a message is a
    header line and ``OFFSET TS EVENT`` lines; a message of the earlier format — one JSON object
    with ``ev: [[offset, event, pairs], ...]``, still on the routed topic after an upgrade — is
    turned into the same lines. Idle markers are a header alone in both."""
    header, newline, body = value.partition(b"\n")  # lines: OFFSET TS MASK EVENT (MASK: hex, or -)
    message = orjson.loads(header)
    if newline or not message.get("ev"):
        return message, body
    lines = [b"%d %d - %s\n" % (offset, parse_ts(data["ts"]), orjson.dumps(data)) for offset, data, *_ in message["ev"]]
    return message, b"".join(lines)


class ShardState:
    def __init__(self, rules: Sequence[CompiledRule], shard: int, shards: int, input_partitions: int,
                 lateness_ms: int, engine: str = "python") -> None:  # fmt: skip
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

            engine = NativeEngine(rules, lateness_ms) if snapshot is None else \
                NativeEngine.restore(rules, snapshot, lateness_ms)  # fmt: skip
            engine.own(self.shard, self.shards)
            return engine
        owns = owner(self.shard, self.shards)
        return Engine(rules, lateness_ms, owns=owns) if snapshot is None else \
            Engine.restore(rules, snapshot, lateness_ms, owns=owns)  # fmt: skip

    def accept(self, offset: int, value: bytes, batch: Any = None, batch_rules: str | None = None) -> bool:
        """Take one routed message; False when it was already taken (before a checkpoint).

        A reference to a kept batch (format 3) takes the events of each input partition it
        names from ``batch`` — stage 1's `RoutedBatch`, or {partition: what `RouteStage.reroute`
        made of its offsets read again from the input}, whose masks are of rules version
        ``batch_rules`` — or, when none is given, from the batch this process kept
        (batch_cache.py)."""
        parts = self._begin(offset, value, batch, batch_rules)
        if parts is None:
            return False
        self._end(parts, [part.feed() for part in parts])
        return True

    async def accept_offloaded(self, offset: int, value: bytes, batch: Any, batch_rules: str | None,
                               offload: Callable[[Callable[[], None]], Awaitable[None]]) -> bool:  # fmt: skip
        """`accept` then `tick`, with the feeding and the evaluation run by ``offload`` (the
        worker: on a thread, where the native core lets go of the GIL, so stage 1, the event
        loop and the other shards go on meanwhile). The worker holds the shard's lock."""
        parts = self._begin(offset, value, batch, batch_rules)
        if parts is None:
            return False
        kept = {id(part.kept[0]): part.kept for part in parts if part.kept not in (None, HEARTBEAT)}
        if len(kept) == 1 and all(part.kept is not None for part in parts):
            # The events of one kept batch: feeding and evaluating in one native call. Time
            # depends only on the headers' event times, so they are heard of first.
            [(batch, _, same_rules)] = kept.values()
            self._end_heads(parts)
            watermark = self.watermark()
            feeds = [(part.partition, part.kept[1]) for part in parts if part.kept is not HEARTBEAT]
            fed, records = await offload(lambda: self.engine.take_batch(batch, self.shard, feeds, same_rules,
                                                                        watermark))  # fmt: skip
            results = iter(fed)
            self._end_offsets(parts, [part.feed() if part.kept is HEARTBEAT else next(results) for part in parts])
            self._derived(records)
            return True

        def take() -> None:
            self._end(parts, [part.feed() for part in parts])
            self.tick()

        await offload(take)
        return True

    def _begin(self, offset: int, value: bytes, batch: Any, batch_rules: str | None) -> list[_Part] | None:
        """The message's input partitions as the shard takes them, or None for a re-delivery."""
        if offset < self.routed_next:
            self.stats["redelivered"] += 1
            return None
        message, body = split_routed(value)
        if message.get("v") == 3:
            if batch is None and any(part[4] for part in message["parts"]):
                batch, batch_rules = batch_cache.take(message["b"], self.shard), message.get("rv")
                if batch is None:
                    raise MissingBatch(f"shard {self.shard}: routed message {offset} names batch {message['b']}, "
                                       "which is not kept here: read it from the input first")  # fmt: skip
            self.routed_next = offset + 1
            return [self._part(partition, {"hb": hb}, n, batch, batch_rules)
                    for partition, hb, _first, _last, n in message["parts"]]  # fmt: skip
        self.routed_next = offset + 1
        partition = message["p"]
        return [self._part(partition, message, bool(body), body, message.get("rv"))]

    def _part(self, partition: int, head: dict[str, Any], events: int, batch: Any, batch_rules: str | None) -> _Part:
        next_offset = self.next_offset.get(partition, 0)
        if not events:  # a heartbeat: nothing to feed
            return _Part(partition, head, lambda: (next_offset, 0, 0, 0), HEARTBEAT)
        if isinstance(batch, dict):  # read again from the input, per partition
            batch = batch[partition]
        engine, same_rules = self.engine, batch_rules == self.rules_version  # masks name rules by index
        if isinstance(batch, bytes):
            body = batch
        elif self.kind == "native":
            feed = lambda: engine.feed_batch(batch, self.shard, partition, next_offset, same_rules)  # noqa: E731
            return _Part(partition, head, feed, (batch, next_offset, same_rules))
        else:
            body = batch.lines(self.shard, partition)
        if self.kind == "native":
            return _Part(partition, head, lambda: engine.feed_routed(body, next_offset, same_rules), None)
        return _Part(partition, head, lambda: self._feed_python(body, next_offset), None)

    def _end(self, parts: list[_Part], fed: list[Fed]) -> None:
        self._end_offsets(parts, fed)
        self._end_heads(parts)

    def _end_offsets(self, parts: list[_Part], fed: list[Fed]) -> None:
        for part, (next_offset, taken, late, duplicates) in zip(parts, fed, strict=True):
            self._took(taken, late, duplicates)
            self.next_offset[part.partition] = next_offset

    def _end_heads(self, parts: list[_Part]) -> None:
        for part in parts:
            self._heard(part.partition, part.head.get("hb"))
            if part.head.get("idle"):
                self.idle.add(part.partition)

    def needs_batch(self, offset: int, value: bytes) -> dict[str, Any] | None:
        """The header of a routed message that names a kept batch with events for this shard
        and is not a re-delivery (the worker finds the batch before `accept`); else None."""
        if offset < self.routed_next or not value.startswith(b'{"v":3'):
            return None
        message = orjson.loads(value)
        return message if any(part[4] for part in message["parts"]) else None

    def _took(self, taken: int, late: int, duplicates: int) -> None:
        self.stats["events"] += taken
        self.stats["late"] += late
        self.stats["duplicates"] += duplicates  # stage 1 re-sent them after a restart

    def _feed_python(self, body: bytes, next_offset: int) -> tuple[int, int, int, int]:
        taken = late = duplicates = 0
        for line in body.splitlines():
            offset, ts, _mask, raw = line.split(b" ", 3)  # the core looks at every rule
            source_offset = int(offset)
            if source_offset < next_offset:
                duplicates += 1
                continue
            next_offset = source_offset + 1
            data = orjson.loads(raw)
            if self.engine.add(Event(data["event_id"], int(ts), data.get("type", EventType.INFERENCE), data)):
                taken += 1
            else:
                late += 1
        return next_offset, taken, late, duplicates
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
            from firebreak.adapters.live.routing import stage_engine

            python = Engine.restore(self.rules, self.engine.snapshot(), owns=owner(self.shard, self.shards))
            python, records = reload(python, rules)
            self.kind = stage_engine(rules, "native")[0]  # python when a new rule is not native
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
        return {"kind": "head", "version": SNAPSHOT_VERSION, "routed_next": self.routed_next, "derived": self.derived,
                "mark": self.engine.watermark}  # fmt: skip

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
        bytes' meaning as of `snapshot`, ~2x sooner, and no Python object per group)."""
        if self.kind != "native" or not hasattr(orjson, "Fragment"):
            return self.snapshot()
        return {**self.snapshot_head(), "engine": orjson.Fragment(self.engine.snapshot_json())}

    @classmethod
    def restore(cls, rules: Sequence[CompiledRule], snapshot: dict[str, Any], input_partitions: int,
                lateness_ms: int, engine: str = "python") -> ShardState:  # fmt: skip
        version = snapshot.get("version")
        inner = (snapshot.get("engine") or {}).get("version")
        if version != SNAPSHOT_VERSION or inner not in READS_VERSIONS:
            raise CheckpointError(
                f"shard {snapshot.get('shard')}: its checkpoint has version {version!r} (engine state {inner!r}); "
                f"this worker reads version {SNAPSHOT_VERSION} (engine state "
                f"{' or '.join(map(str, READS_VERSIONS))}). It was written by another "
                "release of Firebreak: run that release, or start this group afresh with a new --app-id "
                "(its shards then begin with empty windows)")  # fmt: skip
        state = cls(rules, snapshot["shard"], snapshot["shards"], input_partitions, lateness_ms, engine)
        state.engine = state._engine(rules, lateness_ms, snapshot["engine"])
        state.routed_next = snapshot["routed_next"]
        state.derived = snapshot["derived"]
        state.next_offset = {int(p): o for p, o in snapshot["next_offset"].items()}
        state.max_ts = {int(p): t for p, t in snapshot["max_ts"].items()}
        state.idle = set(snapshot["idle"])
        state.stats.update(snapshot["stats"])
        return state
