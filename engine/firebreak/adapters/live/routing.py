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
from collections.abc import Awaitable, Callable, Generator, Sequence
from dataclasses import dataclass
from typing import Any

import orjson

from firebreak.adapters.drive import ahead_text, decode_event
from firebreak.adapters.live.batch_cache import BatchCache
from firebreak.adapters.live.settings import WorkerSettings
from firebreak.adapters.traffic_check import TrafficWatch
from firebreak.core import InvalidEvent, validate_event
from firebreak.core.engine import AHEAD_CONFIRM
from firebreak.core.sharding import Router
from firebreak.dsl import CompiledRule
from firebreak.event_types import COUNTED

RAW_TEXT_FIELDS = ("prompt", "output")  # not forwarded: no rule needs them in a record, and they are big
DEAD_LETTER_RAW_CHARS = 4_096
ROUTED_MESSAGE_BYTES = 512 * 1024
log = logging.getLogger("firebreak.worker")


@dataclass(frozen=True, slots=True)
class Out:
    topic: str  # "routed" | "dead_letter"
    partition: int | None
    value: bytes


def stage_engine(rules: Sequence[CompiledRule], wanted: str | None) -> tuple[str, str | None]:
    """The engine the worker's stages run on, and why not the one wanted (None: it is).
    ``wanted``: ``native``, ``python`` or None for `drive.default_engine`. The native stages
    need the extension and every rule in its plan (docs/native.md); else the Python core."""
    from firebreak.adapters.drive import default_engine
    from firebreak.native import available
    from firebreak.native.plan import unsupported

    kind = wanted or default_engine()
    if kind != "native":
        return kind, None
    if not available():
        return "python", "the native extension is not built"
    for rule in rules:
        why = unsupported(rule)
        if why is not None:
            return "python", f"rule {rule.name} runs only on the Python core ({why})"
    return "native", None


