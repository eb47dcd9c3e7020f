"""Replay a Kafka topic over an event-time range through the core engine.

    result = replay_topic("127.0.0.1:9092", "ai.inference.events", since_ms, until_ms, rules, emit)
    events = read_topic_events("127.0.0.1:9092", "ai.inference.events", start_ms, stop_ms)

Reading: one consumer with no group (nothing is committed), read_committed, assigned
every partition of the topic. Each partition starts at the offset `offsets_for_times`
gives for the start of the range less a slack, and is read up to the end offset it had
when the replay began, or until it yields an event at or past the end of the range plus
the slack. Record timestamps are only used to seek: producers send after the event, so
a record's timestamp is at or after its event's `ts` and seeking by it never skips an
event in range. Events are filtered by their own `ts`.

Ordering: the partitions' streams are merged by (ts, partition, offset), each
partition in its arrival order (a k-way merge); the engine tolerates the disorder
that is left, within the allowed lateness.

The replay itself (`replay_topic`) starts a warm-up before ``since`` so that windows,
baselines and `for` timers are full at ``since``, and writes only the records with
``since <= ts < until``. See docs/detection.md, "Replaying a topic".
"""

from __future__ import annotations

import asyncio
import heapq
import time
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import IO, Any

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.errors import KafkaError

from firebreak.adapters.drive import Driver, decode_event
from firebreak.adapters.file_replay import ReplayResult, write_dead_letter
from firebreak.adapters.live.settings import WorkerSettings
from firebreak.core import DEFAULT_LATENESS_MS, Event, InvalidEvent, format_ts, parse_ts
from firebreak.core.engine import DEFAULT_MAX_SKEW_MS
from firebreak.dsl import CompiledRule
from firebreak.durations import format_duration
from firebreak.kafka_config import KafkaConfig, kafka_config_of
from firebreak.records import RecordKind, Stream, record_key, stream_of
from firebreak.sdk._kafka import close_quietly, diagnose

DEFAULT_SLACK_MS = 5 * 60_000
DEFAULT_TIMEOUT_S = 10.0
DEFAULT_INCIDENTS_TOPIC = WorkerSettings.incidents_topic
DEFAULT_CONTAINMENT_TOPIC = WorkerSettings.containment_topic
MAX_EVENT_BYTES = WorkerSettings.max_event_bytes  # larger messages are bad, as in the worker
FETCH_RECORDS = 500
PROGRESS_EVERY = 50_000  # messages

BadMessage = Callable[[int, int, str, bytes], None]  # (partition, offset, reason, raw)


class TopicError(Exception):
    """The broker or the topic cannot be read (or written, with --emit); the message says why."""


# ---- pure pieces -----------------------------------------------------------------------------


def parse_time(text: str) -> int:
    """``2026-03-01T01:00:00Z`` (RFC 3339 with a zone) or epoch milliseconds → epoch ms.
    Raises ValueError with a one-line reason."""
    text = text.strip()
    try:
        return parse_ts(int(text) if text.isdigit() else text)
    except InvalidEvent as error:
        if "no zone" in str(error):
            raise ValueError(f"`{text[:40]}` has no zone: add Z or an offset (2026-03-01T01:00:00Z)") from None
        raise ValueError(
            f"`{text[:40]}` is not a time: use RFC 3339 with a zone (2026-03-01T01:00:00Z) or epoch milliseconds"
        ) from None


def check_range(since_ms: int, until_ms: int) -> None:
    if since_ms >= until_ms:
        raise ValueError(f"--since {format_ts(since_ms)} is not before --until {format_ts(until_ms)}")


def warmup_ms(rules: Sequence[CompiledRule]) -> int:
    """How much event time before ``since`` a replay must read so that its state is right at
    ``since``: the longest window + baseline span + `for` of the rules, plus one step."""
    return max((r.window_ms + r.baseline_ms + r.for_ms + r.step_ms for r in rules), default=0)


def position(topic: str, partition: int, offset: int) -> str:
    return f"{topic}[{partition}]@{offset}"


@dataclass(frozen=True, slots=True)
class TopicMessage:
    """A valid event as read from the topic, with where it was and its raw bytes (for dead letters)."""

    partition: int
    offset: int
    event: Event
    raw: bytes


