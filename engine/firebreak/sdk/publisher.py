"""Publish inference, change and user-report events to Kafka for Firebreak to watch.

Two clients with the same API:

- `AsyncPublisher` for asyncio services (``await pub.publish(event)``);
- `Publisher` for everything else: it runs its own asyncio loop in a daemon thread
  and blocks on it (``pub.publish(event)``).

Every event is validated with the engine's own contract (`firebreak.core.validate_event`)
before anything is sent: a bad event raises `InvalidEvent` with the reason and is never
produced. Values are the event as JSON (orjson); the message key is the event's
``key_field`` (default ``tenant``, so one tenant's events stay in order on one partition),
or its ``event_id`` when that field is absent. The producer is idempotent with
``acks=all`` and batches for ``linger_ms`` (default 5 ms).

`user_report(...)` builds a user-report event (an end user's thumbs-down, "this is wrong",
"this shows someone else's data"), copying what identifies the answer from the inference
event it is about; ``pub.report(...)`` builds and publishes one.

Kafka problems become `PublishError` with a one-line reason, within a bounded time
(``connect_timeout_s`` for `start`, ``timeout_s`` for everything else) — never a hang.
See docs/sdk.md.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
import uuid
import weakref
from collections.abc import Iterable, Mapping
from concurrent.futures import Future as ThreadFuture
from typing import Any, NamedTuple

import orjson
from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError

from firebreak.core.events import InvalidEvent, validate_event
from firebreak.kafka_config import KafkaConfig, kafka_config_of
from firebreak.sdk._kafka import DEFAULT_EVENTS_TOPIC, bootstrap_text, close_quietly, diagnose

__all__ = ["AsyncPublisher", "Delivery", "InvalidEvent", "PublishError", "Publisher", "event_key", "user_report"]

log = logging.getLogger("firebreak.sdk.publisher")

DEFAULT_LINGER_MS = 5
DEFAULT_CONNECT_TIMEOUT_S = 10.0
DEFAULT_TIMEOUT_S = 30.0


class PublishError(RuntimeError):
    """Kafka did not take the event(s): no broker, unknown topic, timeout, rejected batch."""


class Delivery(NamedTuple):
    """Where the broker stored an event (``publish(..., wait=True)``)."""

    topic: str
    partition: int
    offset: int


def _reason(error: BaseException) -> str:
    text = str(error).strip()
    name = type(error).__name__
    if not text:
        return name
    return text if text.startswith(name) else f"{name}: {text}"


def event_key(event: Mapping[str, Any], key_field: str | None) -> bytes:
    """The message key: the event's `key_field` value, else its event_id (UTF-8 bytes).

    Strings are used as they are; other JSON values (numbers, booleans) by their JSON text.
    """
    value = event.get(key_field) if key_field else None
    if value is None or value == "":
        value = event["event_id"]
    if isinstance(value, str):
        return value.encode()
    return orjson.dumps(value)


# What a report copies from the inference event it is about, so that rules can group reports
# by the same fields (`reports(wrong) ... by model`) without joining: the answer's identity.
ABOUT_FIELDS = ("service", "feature", "model", "model_version", "prompt_template", "tenant", "user")


def user_report(
    labels: str | Iterable[str],
    *,
    about: Mapping[str, Any] | None = None,
    ref: str | None = None,
    event_id: str | None = None,
    ts: int | str | None = None,
    comment: str | None = None,
    **fields: Any,
) -> dict[str, Any]:
    """A `report` event: what an end user said of an answer (docs/events.md#user-reports).

    ``labels``: one or more of thumbs_down, wrong, harmful, data_exposure, offensive, other (or
    a team's own, declared in vocabulary.toml). ``about``: the inference event the report is
    about — its event_id becomes ``ref`` and its service, feature, model, model_version,
    prompt_template, tenant and user are copied (``fields`` override them). ``ts`` defaults to
    now (epoch milliseconds), ``event_id`` to a random UUID. Validated like any event.

    ```python
    pub.publish(user_report("wrong", about=answer_event, comment="the date is wrong"))
    ```
    """
    event: dict[str, Any] = {
        "event_id": event_id or f"report-{uuid.uuid4()}",
        "ts": ts if ts is not None else time.time_ns() // 1_000_000,
        "type": "report",
        "labels": [labels] if isinstance(labels, str) else list(labels),
    }
    if about is not None:
        event["ref"] = about.get("event_id")
        event.update((k, about[k]) for k in ABOUT_FIELDS if about.get(k) is not None)
    if ref is not None:
        event["ref"] = ref
    if comment is not None:
        event["comment"] = comment
    event.update((k, v) for k, v in fields.items() if v is not None)
    validate_event(event)
    return event


def prepare(event: Any, key_field: str | None) -> tuple[bytes, bytes]:
    """Validate and encode one event → (key, value). Raises InvalidEvent; touches no I/O."""
    validate_event(event)
    try:
        value = orjson.dumps(event)
    except TypeError as error:  # orjson.JSONEncodeError is a TypeError
        raise InvalidEvent(f"the event is not JSON-serializable: {error}") from None
    return event_key(event, key_field), value


class AsyncPublisher:
    """Publishes events from asyncio code.

    ```python
    async with AsyncPublisher("127.0.0.1:9092") as pub:
        await pub.publish({"event_id": "e1", "ts": "2026-11-27T10:00:00Z", "tenant": "acme", ...})
    ```

    `producer_kwargs` go to `aiokafka.AIOKafkaProducer` (security settings, compression,
    `max_batch_size`...); `enable_idempotence` and `acks` are fixed.
    """

    def __init__(
        self,
        bootstrap: str | list[str],
        topic: str = DEFAULT_EVENTS_TOPIC,
        key_field: str | None = "tenant",
        *,
        linger_ms: int = DEFAULT_LINGER_MS,
        connect_timeout_s: float = DEFAULT_CONNECT_TIMEOUT_S,
        timeout_s: float = DEFAULT_TIMEOUT_S,
        kafka_config: KafkaConfig | None = None,
        **producer_kwargs: Any,
    ) -> None:
        for fixed in ("enable_idempotence", "acks", "value_serializer", "key_serializer", "transactional_id"):
            if fixed in producer_kwargs:
                raise TypeError(f"AsyncPublisher sets {fixed} itself")
        # Security settings: kafka_config, else the environment's (FIREBREAK_KAFKA_*, docs/kafka-security.md).
        self.kafka = (kafka_config or kafka_config_of(bootstrap)).with_bootstrap(bootstrap_text(bootstrap))
        self.bootstrap = bootstrap
        self.topic = topic
        self.key_field = key_field
        self.linger_ms = linger_ms
        self.connect_timeout_s = connect_timeout_s
        self.timeout_s = timeout_s
        self._producer_kwargs = producer_kwargs
        self._producer: AIOKafkaProducer | None = None
        self._in_flight: set[asyncio.Future] = set()
        self._failed = 0
        self._first_failure: BaseException | None = None
        self.published = 0  # events handed to the producer

    # -- lifecycle ---------------------------------------------------------------------

    @property
    def started(self) -> bool:
        return self._producer is not None

    async def start(self) -> None:
        """Connect; raises PublishError("no Kafka broker at ...: why") within connect_timeout_s."""
        if self._producer is not None:
            return
        kwargs = {
            "request_timeout_ms": int(self.timeout_s * 1000),
            **self.kafka.client_options(),
            **self._producer_kwargs,
        }
        producer = AIOKafkaProducer(
            bootstrap_servers=self.bootstrap,
            enable_idempotence=True,
            acks="all",
            linger_ms=self.linger_ms,
            **kwargs,
        )
        where = bootstrap_text(self.bootstrap)
        try:
            async with asyncio.timeout(self.connect_timeout_s):
                await producer.start()
        except (TimeoutError, KafkaError, OSError) as error:
            await close_quietly(producer, 5)
            why = await diagnose(self.kafka)
            if isinstance(error, TimeoutError):
                why = f"no answer within {self.connect_timeout_s:g}s ({why})"
            raise PublishError(f"no Kafka broker at {where}: {why}") from error
        try:
            # Fetch the topic's partitions now: a missing topic is an error at start, not at
            # the first publish (with auto-creation on, this creates it).
            async with asyncio.timeout(self.connect_timeout_s):
                await producer.partitions_for(self.topic)
        except (TimeoutError, KafkaError) as error:
            await close_quietly(producer, 5)
            raise PublishError(
                f"topic {self.topic!r} is not available on {where} within {self.connect_timeout_s:g}s "
                f"({_reason(error)}); create it or check the name"
            ) from error
        self._producer = producer

    async def stop(self) -> None:
        """Flush what is queued (bounded by timeout_s), then disconnect. Raises PublishError if
        queued events could not be delivered."""
        producer, self._producer = self._producer, None
        if producer is None:
            return
        try:
            await self._flush(producer)
        finally:
            await close_quietly(producer, 5)

    async def __aenter__(self) -> AsyncPublisher:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        if exc[0] is None:
            await self.stop()
        else:  # don't let a flush error hide the original one
            try:
                await self.stop()
            except PublishError as error:
                log.error("%s", error)

    # -- publishing --------------------------------------------------------------------

    async def publish(self, event: dict[str, Any], *, wait: bool = False) -> Delivery | None:
        """Validate, then hand the event to the producer (batched; returns at once).

        With ``wait=True``, wait for the broker's acknowledgement and return where the event
        was stored. Raises InvalidEvent (nothing sent) or PublishError.
        """
        key, value = prepare(event, self.key_field)
        return await self._send(key, value, wait)

    async def report(self, labels: str | Iterable[str], *, wait: bool = False, **kwargs: Any) -> Delivery | None:
        """Publish a user report: ``user_report(labels, **kwargs)``, then `publish`."""
        return await self.publish(user_report(labels, **kwargs), wait=wait)

    async def publish_many(self, events: Iterable[dict[str, Any]]) -> int:
        """Validate every event first (all or nothing), then hand them all to the producer."""
        prepared = [prepare(event, self.key_field) for event in events]
        for key, value in prepared:
            await self._send(key, value, False)
        return len(prepared)

    async def flush(self) -> None:
        """Wait until every event handed over so far is acknowledged (bounded by timeout_s).

        Raises PublishError if some could not be delivered since the last flush.
        """
        await self._flush(self._require())

    # -- internals ---------------------------------------------------------------------

    def _require(self) -> AIOKafkaProducer:
        if self._producer is None:
            raise PublishError("the publisher is not started; call start() or use it as a context manager")
        return self._producer

    async def _send(self, key: bytes, value: bytes, wait: bool) -> Delivery | None:
        producer = self._require()
        try:
            # Bounded by the producer's request_timeout_ms (= timeout_s unless overridden): the
            # metadata wait and the wait for buffer space. No asyncio.timeout here: it would cost
            # more than the send itself.
            future = await producer.send(self.topic, value=value, key=key)
        except KafkaError as error:
            raise PublishError(f"could not publish to {self.topic!r}: {_reason(error)}") from error
        self.published += 1
        if wait:
            try:
                async with asyncio.timeout(self.timeout_s + 1):
                    meta = await future
            except TimeoutError:
                raise PublishError(
                    f"no acknowledgement from {bootstrap_text(self.bootstrap)} within {self.timeout_s:g}s"
                ) from None
            except KafkaError as error:
                raise PublishError(f"the broker did not take the event: {_reason(error)}") from error
            return Delivery(meta.topic, meta.partition, meta.offset)
        self._in_flight.add(future)
        future.add_done_callback(self._delivered)
        return None

    def _delivered(self, future: asyncio.Future) -> None:
        self._in_flight.discard(future)
        if future.cancelled():
            error: BaseException | None = asyncio.CancelledError()
        else:
            error = future.exception()
        if error is not None:
            self._failed += 1
            if self._first_failure is None:
                self._first_failure = error
            log.warning("event not delivered to %s: %s", self.topic, _reason(error))

    async def _flush(self, producer: AIOKafkaProducer) -> None:
        try:
            async with asyncio.timeout(self.timeout_s + 1):
                await producer.flush()
                # flush() returns when the batches are done; wait for their futures' callbacks
                # too (only those handed over so far: concurrent publishers don't extend this).
                if self._in_flight:
                    await asyncio.wait(list(self._in_flight))
                    await asyncio.sleep(0)
        except TimeoutError:
            raise PublishError(
                f"{len(self._in_flight)} event(s) not acknowledged by {bootstrap_text(self.bootstrap)} "
                f"within {self.timeout_s:g}s"
            ) from None
        if self._failed:
            failed, first = self._failed, self._first_failure
            self._failed, self._first_failure = 0, None
            raise PublishError(f"{failed} event(s) were not delivered to {self.topic!r}: {_reason(first)}") from first


class Publisher:
    """The blocking twin of `AsyncPublisher`, for code without an event loop.

    ```python
    with Publisher("127.0.0.1:9092") as pub:
        pub.publish(event)              # returns once the producer has the event
        pub.publish(event, wait=True)   # returns once the broker acknowledged it
    ```

    It owns an asyncio loop in a daemon thread; calls are thread-safe and each call
    blocks until the loop has done it. `close()` (or leaving the `with` block) flushes.
    An unclosed publisher is flushed at interpreter exit.
    """

    def __init__(
        self,
        bootstrap: str | list[str],
        topic: str = DEFAULT_EVENTS_TOPIC,
        key_field: str | None = "tenant",
        *,
        linger_ms: int = DEFAULT_LINGER_MS,
        connect_timeout_s: float = DEFAULT_CONNECT_TIMEOUT_S,
        timeout_s: float = DEFAULT_TIMEOUT_S,
        kafka_config: KafkaConfig | None = None,
        **producer_kwargs: Any,
    ) -> None:
        self._settings = dict(
            bootstrap=bootstrap,
            topic=topic,
            key_field=key_field,
            linger_ms=linger_ms,
            connect_timeout_s=connect_timeout_s,
            timeout_s=timeout_s,
            kafka_config=kafka_config,
            **producer_kwargs,
        )
        self.topic = topic
        self.key_field = key_field
        self.timeout_s = timeout_s
        self.connect_timeout_s = connect_timeout_s
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._async: AsyncPublisher | None = None
        self._finalizer: weakref.finalize | None = None

    @property
    def started(self) -> bool:
        return self._async is not None

    @property
    def published(self) -> int:
        return self._async.published if self._async else 0

    def start(self) -> None:
        """Start the loop thread and connect. Raises PublishError within connect_timeout_s."""
        with self._lock:
            if self._async is not None:
                return
            loop = asyncio.new_event_loop()
            ready = threading.Event()

            def run() -> None:
                asyncio.set_event_loop(loop)
                loop.call_soon(ready.set)
                loop.run_forever()

            thread = threading.Thread(target=run, name="firebreak-publisher", daemon=True)
            thread.start()
            ready.wait()

            async def make_and_start() -> AsyncPublisher:
                pub = AsyncPublisher(**self._settings)
                await pub.start()
                return pub

            try:
                pub = self._call(loop, make_and_start(), self.connect_timeout_s + 10)
            except BaseException:
                _shutdown_loop(loop, thread)
                raise
            self._loop, self._thread, self._async = loop, thread, pub
            self._finalizer = weakref.finalize(self, _close_at_exit, pub, loop, thread, self.timeout_s)

    def publish(self, event: dict[str, Any], *, wait: bool = False) -> Delivery | None:
        """Validate (here, in the caller's thread), then hand over; see AsyncPublisher.publish."""
        key, value = prepare(event, self.key_field)
        pub, loop = self._require()
        return self._call(loop, pub._send(key, value, wait), 2 * self.timeout_s + 5)

    def report(self, labels: str | Iterable[str], *, wait: bool = False, **kwargs: Any) -> Delivery | None:
        """Publish a user report: ``user_report(labels, **kwargs)``, then `publish`."""
        return self.publish(user_report(labels, **kwargs), wait=wait)

    def publish_many(self, events: Iterable[dict[str, Any]]) -> int:
        """Validate every event first (all or nothing), then hand them over in one loop call."""
        prepared = [prepare(event, self.key_field) for event in events]
        pub, loop = self._require()

        async def send_all() -> int:
            for key, value in prepared:
                await pub._send(key, value, False)
            return len(prepared)

        return self._call(loop, send_all(), self.timeout_s * max(1, len(prepared) // 10_000 + 1) + 5)

    def flush(self) -> None:
        pub, loop = self._require()
        self._call(loop, pub.flush(), self.timeout_s + 5)

    def stop(self) -> None:
        """Flush and disconnect, then end the loop thread. Raises PublishError if queued
        events could not be delivered (the publisher is closed either way)."""
        with self._lock:
            pub, loop, thread = self._async, self._loop, self._thread
            self._async = self._loop = self._thread = None
            if self._finalizer is not None:
                self._finalizer.detach()
                self._finalizer = None
        if pub is None or loop is None or thread is None:
            return
        try:
            self._call(loop, pub.stop(), self.timeout_s + 10)
        finally:
            _shutdown_loop(loop, thread)

    close = stop

    def __enter__(self) -> Publisher:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if exc[0] is None:
            self.stop()
        else:
            try:
                self.stop()
            except PublishError as error:
                log.error("%s", error)

    def _require(self) -> tuple[AsyncPublisher, asyncio.AbstractEventLoop]:
        pub, loop = self._async, self._loop
        if pub is None or loop is None:
            raise PublishError("the publisher is not started; call start() or use it as a context manager")
        return pub, loop

    @staticmethod
    def _call(loop: asyncio.AbstractEventLoop, coro: Any, timeout_s: float) -> Any:
        future: ThreadFuture = asyncio.run_coroutine_threadsafe(coro, loop)
        try:
            return future.result(timeout_s)
        except TimeoutError:
            # The coroutines bound their own time; this is the last-resort guard.
            future.cancel()
            raise PublishError(f"the publisher's loop did not answer within {timeout_s:g}s") from None


def _shutdown_loop(loop: asyncio.AbstractEventLoop, thread: threading.Thread) -> None:
    loop.call_soon_threadsafe(loop.stop)
    thread.join(10)
    if not thread.is_alive():
        loop.close()


def _close_at_exit(
    pub: AsyncPublisher, loop: asyncio.AbstractEventLoop, thread: threading.Thread, timeout_s: float
) -> None:
    """weakref.finalize hook: an unclosed Publisher still delivers what it queued."""
    if loop.is_closed() or not thread.is_alive():
        return
    if threading.current_thread() is thread:  # collected inside its own loop: cannot block here
        asyncio.ensure_future(pub.stop(), loop=loop)
        return
    try:
        asyncio.run_coroutine_threadsafe(pub.stop(), loop).result(timeout_s + 10)
    except Exception as error:  # noqa: BLE001 - at exit, log and go
        log.error("closing an unclosed Publisher: %s", _reason(error))
    _shutdown_loop(loop, thread)