class RouteStage:
    def __init__(self, rules: Sequence[CompiledRule], settings: WorkerSettings, engine: str | None = None) -> None:
        self.settings = settings
        self.wanted = engine if engine is not None else settings.engine
        self.max_ts: dict[int, int] = {}
        # per input partition: its events refused in a row as too far ahead of its time (`_ahead`)
        self.ahead_runs: dict[int, int] = {}
        self.stats: Counter[str] = Counter()
        self.cache = BatchCache()  # format 3: the batches this worker's shards take their events from
        self.local_shards: set[int] | None = None  # the shards assigned to this worker (None: all of them)
        self.set_rules(rules)

    def set_rules(self, rules: Sequence[CompiledRule]) -> None:
        self.engine, self.why_not = stage_engine(rules, self.wanted)
        self.router = Router(rules, self.settings.shards)
        self.version = self.router.version
        self.rules = tuple(rules)
        self.native = self.rerouter = None
        if self.engine == "native":
            self.native = self._native_router(rules)
        self.watch = TrafficWatch(rules)  # the first hour of traffic after a load: rules that never fire
        if not self.settings.traffic_check:
            self.watch.reported = True

    def _native_router(self, rules: Sequence[CompiledRule]) -> Any:
        from firebreak import _native
        from firebreak.native import _Host
        from firebreak.native.plan import plan_of

        plans = orjson.dumps([plan_of(rule) for rule in rules])
        return _native.NativeRouter(plans, self.settings.shards, _Host(rules), ROUTED_MESSAGE_BYTES)

    def handle(self, messages: Sequence[tuple[int, int, bytes | None]]) -> list[Out]:
        """A batch of input messages (partition, offset, value) → routed messages and dead letters.

        Each shard gets, per input partition in the batch, one payload (split when large): a
        header line ``{"v": 2, "p": partition, "hb": max event time, "rv": rules version}``,
        then a line ``OFFSET TS MASK EVENT`` for each event it must see — those of which it owns
        a (rule, group) pair, and every event that passes the `where` of a `Kx population` rule
        (each shard counts the whole population); MASK (hex) names those rules by index, so the
        shard looks at no other — possibly none: then the payload is just the partition's
        heartbeat."""
        if self.native is not None:
            return self._handle_native(messages)
        return self._handle_python(messages)

    def _handle_python(self, messages: Sequence[tuple[int, int, bytes | None]]) -> list[Out]:
        out: list[Out] = []
        shards = self.settings.shards
        by_partition: dict[int, list[list[bytes]]] = {}
        for partition, offset, raw in messages:
            lines = by_partition.get(partition)
            if lines is None:
                lines = by_partition[partition] = [[] for _ in range(shards)]
            self.stats["messages"] += 1
            event, dead = self._decode(partition, offset, raw)
            if dead is not None:
                out.append(dead)
                continue
            known = _ahead(partition, event.ts, self.max_ts, self.ahead_runs, self.settings.max_skew_ms)
            if known is not None:
                reason = ahead_text(event.ts, known, self.settings.max_skew_ms)
                out.append(self._dead(partition, offset, raw or b"", reason))
                continue
            self.stats["events"] += 1
            if event.ts > self.max_ts.get(partition, -1):
                self.max_ts[partition] = event.ts
            if event.type not in COUNTED:
                continue
            self.watch.observe(event)
            data = event.data
            if any(name in data for name in RAW_TEXT_FIELDS):
                data = {k: v for k, v in data.items() if k not in RAW_TEXT_FIELDS}
            masks = self.router.masks_of(data)
            if masks:
                head, raw_event = b"%d %d " % (offset, event.ts), orjson.dumps(data)
                for shard, mask in masks.items():
                    lines[shard].append(b"%s%x %s\n" % (head, mask, raw_event))
        self._watched()
        for partition, lines in by_partition.items():
            header = self._header(partition)
            for shard, items in enumerate(lines):
                for chunk in _chunks(items):
                    out.append(Out("routed", shard, header + b"".join(chunk)))
        return out

    def _handle_native(self, messages: Sequence[tuple[int, int, bytes | None]]) -> list[Out]:
        """`handle` in one native call per batch (format 3): the batch is kept decoded in this
        worker's `BatchCache` and each shard gets one reference to it — a header alone,
        ``{"v": 3, "b": batch key, "rv": rules version, "parts": [[input partition, its max event
        time, first offset, last offset, events for the shard], ...]}``.
        Only the messages the native decoder does not accept come back here, for the reason
        (or, rarely, an event only Python's decoder accepts: the batch is routed again with the
        time Python found)."""
        if not isinstance(messages, list):
            messages = list(messages)
        return self._finish_native(messages, _drive(self._route_native(messages, True), self.native.route_batch))

    async def handle_offloaded(self, messages: Sequence[tuple[int, int, bytes | None]],
                               offload: Callable[..., Awaitable[Any]]) -> list[Out]:  # fmt: skip
        """`handle`, with the native call run by ``offload(call, *args)`` (the worker: on a thread;
        the native router lets go of the GIL while it decodes and routes)."""
        if self.native is None:
            return self._handle_python(messages)
        if not isinstance(messages, list):
            messages = list(messages)
        steps = self._route_native(messages, True)
        args = next(steps)
        try:
            while True:
                args = steps.send(await offload(self.native.route_batch, *args))
        except StopIteration as done:
            return self._finish_native(messages, done.value)

    def _finish_native(self, messages: list[tuple[int, int, bytes | None]], routed) -> list[Out]:
        if routed is None:  # refused even with Python's time: a kind of event it does not know
            return self._handle_python(messages)
        batch, parts, refused, times, events, beats, runs, dead, ahead = routed
        self.stats["messages"] += len(messages)
        self.stats["events"] += events
        self.stats["dead_lettered"] += len(dead)
        self.max_ts.update(beats)
        self.ahead_runs.update(runs)
        if not self.watch.reported:  # the traffic check's first hour: it reads every event (in Python)
            for index, (_, _, raw) in enumerate(messages):
                if (index not in refused or index in times) and index not in ahead:
                    try:
                        self.watch.observe(decode_event(raw))
                    except InvalidEvent:
                        pass
            self._watched()
        shards = self.settings.shards
        mine = [shard for shard in range(shards) if self.local_shards is None or shard in self.local_shards]
        refs = {shard: 1 for shard in mine if any(counts[shard] for _, _, _, counts in parts)}
        key = self.cache.add(batch, refs)  # kept for this worker's shards that have events in it
        out = dead
        for shard in range(shards):
            refs_of_shard = [[partition, self.max_ts.get(partition), first, last, counts[shard]]
                             for partition, first, last, counts in parts]  # fmt: skip
            out.append(Out("routed", shard, orjson.dumps({"v": 3, "b": key, "rv": self.version,
                                                          "parts": refs_of_shard})))  # fmt: skip
        return out

    def _route_native(self, messages: list[tuple[int, int, bytes | None]], dead_letters: bool):
        """Steps (a generator: it yields the arguments of each call of a native router's
        `route_batch` and is sent its result; `_drive`) to (batch, parts, refused, times, events, beats,
        ahead runs, dead letters, indexes refused as too far ahead), with the events only Python's
        decoder accepts routed at the time it found; None when the native decoder refuses one of
        those even so. No counters move. An event the router refuses as too far ahead of its
        partition's time (`_ahead`) is refused for good: it is not decoded or routed again."""
        max_bytes, skew = self.settings.max_event_bytes, self.settings.max_skew_ms
        times: dict[int, int] = {}
        while True:
            args = messages, dict(times), dict(self.max_ts), max_bytes, dict(self.ahead_runs), skew
            batch, parts, refused, events, beats, runs, ahead = yield args
            refused = set(refused)
            dead, again = [], False
            for index in sorted(refused):
                partition, offset, raw = messages[index]
                if index in times:
                    return None
                event, letter = self._decode(partition, offset, raw, count=False)
                if letter is not None:
                    if dead_letters:
                        dead.append((index, letter))
                else:
                    times[index] = event.ts
                    again = True
            if not again:
                if dead_letters:
                    for index, ts, known in ahead:
                        partition, offset, raw = messages[index]
                        dead.append((index, self._dead(partition, offset, raw or b"", ahead_text(ts, known, skew),
                                                       count=False)))  # fmt: skip
                dead.sort(key=lambda item: item[0])  # in input order, as the Python path writes them
                refused_ahead = {index for index, _, _ in ahead}
                return batch, parts, refused, times, events, beats, runs, [d for _, d in dead], refused_ahead

    def reroute(self, records: list[tuple[int, int, bytes | None]], shard: int, partition: int) -> tuple[Any, str]:
        """A reference's events read again from the input topic (another worker kept the batch,
        or this one before a restart): (what the shard feeds, the rules version of its masks) —
        a kept batch on the native router, else the shard's format-2 lines. Routed exactly as
        stage 1 routes them, with no counter, time or dead letter of stage 1 moving."""
        if self.native is not None:
            if self.rerouter is None:  # its own router: stage 1's may be routing on a thread right now
                self.rerouter = self._native_router(self.rules)
            routed = _drive(self._route_native(records, False), self.rerouter.route_batch)
            if routed is not None:
                return routed[0], self.version
        lines = []
        max_ts, runs = dict(self.max_ts), dict(self.ahead_runs)  # as the native router does: a copy
        for p, offset, raw in records:
            if p != partition:
                continue
            event, dead = self._decode(p, offset, raw, count=False)
            if dead is not None or _ahead(p, event.ts, max_ts, runs, self.settings.max_skew_ms) is not None:
                continue
            if event.ts > max_ts.get(p, -1):
                max_ts[p] = event.ts
            if event.type not in COUNTED:
                continue
            data = {k: v for k, v in event.data.items() if k not in RAW_TEXT_FIELDS}
            mask = self.router.masks_of(data).get(shard)
            if mask:
                lines.append(b"%d %d %x %s\n" % (offset, event.ts, mask, orjson.dumps(data)))
        return b"".join(lines), self.version

    def _header(self, partition: int) -> bytes:
        return orjson.dumps({"v": 2, "p": partition, "hb": self.max_ts.get(partition), "rv": self.version}) + b"\n"

    def _watched(self) -> None:
        if self.watch.due():
            self._warn(self.watch.report())

    def _warn(self, warnings: list[tuple[str, str]]) -> None:
        """The traffic check's warnings (engine/firebreak/adapters/traffic_check.py) over this worker's input."""
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

    def _decode(self, partition: int, offset: int, raw: bytes | None, count: bool = True):
        raw = raw or b""
        if len(raw) > self.settings.max_event_bytes:
            reason = f"event is {len(raw)} bytes; the limit is {self.settings.max_event_bytes}"
            return None, self._dead(partition, offset, raw, reason, count)
        try:
            return validate_event(orjson.loads(raw)), None
        except orjson.JSONDecodeError as error:
            return None, self._dead(partition, offset, raw, f"invalid JSON: {error}", count)
        except InvalidEvent as error:
            return None, self._dead(partition, offset, raw, str(error), count)

    def _dead(self, partition: int, offset: int, raw: bytes, reason: str, count: bool = True) -> Out:
        if count:
            self.stats["dead_lettered"] += 1
        text = raw[:DEAD_LETTER_RAW_CHARS].decode("utf-8", "replace")
        record = {"reason": reason, "topic": self.settings.input_topic, "partition": partition, "offset": offset,
                  "bytes": len(raw), "raw": text}  # fmt: skip
        return Out("dead_letter", None, orjson.dumps(record))