async def merge_by_event_time(streams: Iterable[AsyncIterator[TopicMessage]]) -> AsyncIterator[TopicMessage]:
    """k-way merge by (ts, partition, offset): always the smallest head of the streams, each
    stream in its own order (like heapq.merge; a stream is read only when its head is taken)."""
    heap: list[tuple[int, int, int, int, TopicMessage, AsyncIterator[TopicMessage]]] = []
    for index, stream in enumerate(streams):
        head = await anext(stream, None)
        if head is not None:
            heap.append((head.event.ts, head.partition, head.offset, index, head, stream))
    heapq.heapify(heap)
    while heap:
        _, _, _, index, message, stream = heap[0]
        yield message
        head = await anext(stream, None)
        if head is None:
            heapq.heappop(heap)
        else:
            heapq.heapreplace(heap, (head.event.ts, head.partition, head.offset, index, head, stream))


# ---- reading -------------------------------------------------------------------------------


@dataclass
class ReadStats:
    messages: int = 0  # read from the topic, bad ones included
    partitions: int = 0  # of the topic
    read: int = 0  # partitions that had anything at or after the seek time


class TopicReader:
    """A group-less, read_committed consumer of one topic; ``async with`` connects and checks the topic."""

    def __init__(self, bootstrap: str | KafkaConfig, topic: str, timeout_s: float = DEFAULT_TIMEOUT_S) -> None:
        self.kafka = kafka_config_of(bootstrap)
        self.bootstrap = self.kafka.bootstrap
        self.topic = topic
        self.timeout_s = timeout_s
        self.stats = ReadStats()
        self.partitions: list[int] = []
        self.consumer = AIOKafkaConsumer(
            bootstrap_servers=self.bootstrap,
            **self.kafka.client_options(),
            group_id=None,
            enable_auto_commit=False,
            isolation_level="read_committed",
            auto_offset_reset="earliest",  # a seek target removed by retention meanwhile: the oldest left
            request_timeout_ms=int(timeout_s * 1000),
        )

    async def __aenter__(self) -> TopicReader:
        try:
            async with asyncio.timeout(self.timeout_s):
                await self.consumer.start()
        except (TimeoutError, KafkaError, OSError) as error:
            await close_quietly(self.consumer, 5)
            why = await diagnose(self.kafka)
            if isinstance(error, TimeoutError):
                why = f"no answer within {self.timeout_s:g}s ({why})"
            raise TopicError(f"no Kafka broker at {self.bootstrap}: {why}") from None
        try:
            # Metadata of all topics: asking for this one by name would create it on a broker
            # with auto.create.topics.enable.
            async with asyncio.timeout(self.timeout_s):
                cluster = await self.consumer._client.fetch_all_metadata()  # noqa: SLF001
        except (TimeoutError, KafkaError) as error:
            await close_quietly(self.consumer, 5)
            raise TopicError(
                f"no topic metadata from {self.bootstrap} within {self.timeout_s:g}s ({error!r})"
            ) from None
        partitions = cluster.partitions_for_topic(self.topic)
        if not partitions:
            await close_quietly(self.consumer, 5)
            raise TopicError(f"topic {self.topic!r} does not exist on {self.bootstrap}")
        self.partitions = sorted(partitions)
        self.stats.partitions = len(self.partitions)
        return self

    async def __aexit__(self, *exc: object) -> None:
        await close_quietly(self.consumer, 5)

    async def plan(self, seek_ms: int) -> dict[int, tuple[int, int]]:
        """partition → (first offset, end offset) to read: from the first record stamped at or
        after ``seek_ms`` up to the end offset now. Partitions with nothing that late are left out."""
        tps = [TopicPartition(self.topic, p) for p in self.partitions]
        try:
            async with asyncio.timeout(self.timeout_s):
                starts = await self.consumer.offsets_for_times({tp: max(0, seek_ms) for tp in tps})
                ends = await self.consumer.end_offsets(tps)
        except (TimeoutError, KafkaError) as error:
            raise TopicError(f"{self.bootstrap} did not give the offsets of {self.topic!r} ({error!r})") from None
        plan = {}
        for tp in tps:
            found = starts.get(tp)
            if found is not None and found.offset < ends[tp]:
                plan[tp.partition] = (found.offset, ends[tp])
        self.stats.read = len(plan)
        return plan

    def assign(self, plan: dict[int, tuple[int, int]]) -> None:
        tps = [TopicPartition(self.topic, p) for p in plan]
        self.consumer.assign(tps)
        for tp in tps:
            self.consumer.seek(tp, plan[tp.partition][0])

    async def messages(
        self, partition: int, start: int, end: int, stop_at_ms: int, on_bad: BadMessage, max_bytes: int
    ) -> AsyncIterator[TopicMessage]:
        """The partition's valid events in arrival order, from ``start`` to ``end`` (exclusive), or up
        to and including the first event with ``ts >= stop_at_ms``. Bad messages go to ``on_bad``."""
        consumer, tp = self.consumer, TopicPartition(self.topic, partition)
        at, heard = start, time.monotonic()
        while at < end:
            try:
                batch = await consumer.getmany(tp, timeout_ms=200, max_records=FETCH_RECORDS)
            except KafkaError as error:
                raise TopicError(f"{position(self.topic, partition, at)}: reading failed ({error!r})") from None
            for message in batch.get(tp, ()):
                if message.offset >= end:
                    at = end
                    break
                self.stats.messages += 1
                try:
                    event = decode_event(message.value, max_bytes)
                except InvalidEvent as error:
                    on_bad(partition, message.offset, str(error), message.value or b"")
                    continue
                yield TopicMessage(partition, message.offset, event, message.value)
                if event.ts >= stop_at_ms:
                    at = end
                    break
            else:
                now = await consumer.position(tp)
                if now > at:
                    at, heard = now, time.monotonic()
                elif time.monotonic() - heard > self.timeout_s:
                    raise TopicError(
                        f"{position(self.topic, partition, at)}: nothing read from {self.bootstrap} for "
                        f"{self.timeout_s:g}s (end offset {end})"
                    )
        consumer.pause(tp)  # done with it: stop prefetching

    def merged(
        self, plan: dict[int, tuple[int, int]], stop_at_ms: int, on_bad: BadMessage, max_bytes: int = MAX_EVENT_BYTES
    ) -> AsyncIterator[TopicMessage]:
        """Every planned partition, merged by event time (`merge_by_event_time`)."""
        self.assign(plan)
        streams = [self.messages(p, start, end, stop_at_ms, on_bad, max_bytes) for p, (start, end) in plan.items()]
        return merge_by_event_time(streams)


