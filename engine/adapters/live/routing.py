"""Stage 1 — route: input partition → the shards that evaluate an event.

For each input message: dead-letter it if it is not an event (with the reason),
else forward it to every shard owning one of its (rule, group) pairs, tagged
with its input partition and offset (stage 2 drops re-deliveries by them).
Each input partition also tells every shard how far its event time has got
(heartbeats, at most one per `heartbeat_ms` of event time), and when it has
gone quiet (idle markers), so a shard's watermark — the minimum over input
partitions — neither waits for a partition with nothing to say nor runs ahead
of one that is merely slow.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

import orjson

from engine.adapters.live.settings import WorkerSettings
from engine.core import InvalidEvent, validate_event
from engine.core.sharding import Router
from engine.dsl import CompiledRule

RAW_TEXT_FIELDS = ("prompt", "output")  # not forwarded: no rule needs them in a record, and they are big
DEAD_LETTER_RAW_CHARS = 4_096


@dataclass(frozen=True, slots=True)
class Out:
    topic: str  # "routed" | "dead_letter"
    partition: int | None
    value: bytes


class RouteStage:
    def __init__(self, rules: Sequence[CompiledRule], settings: WorkerSettings) -> None:
        self.settings = settings
        self.router = Router(rules, settings.shards)
        self.max_ts: dict[int, int] = {}
        self.heartbeat_at: dict[int, int] = {}
        self.stats: Counter[str] = Counter()

    def set_rules(self, rules: Sequence[CompiledRule]) -> None:
        self.router = Router(rules, self.settings.shards)

    def handle(self, partition: int, offset: int, raw: bytes | None) -> list[Out]:
        self.stats["messages"] += 1
        raw = raw or b""
        if len(raw) > self.settings.max_event_bytes:
            return [self._dead(partition, offset, raw, f"event is {len(raw)} bytes; the limit is "
                                                      f"{self.settings.max_event_bytes}")]  # fmt: skip
        try:
            event = validate_event(orjson.loads(raw))
        except orjson.JSONDecodeError as error:
            return [self._dead(partition, offset, raw, f"invalid JSON: {error}")]
        except InvalidEvent as error:
            return [self._dead(partition, offset, raw, str(error))]
        self.stats["events"] += 1
        data = event.data
        if any(name in data for name in RAW_TEXT_FIELDS):
            data = {k: v for k, v in data.items() if k not in RAW_TEXT_FIELDS}
        shards = self.router.shards_for(data) if event.type == "inference" else set()
        out: list[Out] = []
        if shards:
            body = orjson.dumps({"p": partition, "o": offset, "e": data})
            out = [Out("routed", shard, body) for shard in sorted(shards)]
        previous = self.max_ts.get(partition)
        if previous is None or event.ts > previous:
            self.max_ts[partition] = event.ts
        top = self.max_ts[partition]
        last = self.heartbeat_at.get(partition)
        if last is None or top - last >= self.settings.heartbeat_ms:
            self.heartbeat_at[partition] = top
            beat = orjson.dumps({"p": partition, "o": offset, "hb": top})
            out += [Out("routed", shard, beat) for shard in range(self.settings.shards) if shard not in shards]
        return out

    def idle(self, partition: int, offset: int) -> list[Out]:
        """The partition has gone quiet and is caught up: tell every shard to stop waiting for it."""
        marker = orjson.dumps({"p": partition, "o": offset, "idle": True, "hb": self.max_ts.get(partition)})
        return [Out("routed", shard, marker) for shard in range(self.settings.shards)]

    def _dead(self, partition: int, offset: int, raw: bytes, reason: str) -> Out:
        self.stats["dead_lettered"] += 1
        text = raw[:DEAD_LETTER_RAW_CHARS].decode("utf-8", "replace")
        record = {"reason": reason, "topic": self.settings.input_topic, "partition": partition, "offset": offset,
                  "bytes": len(raw), "raw": text}  # fmt: skip
        return Out("dead_letter", None, orjson.dumps(record))