def _ahead(partition: int, ts: int, max_ts: dict[int, int], runs: dict[int, int], skew: int | None) -> int | None:
    """`Engine.is_ahead` per input partition (native/src/route.rs does the same): the partition's
    largest event time when an event at ``ts`` is refused for being more than ``skew`` after it —
    unless it is the AHEAD_CONFIRM-th such event in a row (a producer back after an outage: taken)
    — else None. Counts the partition's refusals in a row in ``runs``."""
    if skew is None:
        return None
    known = max_ts.get(partition)
    if known is not None and ts > known + skew:
        run = runs.get(partition, 0) + 1
        if run < AHEAD_CONFIRM:
            runs[partition] = run
            return known
    runs[partition] = 0
    return None


def _drive(steps: Generator, route_batch: Callable[..., Any]) -> Any:
    """Run `RouteStage._route_native`'s steps here, each call of the router in turn."""
    args = next(steps)
    try:
        while True:
            args = steps.send(route_batch(*args))
    except StopIteration as done:
        return done.value


def _chunks(lines: list[bytes], limit_bytes: int = ROUTED_MESSAGE_BYTES) -> list[list[bytes]]:
    """Split a shard's event lines so one routed message stays well under Kafka's message limit."""
    chunks: list[list[bytes]] = [[]]
    size = 0
    for line in lines:
        if chunks[-1] and size + len(line) > limit_bytes:
            chunks.append([])
            size = 0
        chunks[-1].append(line)
        size += len(line)
    return chunks