async def read_topic_events_async(
    bootstrap: str | KafkaConfig,
    topic: str,
    start_ms: int,
    stop_ms: int,
    *,
    slack_ms: int = DEFAULT_SLACK_MS,
    on_bad: Callable[[str, str, bytes], None] | None = None,
    timeout_s: float = DEFAULT_TIMEOUT_S,
) -> list[Event]:
    """The valid events of the topic with ``start_ms <= ts < stop_ms``, sorted by (ts, partition,
    offset). ``on_bad(position, reason, raw)`` gets each bad message read ("topic[p]@offset").
    Raises TopicError for a broker or topic that cannot be read."""

    def bad(partition: int, offset: int, reason: str, raw: bytes) -> None:
        if on_bad is not None:
            on_bad(position(topic, partition, offset), reason, raw)

    found: list[TopicMessage] = []
    async with TopicReader(bootstrap, topic, timeout_s) as reader:
        plan = await reader.plan(start_ms - slack_ms)
        async for message in reader.merged(plan, stop_ms + slack_ms, bad):
            if start_ms <= message.event.ts < stop_ms:
                found.append(message)
    found.sort(key=lambda m: (m.event.ts, m.partition, m.offset))
    return [m.event for m in found]


def read_topic_events(
    bootstrap: str | KafkaConfig,
    topic: str,
    start_ms: int,
    stop_ms: int,
    *,
    slack_ms: int = DEFAULT_SLACK_MS,
    on_bad: Callable[[str, str, bytes], None] | None = None,
    timeout_s: float = DEFAULT_TIMEOUT_S,
) -> list[Event]:
    """Blocking `read_topic_events_async` (runs its own event loop)."""
    return asyncio.run(
        read_topic_events_async(
            bootstrap, topic, start_ms, stop_ms, slack_ms=slack_ms, on_bad=on_bad, timeout_s=timeout_s
        )
    )


# ---- replaying -----------------------------------------------------------------------------


@dataclass(frozen=True)
class OutputTopics:
    """Where `--emit` sends records: incident.* records and containment.* records."""

    incidents: str = DEFAULT_INCIDENTS_TOPIC
    containment: str = DEFAULT_CONTAINMENT_TOPIC

    def of(self, record: dict[str, Any]) -> str:
        return self.incidents if stream_of(record) is Stream.INCIDENTS else self.containment


