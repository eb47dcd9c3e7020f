"""Stage 1 — route: input partition → the shards that evaluate an event.

Input messages arrive in batches, routed in one native call each (no Python per event). Each
message that is not an event is dead-lettered with the reason; each event goes, as data, to
every shard owning one of its (rule, group) pairs: one routed message per (batch, shard) carries
the rows of the events the shard must see (`routed.py`, format 7), so no shard ever reads the
input topic. Every batch also tells every shard how far each of its input partitions' event
time has got (the heartbeat), and a quiet partition is announced idle, so a shard's watermark —
the minimum over input partitions — neither waits for a partition with nothing to say nor runs
ahead of one that is merely slow.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Awaitable, Callable, Generator, Sequence
from dataclasses import dataclass
from typing import Any

import orjson

from firebreak.adapters.drive import ahead_text, decode_event
from firebreak.adapters.live import routed
from firebreak.adapters.live.settings import WorkerSettings
from firebreak.adapters.traffic_check import TrafficWatch
from firebreak.core import InvalidEvent
from firebreak.core.sharding import rules_version
from firebreak.dsl import CompiledRule

DEAD_LETTER_RAW_CHARS = 4_096
log = logging.getLogger("firebreak.worker")


@dataclass(frozen=True, slots=True)
class Out:
    topic: str  # "routed" | "dead_letter"
    partition: int | None
    value: bytes


class NotNative(ValueError):
    """Rules the worker cannot run: its stages run on the native engine only (docs/live.md)."""


def not_native(rules: Sequence[CompiledRule]) -> str | None:
    """Why the worker's native stages cannot run ``rules`` (None: they can): the extension is
    not built, or a rule is not in the native plan yet (docs/native.md)."""
    from firebreak.native import available
    from firebreak.native.plan import unsupported

    if not available():
        return "the native extension is not built (pip install firebreak builds it)"
    for rule in rules:
        why = unsupported(rule)
        if why is not None:
            return f"rule {rule.name} runs only on the Python core ({why}); replay it with `firebreak replay`"
    return None


# the first valid events of a partition (in the first batch stage 1 reads of it) whose times'
# median is the partition's time before any event is taken (`RouteStage._seed_times`)
SEED_EVENTS = 63
# fewer than this many in its first batch, and one crafted event is (or ties) the median: such a
# partition is measured from the latest time of the partitions stage 1 knows, when it knows one
SEED_TRUSTED = 3


class RouteStage:
    def __init__(self, rules: Sequence[CompiledRule], settings: WorkerSettings) -> None:
        self.settings = settings
        self.max_ts: dict[int, int] = {}
        # per input partition: its events refused in a row as too far ahead of its time
        # (native/src/route.rs `route_one`, engine.py `Engine.is_ahead` per partition)
        self.ahead_runs: dict[int, int] = {}
        self.stats: Counter[str] = Counter()
        self.set_rules(rules)

    def set_rules(self, rules: Sequence[CompiledRule]) -> None:
        """The rules to route by; raises NotNative (and keeps the rules it had) when it cannot."""
        why = not_native(rules)
        if why is not None:
            raise NotNative(why)
        self.native = self._native_router(rules)
        self.rules = tuple(rules)
        self.version = rules_version(rules)
        self.watch = TrafficWatch(rules)  # the first hour of traffic after a load: rules that never fire
        if not self.settings.traffic_check:
            self.watch.reported = True
        else:  # counted by the native router, every event it routes (native/src/watch.rs)
            try:
                self.native.watch_start(self.watch.native_spec())
            except ValueError as error:  # a layout the router cannot count: no watch, the rules run
                self.watch.reported = True
                log.warning(
                    "traffic check off for these rules: %s", error, extra={"fields": {"event": "traffic_check"}}
                )

    def _native_router(self, rules: Sequence[CompiledRule]) -> Any:
        from firebreak import _native
        from firebreak.native import _Host
        from firebreak.native.plan import plans_json

        return _native.NativeRouter(plans_json(rules), self.settings.shards, _Host(rules), routed.MESSAGE_BYTES)

    def handle(self, messages: Sequence[tuple[int, int, bytes | None]]) -> list[Out]:
        """A batch of input messages (partition, offset, value) → routed messages and dead letters,
        in one native call (`NativeRouter.route_batch`): per shard, one routed message
        (`routed.encode`; split when large) with the lines of the events it must see — those of
        which it owns a (rule, group) pair, and every event that passes the `where` of a `Kx
        population` rule (each shard counts the whole population) — and every input partition's
        heartbeat. Only the messages the native decoder does not accept come back here, for the
        reason (or, rarely, an event only Python's decoder accepts: the batch is routed again
        with the time Python found)."""
        if not isinstance(messages, list):
            messages = list(messages)
        return self._finish(messages, _drive(self._route_native(messages), self.native.route_batch))

    async def handle_offloaded(
        self, messages: Sequence[tuple[int, int, bytes | None]], offload: Callable[..., Awaitable[Any]]
    ) -> list[Out]:
        """`handle`, with the native call run by ``offload(call, *args)`` (the worker: on a thread;
        the native router lets go of the GIL while it decodes, routes and writes)."""
        if not isinstance(messages, list):
            messages = list(messages)
        steps = self._route_native(messages)
        args = next(steps)
        try:
            while True:
                args = steps.send(await offload(self.native.route_batch, *args))
        except StopIteration as done:
            return self._finish(messages, done.value)

    def _finish(self, messages: list[tuple[int, int, bytes | None]], result) -> list[Out]:
        bodies, parts, refused, times, events, beats, runs, dead, ahead, lone = result
        self.stats["messages"] += len(messages)
        self.stats["events"] += events
        self.stats["dead_lettered"] += len(dead)
        self.max_ts.update(beats)
        for partition, items in lone.items():
            # measured from the others' time: with an event taken that is its time too (so an
            # epoch-0 event does not make its next events "ahead"); with none, it has no time yet
            if all(index in ahead for index, _ in items):
                self.max_ts.pop(partition, None)
        self.ahead_runs.update(runs)
        if not self.watch.reported:  # the traffic check's first hour: counted by the native router
            self._watched()
        heads = [(partition, self.max_ts.get(partition)) for partition, _first, _last, _counts in parts]
        out = dead
        for shard, chunks in enumerate(bodies):
            for value in routed.encode(self.version, heads, chunks):
                out.append(Out("routed", shard, value))
        return out

    def _route_native(self, messages: list[tuple[int, int, bytes | None]]):
        """Steps (a generator: it yields the arguments of each call of the native router's
        `route_batch` and is sent its result; `_drive`) to (bodies per shard, parts, refused,
        times, events, beats, ahead runs, dead letters, indexes refused as too far ahead, the
        partitions measured from the others' time: `_seed_times`), with
        the events only Python's decoder accepts routed at the time it found. No counters move.
        An event the router refuses as too far ahead of its partition's time (`route_one`) is
        refused for good: it is not decoded or routed again."""
        max_bytes, skew = self.settings.max_event_bytes, self.settings.max_skew_ms
        times: dict[int, int] = {}
        seeds, lone = self._seed_times(messages)
        known = {**seeds, **self.max_ts}
        while True:
            args = messages, dict(times), known, max_bytes, dict(self.ahead_runs), skew
            batch = yield args  # a firebreak._native.RoutedBatch
            refused = set(batch.refused)
            dead, again = [], False
            for index in sorted(refused):
                partition, offset, raw = messages[index]
                if index in times:  # Python's decoder takes it, the native one not even at that time
                    reason = "an event the native decoder cannot read (its time or a field's type)"
                    dead.append((index, self._dead(partition, offset, raw or b"", reason, count=False)))
                    continue
                event, letter = self._decode(partition, offset, raw, count=False)
                if letter is not None:
                    dead.append((index, letter))
                else:
                    times[index] = event.ts
                    again = True
            if not again:
                for index, ts, known in batch.ahead:
                    partition, offset, raw = messages[index]
                    dead.append(
                        (index, self._dead(partition, offset, raw or b"", ahead_text(ts, known, skew), count=False))
                    )
                dead.sort(key=lambda item: item[0])  # in input order
                refused_ahead = {index for index, _, _ in batch.ahead}
                return (
                    batch.bodies,
                    batch.parts,
                    refused,
                    times,
                    batch.events,
                    batch.beats,
                    batch.runs,
                    [d for _, d in dead],
                    refused_ahead,
                    lone,
                )

    def _watched(self) -> None:
        """Once the native router's watch has seen ``span_ms`` of event time: its tallies, the warnings."""
        seen = self.native.watch_span()
        if seen is not None and seen[1] - seen[0] >= self.watch.span_ms:
            self.watch.load_native(self.native.watch_take())
            self._warn(self.watch.report())

    def _warn(self, warnings: list[tuple[str, str]]) -> None:
        """The traffic check's warnings (engine/firebreak/adapters/traffic_check.py) over this worker's input."""
        span = self.watch.span_ms // 60_000
        for rule, warning in warnings:
            fields = {"event": "traffic_warning", "rule": rule, "warning": warning}
            log.warning(
                "rule %s: %s (traffic check over %d min of this worker's input partitions)",
                rule,
                warning,
                span,
                extra={"fields": fields},
            )
        if not warnings:
            log.info(
                "traffic check: no warnings over %d min of this worker's input partitions",
                span,
                extra={"fields": {"event": "traffic_check", "warnings": 0}},
            )

    def idle(self, partition: int) -> list[Out]:
        """The partition has gone quiet and is caught up: tell every shard to stop waiting for it."""
        value = routed.encode_idle(self.version, partition, self.max_ts.get(partition))
        return [Out("routed", shard, value) for shard in range(self.settings.shards)]

    def _seed_times(
        self, messages: list[tuple[int, int, bytes | None]]
    ) -> tuple[dict[int, int], dict[int, list[tuple[int, int]]]]:
        """The time the maximum skew is measured from on partitions whose time stage 1 does not
        know yet (the first batch after a start, an assignment or a reload of the worker): the
        median of the times of their first SEED_EVENTS valid events in the batch — not the first
        event's own. So one crafted event read first after a restart neither makes the events
        after it "ahead" (an epoch-0 timestamp: they would be dead-lettered, 7 in a row, before
        the clock moved) nor is taken (a far-future one: it would move the partition's time, and
        with it the shards' watermark, past every real event). A partition whose first batch
        holds fewer than SEED_TRUSTED events is measured from the latest time of the partitions
        stage 1 knows (their times, and those seeded from enough events in this batch): a lone
        crafted event in a partition's first batch is refused as ahead of the others, or taken
        as an old one. Only when stage 1 knows no time at all is it seeded by its own events.
        With the seeds, those partitions' (index, time) of their events (`_finish`: one whose
        events were all refused as ahead is given no time)."""
        lone: dict[int, list[tuple[int, int]]] = {}
        if self.settings.max_skew_ms is None or self.max_ts.keys() >= {m[0] for m in messages}:
            return {}, lone
        seen: dict[int, list[tuple[int, int]]] = {}  # partition → (index, time) of its first valid events
        for index, (partition, _offset, raw) in enumerate(messages):
            if partition in self.max_ts:
                continue
            items = seen.setdefault(partition, [])
            if len(items) < SEED_EVENTS:
                try:
                    items.append((index, decode_event(raw, self.settings.max_event_bytes).ts))
                except InvalidEvent:
                    continue
        seeds = {
            partition: sorted(ts for _, ts in items)[len(items) // 2] for partition, items in seen.items() if items
        }
        trusted = [seeds[p] for p, items in seen.items() if len(items) >= SEED_TRUSTED] + list(self.max_ts.values())
        if trusted:
            latest = max(trusted)
            for partition, items in seen.items():
                if 0 < len(items) < SEED_TRUSTED:
                    seeds[partition] = latest
                    lone[partition] = items
        return seeds, lone

    def _decode(self, partition: int, offset: int, raw: bytes | None, count: bool = True):
        raw = raw or b""
        try:
            return decode_event(raw, self.settings.max_event_bytes), None
        except InvalidEvent as error:
            return None, self._dead(partition, offset, raw, str(error), count)

    def _dead(self, partition: int, offset: int, raw: bytes, reason: str, count: bool = True) -> Out:
        if count:
            self.stats["dead_lettered"] += 1
        text = raw[:DEAD_LETTER_RAW_CHARS].decode("utf-8", "replace")
        record = {
            "reason": reason,
            "topic": self.settings.input_topic,
            "partition": partition,
            "offset": offset,
            "bytes": len(raw),
            "raw": text,
        }
        return Out("dead_letter", None, orjson.dumps(record))


def _drive(steps: Generator, route_batch: Callable[..., Any]) -> Any:
    """Run `RouteStage._route_native`'s steps here, each call of the router in turn."""
    args = next(steps)
    try:
        while True:
            args = steps.send(route_batch(*args))
    except StopIteration as done:
        return done.value
