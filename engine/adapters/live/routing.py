"""Stage 1 — route: input partition → the shards that evaluate an event.

Input messages arrive in batches. Each message that is not an event is
dead-lettered with the reason; each event goes to every shard owning one of its
(rule, group) pairs, tagged with its input partition and offset (stage 2 drops
re-deliveries by them). Every batch also tells every shard how far each of its
input partitions' event time has got (the heartbeat), and a quiet partition is
announced idle, so a shard's watermark — the minimum over input partitions —
neither waits for a partition with nothing to say nor runs ahead of one that
is merely slow.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

import orjson

from engine.adapters.live.settings import WorkerSettings
from engine.adapters.traffic_check import TrafficWatch
from engine.core import InvalidEvent, validate_event
from engine.core.sharding import Router
from engine.dsl import CompiledRule

RAW_TEXT_FIELDS = ("prompt", "output")  # not forwarded: no rule needs them in a record, and they are big
DEAD_LETTER_RAW_CHARS = 4_096
ROUTED_MESSAGE_BYTES = 512 * 1024
log = logging.getLogger("firebreak.worker")


@dataclass(frozen=True, slots=True)
class Out:
    topic: str  # "routed" | "dead_letter"
    partition: int | None
    value: bytes


class RouteStage:
    def __init__(self, rules: Sequence[CompiledRule], settings: WorkerSettings) -> None:
        self.settings = settings
        self.router = Router(rules, settings.shards)
        self.watch = TrafficWatch(rules)  # the first hour of traffic after a load: rules that never fire
        self.max_ts: dict[int, int] = {}
        self.stats: Counter[str] = Counter()

    def set_rules(self, rules: Sequence[CompiledRule]) -> None:
        self.router = Router(rules, self.settings.shards)
        self.watch = TrafficWatch(rules)

    def handle(self, messages: Sequence[tuple[int, int, bytes | None]]) -> list[Out]:
        """A batch of input messages (partition, offset, value) → routed messages and dead letters.

        Each shard gets, per input partition in the batch, one message (split when large):
        ``{"p": partition, "hb": max event time, "rv": rules version, "ev": [[offset, event, pairs],
        ...]}`` — the events it owns a pair of (with those pairs: [rule index, group key]),
        possibly none: then it is just the partition's heartbeat."""
        out: list[Out] = []
        shards = self.settings.shards
        by_partition: dict[int, list[list[list]]] = {}
        for partition, offset, raw in messages:
            lists = by_partition.get(partition)
            if lists is None:
                lists = by_partition[partition] = [[] for _ in range(shards)]
            self.stats["messages"] += 1
            event, dead = self._decode(partition, offset, raw)
            if dead is not None:
                out.append(dead)
                continue
            self.stats["events"] += 1
            if event.ts > self.max_ts.get(partition, -1):
                self.max_ts[partition] = event.ts
            if event.type != "inference":
                continue
            self.watch.observe(event)
            data = event.data
            if any(name in data for name in RAW_TEXT_FIELDS):
                data = {k: v for k, v in data.items() if k not in RAW_TEXT_FIELDS}
            for shard, pairs in self.router.pairs_by_shard(data).items():
                lists[shard].append([offset, data, pairs])
        if self.watch.due():
            self._warn(self.watch.report())
        for partition, lists in by_partition.items():
            beat = self.max_ts.get(partition)
            for shard, events in enumerate(lists):
                for chunk in _chunks(events) if events else [[]]:
                    message = {"p": partition, "hb": beat, "rv": self.router.version, "ev": chunk}
                    out.append(Out("routed", shard, orjson.dumps(message)))
        return out

    def _warn(self, warnings: list[tuple[str, str]]) -> None:
        """The traffic check's warnings (engine/adapters/traffic_check.py) over this worker's input."""
        span = self.watch.span_ms // 60_000
        for rule, warning in warnings:
            fields = {"event": "traffic_warning", "rule": rule, "warning": warning}
            log.warning("rule %s: %s (traffic check over %d min of this worker's input partitions)", rule, warning,
                        span, extra={"fields": fields})  # fmt: skip
        if not warnings:
            log.info("traffic check: no warnings over %d min of this worker's input partitions", span,
                     extra={"fields": {"event": "traffic_check", "warnings": 0}})  # fmt: skip

    def idle(self, partition: int) -> list[Out]:
        """The partition has gone quiet and is caught up: tell every shard to stop waiting for it."""
        marker = orjson.dumps({"p": partition, "idle": True, "hb": self.max_ts.get(partition)})
        return [Out("routed", shard, marker) for shard in range(self.settings.shards)]

    def _decode(self, partition: int, offset: int, raw: bytes | None):
        raw = raw or b""
        if len(raw) > self.settings.max_event_bytes:
            reason = f"event is {len(raw)} bytes; the limit is {self.settings.max_event_bytes}"
            return None, self._dead(partition, offset, raw, reason)
        try:
            return validate_event(orjson.loads(raw)), None
        except orjson.JSONDecodeError as error:
            return None, self._dead(partition, offset, raw, f"invalid JSON: {error}")
        except InvalidEvent as error:
            return None, self._dead(partition, offset, raw, str(error))

    def _dead(self, partition: int, offset: int, raw: bytes, reason: str) -> Out:
        self.stats["dead_lettered"] += 1
        text = raw[:DEAD_LETTER_RAW_CHARS].decode("utf-8", "replace")
        record = {"reason": reason, "topic": self.settings.input_topic, "partition": partition, "offset": offset,
                  "bytes": len(raw), "raw": text}  # fmt: skip
        return Out("dead_letter", None, orjson.dumps(record))


def _chunks(events: list, limit_bytes: int = ROUTED_MESSAGE_BYTES) -> list[list]:
    """Split a shard's events so one routed message stays well under Kafka's message limit."""
    chunks, current, size = [], [], 0
    for item in events:
        length = len(orjson.dumps(item[1]))
        if current and size + length > limit_bytes:
            chunks.append(current)
            current, size = [], 0
        current.append(item)
        size += length
    chunks.append(current)
    return chunks