@dataclass
class TopicReplayResult(ReplayResult):
    """`ReplayResult` counting messages instead of lines. ``records`` and ``opened`` count the
    written records (``since <= ts < until``) only; ``open_at_end`` is what is open at until."""

    bad_noun = "message"
    end_of_input = "until"

    topic: str = ""
    since: int = 0
    until: int = 0
    read_from: int = 0  # since − warm-up
    partitions: int = 0
    partitions_read: int = 0
    warmup_records: int = 0  # computed before `since`, not written
    after_until: int = 0  # records at or after `until`, not written
    outside: int = 0  # events before the warm-up (read because of the seek slack) or past until + lateness
    emitted: int = 0  # records sent to Kafka (--emit)

    def head(self) -> list[str]:
        lines = [
            f"topic {self.topic}: {format_ts(self.since)} to {format_ts(self.until)}, read from "
            f"{format_ts(self.read_from)} (warm-up {format_duration(self.since - self.read_from)}), "
            f"{self.partitions_read} of {self.partitions} partitions",
            f"messages read: {self.lines}   {self.counts()}",
            f"not written: {self.warmup_records} warm-up records (before since), {self.after_until} records at or "
            f"after until   events outside the range: {self.outside}",
        ]
        if self.emitted:
            lines.append(f"sent to Kafka: {self.emitted} records")
        return lines


class _Sender:
    """--emit: an idempotent producer; records keyed as the live worker keys them."""

    def __init__(self, bootstrap: str | KafkaConfig, topics: OutputTopics, timeout_s: float) -> None:
        kafka = kafka_config_of(bootstrap)
        self.bootstrap, self.topics, self.timeout_s = kafka.bootstrap, topics, timeout_s
        self.producer = AIOKafkaProducer(
            bootstrap_servers=kafka.bootstrap,
            **kafka.client_options(),
            enable_idempotence=True,
            acks="all",
            linger_ms=5,
            request_timeout_ms=int(timeout_s * 1000),
        )
        self.pending: list[asyncio.Future] = []

    async def start(self) -> None:
        try:
            async with asyncio.timeout(self.timeout_s):
                await self.producer.start()
                for topic in (self.topics.incidents, self.topics.containment):
                    await self.producer.partitions_for(topic)
        except (TimeoutError, KafkaError, OSError) as error:
            await close_quietly(self.producer, 5)
            raise TopicError(
                f"cannot write to {self.topics.incidents!r} and {self.topics.containment!r} on {self.bootstrap} "
                f"({type(error).__name__})"
            ) from None

    async def send(self, record: dict[str, Any]) -> None:
        future = await self.producer.send(self.topics.of(record), orjson.dumps(record), key=record_key(record))
        self.pending.append(future)

    async def close(self) -> int:
        """Flush; the number of records delivered. Raises TopicError if some were not."""
        try:
            async with asyncio.timeout(self.timeout_s + 1):
                await self.producer.flush()
                await asyncio.gather(*self.pending, return_exceptions=True)
        except TimeoutError:
            raise TopicError(f"records not acknowledged by {self.bootstrap} within {self.timeout_s:g}s") from None
        finally:
            await close_quietly(self.producer, 5)
        failed = [f for f in self.pending if f.cancelled() or f.exception() is not None]
        if failed:
            raise TopicError(f"{len(failed)} of {len(self.pending)} records were not delivered to Kafka")
        return len(self.pending)


async def replay_topic_async(
    bootstrap: str | KafkaConfig,
    topic: str,
    since_ms: int,
    until_ms: int,
    rules: Sequence[CompiledRule],
    emit: Callable[[dict[str, Any]], None],
    dead_letter: IO[bytes] | None = None,
    lateness_ms: int = DEFAULT_LATENESS_MS,
    slack_ms: int = DEFAULT_SLACK_MS,
    *,
    publish_to: OutputTopics | None = None,
    timeout_s: float = DEFAULT_TIMEOUT_S,
    progress: Callable[[TopicReplayResult], None] | None = None,
    engine: str | None = None,
    max_skew_ms: int | None = DEFAULT_MAX_SKEW_MS,
) -> TopicReplayResult:
    """Replay the topic's events through the rules; ``emit`` gets each record with
    ``since_ms <= ts < until_ms``, in the engine's order. ``publish_to``: also send them to
    Kafka (nothing is written to Kafka without it). Bad and late messages are counted and
    written to ``dead_letter`` with their position. Raises TopicError, ValueError (range)."""
    check_range(since_ms, until_ms)
    start = since_ms - warmup_ms(rules)
    horizon = until_ms + lateness_ms  # an event this late moves the watermark past until
    result = TopicReplayResult(topic=topic, since=since_ms, until=until_ms, read_from=start)
    driver = Driver(rules, lateness_ms, engine, max_skew_ms=max_skew_ms)

    def bad(partition: int, offset: int, reason: str, raw: bytes) -> None:
        result.note_bad(position(topic, partition, offset), reason)
        write_dead_letter(dead_letter, {"topic": topic, "partition": partition, "offset": offset}, reason, raw)

    sender = _Sender(bootstrap, publish_to, timeout_s) if publish_to is not None else None

    async def deliver(records: list[dict[str, Any]]) -> None:
        for record in records:
            ts = parse_ts(record["ts"])
            if ts < since_ms:
                result.warmup_records += 1
            elif ts >= until_ms:
                result.after_until += 1
            else:
                result.records += 1
                if record["type"] == RecordKind.OPENED:
                    result.opened[record["rule"]] += 1
                emit(record)
                if sender is not None:
                    await sender.send(record)

    async with TopicReader(bootstrap, topic, timeout_s) as reader:
        plan = await reader.plan(start - slack_ms)
        result.partitions, result.partitions_read = reader.stats.partitions, reader.stats.read
        if sender is not None:
            await sender.start()
        try:
            passed = False  # an event at or past until + lateness was seen: every step before until is done
            next_progress = PROGRESS_EVERY
            async for message in reader.merged(plan, horizon + slack_ms, bad):
                result.lines = reader.stats.messages
                if progress is not None and result.lines >= next_progress:
                    progress(result)
                    next_progress += PROGRESS_EVERY
                event = message.event
                if event.ts < start or event.ts >= horizon:
                    result.outside += 1
                    if event.ts >= horizon and not passed:
                        # Only its time matters for what is written (its data is at or past until):
                        # move the watermark to until, not to its ts, which may be far ahead.
                        passed = True
                        await deliver(driver.advance(until_ms))
                    continue
                fed = driver.feed_events((event,))
                for _, reason in fed.late:
                    result.late += 1
                    bad(message.partition, message.offset, reason, message.raw)
                    result.bad -= 1  # late events are counted apart from bad messages
                result.events += fed.events
                await deliver(fed.records)
            result.lines = reader.stats.messages
            # The topic ends before until: time stands where a live worker's would once every
            # partition is quiet (the largest event time less the lateness, which the last event
            # already moved it to) -- no step is evaluated that later events could still change.
        except BaseException:
            if sender is not None:
                await close_quietly(sender.producer, 5)
            raise
        if sender is not None:
            result.emitted = await sender.close()
    result.open_at_end = driver.open_incidents()  # the engine stopped at until (or at the topic's end − lateness)
    return result


def replay_topic(
    bootstrap: str | KafkaConfig,
    topic: str,
    since_ms: int,
    until_ms: int,
    rules: Sequence[CompiledRule],
    emit: Callable[[dict[str, Any]], None],
    dead_letter: IO[bytes] | None = None,
    lateness_ms: int = DEFAULT_LATENESS_MS,
    slack_ms: int = DEFAULT_SLACK_MS,
    *,
    publish_to: OutputTopics | None = None,
    timeout_s: float = DEFAULT_TIMEOUT_S,
    progress: Callable[[TopicReplayResult], None] | None = None,
    engine: str | None = None,
    max_skew_ms: int | None = DEFAULT_MAX_SKEW_MS,
) -> TopicReplayResult:
    """Blocking `replay_topic_async` (runs its own event loop)."""
    coroutine = replay_topic_async(
        bootstrap,
        topic,
        since_ms,
        until_ms,
        rules,
        emit,
        dead_letter,
        lateness_ms,
        slack_ms,
        publish_to=publish_to,
        timeout_s=timeout_s,
        progress=progress,
        engine=engine,
        max_skew_ms=max_skew_ms,
    )
    return asyncio.run(coroutine)
