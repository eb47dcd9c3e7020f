"""Act on Firebreak's containment commands: for gateways, feature-flag services, routers.

Firebreak puts three kinds of records on the commands topic (docs/detection.md,
docs/schemas/record.schema.json):

- ``containment.command`` — do ACTION to TARGET with PARAMS until EXPIRES_AT
  (``command_id`` is the idempotency key; ``expires_at: null`` means no expiry);
- ``containment.renewed`` — the incident is still open: the command now expires later;
- ``containment.release`` — the incident resolved: undo the command.

`ContainmentState` is the decision logic, pure (records and a ``now`` in, decisions out,
no I/O, no clock). `ContainmentListener` is the Kafka adapter around it: it consumes the
topic (``read_committed``, manual commits), calls your handlers' ``apply``/``revert``,
reverts commands when they expire, and commits offsets after handling. See docs/sdk.md.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import time
from collections import Counter, OrderedDict
from collections.abc import Awaitable, Callable, Collection, Mapping
from dataclasses import dataclass, field, replace
from typing import Any, Literal, Protocol

import orjson
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import KafkaError

from firebreak.core.events import InvalidEvent, parse_ts
from firebreak.kafka_config import KafkaConfig, kafka_config_of
from firebreak.records import RecordKind
from firebreak.sdk._kafka import DEFAULT_COMMANDS_TOPIC, bootstrap_text, close_quietly, diagnose

__all__ = [
    "ContainmentError",
    "ContainmentListener",
    "ContainmentState",
    "Decision",
    "Handler",
]

log = logging.getLogger("firebreak.sdk.containment")

COMMAND, RENEWED, RELEASE = RecordKind.COMMAND, RecordKind.RENEWED, RecordKind.RELEASE  # engine/firebreak/records.py
RECORD_TYPES = (COMMAND, RENEWED, RELEASE)


class ContainmentError(RuntimeError):
    """The listener cannot work: no broker, or it was misused."""


# --------------------------------------------------------------------------------------
# The pure decision logic
# --------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Decision:
    """What to do about one record (or one expiry).

    ``op`` is ``apply`` or ``revert`` (call the handler of ``command["action"]`` with
    ``command``) or ``ignore`` (nothing to do; ``reason`` says why). For apply/revert,
    ``command`` is the original ``containment.command`` record, with ``expires_at`` updated
    by renewals.
    """

    op: Literal["apply", "revert", "ignore"]
    reason: str
    command_id: str | None
    command: Mapping[str, Any] | None = None


@dataclass(slots=True)
class _Entry:
    command: dict[str, Any]
    status: Literal["active", "expired", "released", "not_applied", "unhandled"]
    expires_ms: int | None


def _expiry_ms(value: Any) -> int | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise InvalidEvent("`expires_at` must be an RFC 3339 time or null")
    try:
        return parse_ts(value)
    except InvalidEvent as error:
        raise InvalidEvent(str(error).replace("`ts`", "`expires_at`")) from None


def _check(record: Any) -> str:
    """The record's type if it is a well-formed containment record, else raises InvalidEvent."""
    if not isinstance(record, dict):
        raise InvalidEvent(f"a record is a JSON object, not {type(record).__name__}")
    kind = record.get("type")
    if kind not in RECORD_TYPES:
        return str(kind)
    for name in ("command_id", "action"):
        if not isinstance(record.get(name), str) or not record[name]:
            raise InvalidEvent(f"`{name}` must be a non-empty string")
    if not isinstance(record.get("target", {}), dict):
        raise InvalidEvent("`target` must be an object")
    if kind == COMMAND:
        if not isinstance(record.get("params", {}), dict):
            raise InvalidEvent("`params` must be an object")
        if not isinstance(record.get("hold", False), bool):
            raise InvalidEvent("`hold` must be a boolean")
        _expiry_ms(record.get("expires_at"))
    elif kind == RENEWED:
        if record.get("expires_at") is None:
            raise InvalidEvent("a renewal needs `expires_at`")
        _expiry_ms(record["expires_at"])
    return kind


class ContainmentState:
    """Which commands are in force, decided from the records and the time — nothing else.

    - a ``containment.command`` is applied once per ``command_id`` (a duplicate is ignored),
      unless its ``expires_at`` is already past at ``now`` (then it is not applied) or no
      handler knows its action (counted as ``unknown action``);
    - a ``containment.renewed`` moves the expiry of its command later. If the command had
      expired (or was expired on arrival) and the new expiry is still ahead, it is applied
      again: the incident is still open. A renewal for a command never seen is ignored (it
      carries no params to apply);
    - a ``containment.release`` reverts an active command, once. ``hold`` commands are
      not reverted by a release record unless ``release_holds`` (the engine never sends
      one; use `release` for a human's decision). A release for a command never seen (it
      was applied before a restart) is passed to ``revert`` when ``revert_unseen_releases``
      (the handler gets the release record; handlers must be idempotent);
    - `expire(now)` reverts active commands whose ``expires_at`` ≤ ``now``; ``null``
      never expires.

    ``now`` is epoch milliseconds. Counters by decision reason are in `counts`.
    """

    def __init__(
        self,
        actions: Collection[str] | None = None,
        *,
        release_holds: bool = False,
        revert_unseen_releases: bool = True,
        remember: int = 100_000,
    ) -> None:
        self.actions = None if actions is None else frozenset(actions)
        self.release_holds = release_holds
        self.revert_unseen_releases = revert_unseen_releases
        self.remember = remember
        self._entries: OrderedDict[str, _Entry] = OrderedDict()
        self._unseen_released: OrderedDict[str, None] = OrderedDict()
        self.counts: Counter[str] = Counter()

    # -- queries ---------------------------------------------------------------------

    def active(self) -> dict[str, dict[str, Any]]:
        """command_id → command (with its current expires_at), for commands in force."""
        return {cid: dict(e.command) for cid, e in self._entries.items() if e.status == "active"}

    def status(self, command_id: str) -> str | None:
        """active | expired | released | not_applied | unhandled, or None if never seen."""
        entry = self._entries.get(command_id)
        return entry.status if entry else None

    def next_expiry(self) -> int | None:
        """The earliest expires_at (epoch ms) among active commands, or None."""
        times = [e.expires_ms for e in self._entries.values() if e.status == "active" and e.expires_ms is not None]
        return min(times, default=None)

    # -- transitions -----------------------------------------------------------------

    def on_record(self, record: Any, now: int) -> list[Decision]:
        """Decide about one record received at `now` (epoch ms). Expiries are not checked
        here; call `expire(now)` too."""
        try:
            kind = _check(record)
        except InvalidEvent as error:
            cid = record.get("command_id") if isinstance(record, dict) else None
            return [self._note(Decision("ignore", f"invalid: {error}", cid if isinstance(cid, str) else None))]
        if kind == COMMAND:
            return [self._note(self._command(record, now))]
        if kind == RENEWED:
            return [self._note(self._renewed(record, now))]
        if kind == RELEASE:
            return [self._note(self._release(record, manual=False))]
        return [self._note(Decision("ignore", "not a containment record", None))]

    def expire(self, now: int) -> list[Decision]:
        """Revert the active commands whose expiry is at or before `now` (epoch ms)."""
        decisions = []
        for cid, entry in self._entries.items():
            if entry.status == "active" and entry.expires_ms is not None and entry.expires_ms <= now:
                entry.status = "expired"
                decisions.append(self._note(Decision("revert", "expired", cid, entry.command)))
        self._prune()
        return decisions

    def release(self, command_id: str) -> list[Decision]:
        """A human's release: revert the command if it is active, `hold` or not."""
        return [self._note(self._release({"command_id": command_id}, manual=True))]

    # -- internals -------------------------------------------------------------------

    def _note(self, decision: Decision) -> Decision:
        self.counts[decision.reason.split(":")[0]] += 1
        if decision.command is not None:  # a snapshot: later renewals must not change it
            decision = replace(decision, command=dict(decision.command))
        return decision

    def _command(self, record: dict[str, Any], now: int) -> Decision:
        cid = record["command_id"]
        if cid in self._entries:
            return Decision("ignore", "duplicate", cid)
        command = dict(record)
        command.setdefault("target", {})
        command.setdefault("params", {})
        command.setdefault("hold", False)
        command.setdefault("expires_at", None)
        expires = _expiry_ms(command["expires_at"])
        if self.actions is not None and command["action"] not in self.actions:
            self._remember(cid, _Entry(command, "unhandled", expires))
            return Decision("ignore", "unknown action", cid, command)
        if cid in self._unseen_released:  # its release came first (different partitions)
            self._remember(cid, _Entry(command, "released", expires))
            return Decision("ignore", "already released", cid, command)
        if expires is not None and expires <= now:
            self._remember(cid, _Entry(command, "not_applied", expires))
            return Decision("ignore", "expired on arrival", cid, command)
        self._remember(cid, _Entry(command, "active", expires))
        return Decision("apply", "new", cid, command)

    def _renewed(self, record: dict[str, Any], now: int) -> Decision:
        cid = record["command_id"]
        entry = self._entries.get(cid)
        if entry is None:
            if "params" not in record or cid in self._unseen_released:
                return Decision("ignore", "renewal of unseen command", cid)
            # The renewal carries its whole command: a listener that missed the command
            # (it started after it) applies it now, if it is still in force.
            return self._command({**record, "type": COMMAND}, now)
        expires = _expiry_ms(record["expires_at"])
        if entry.status == "active":
            if entry.expires_ms is not None and expires is not None and expires <= entry.expires_ms:
                return Decision("ignore", "stale renewal", cid, entry.command)
            entry.expires_ms = expires
            entry.command["expires_at"] = record["expires_at"]
            return Decision("ignore", "renewed", cid, entry.command)
        if entry.status in ("expired", "not_applied") and expires is not None and expires > now:
            entry.expires_ms = expires
            entry.command["expires_at"] = record["expires_at"]
            entry.status = "active"
            self._entries.move_to_end(cid)
            return Decision("apply", "reapplied on renewal", cid, entry.command)
        return Decision("ignore", "renewal of inactive command", cid, entry.command)

    def _release(self, record: dict[str, Any], *, manual: bool) -> Decision:
        cid = record["command_id"]
        entry = self._entries.get(cid)
        if entry is None:
            if manual:
                return Decision("ignore", "release of unseen command", cid)
            if cid in self._unseen_released:
                return Decision("ignore", "duplicate release", cid)
            self._unseen_released[cid] = None
            while len(self._unseen_released) > self.remember:
                self._unseen_released.popitem(last=False)
            if self.revert_unseen_releases and (self.actions is None or record.get("action") in self.actions):
                return Decision("revert", "release of unseen command", cid, dict(record))
            return Decision("ignore", "release of unseen command", cid)
        if entry.status == "active":
            if entry.command.get("hold") and not manual and not self.release_holds:
                return Decision("ignore", "release of hold command", cid, entry.command)
            entry.status = "released"
            return Decision("revert", "manual release" if manual else "released", cid, entry.command)
        if entry.status == "released":
            return Decision("ignore", "duplicate release", cid, entry.command)
        if entry.status != "unhandled":
            entry.status = "released"  # a later renewal must not bring it back
        return Decision("ignore", "release of inactive command", cid, entry.command)

    def _remember(self, cid: str, entry: _Entry) -> None:
        self._entries[cid] = entry
        self._prune()

    def _prune(self) -> None:
        """Forget the oldest finished commands beyond `remember` (active ones are kept)."""
        excess = len(self._entries) - self.remember
        if excess <= 0:
            return
        for cid in [cid for cid, e in self._entries.items() if e.status != "active"][:excess]:
            del self._entries[cid]


# --------------------------------------------------------------------------------------
# Handlers
# --------------------------------------------------------------------------------------

Callback = Callable[[dict[str, Any]], Any | Awaitable[Any]]


class HandlerLike(Protocol):
    def apply(self, command: dict[str, Any]) -> Any: ...

    def revert(self, command: dict[str, Any]) -> Any: ...


@dataclass(frozen=True)
class Handler:
    """Two callables (sync or async) for one action: ``Handler(apply=f, revert=g)``."""

    apply: Callback
    revert: Callback = field(default=lambda command: None)


def _as_handler(action: str, handler: Any) -> HandlerLike:
    if isinstance(handler, tuple) and len(handler) == 2 and all(callable(f) for f in handler):
        return Handler(*handler)
    if callable(getattr(handler, "apply", None)) and callable(getattr(handler, "revert", None)):
        return handler
    raise TypeError(
        f"handler for {action!r} must have apply(command) and revert(command), or be an (apply, revert) pair"
    )


# --------------------------------------------------------------------------------------
# The Kafka listener
# --------------------------------------------------------------------------------------


class ContainmentListener:
    """Consumes containment records and calls ``handlers[action].apply/revert``.

    ```python
    listener = ContainmentListener("127.0.0.1:9092", "gateway-eu1-pod7", handlers={"fallback": router})
    await listener.run()          # until listener.stop()
    ```

    - ``group_id`` is per *instance*: every instance must see every command, so two
      instances must not share a group (they would split the partitions between them).
    - Offsets are committed after the records of each poll are handled; a restarted
      listener with the same group resumes after them. Idempotency by ``command_id`` holds
      within a process; across restarts it rests on resuming from the committed offset and
      on the handlers being idempotent themselves (see docs/sdk.md).
    - ``clock`` returns epoch seconds (default `time.time`); tests inject their own.
    - ``consumer_kwargs`` go to `aiokafka.AIOKafkaConsumer` (security settings...).
    """

    def __init__(
        self,
        bootstrap: str | list[str],
        group_id: str,
        topic: str = DEFAULT_COMMANDS_TOPIC,
        handlers: Mapping[str, Any] | None = None,
        *,
        clock: Callable[[], float] = time.time,
        auto_offset_reset: str = "earliest",
        poll_interval_s: float = 0.5,
        connect_timeout_s: float = 10.0,
        release_holds: bool = False,
        revert_unseen_releases: bool = True,
        kafka_config: KafkaConfig | None = None,
        **consumer_kwargs: Any,
    ) -> None:
        for fixed in ("enable_auto_commit", "isolation_level", "group_id", "value_deserializer"):
            if fixed in consumer_kwargs:
                raise TypeError(f"ContainmentListener sets {fixed} itself")
        if not group_id:
            raise ValueError("group_id is required: the listener commits its offsets in that group")
        # Security settings: kafka_config, else the environment's (FIREBREAK_KAFKA_*, docs/kafka-security.md).
        self.kafka = (kafka_config or kafka_config_of(bootstrap)).with_bootstrap(bootstrap_text(bootstrap))
        self.bootstrap = bootstrap
        self.group_id = group_id
        self.topic = topic
        self.handlers = {action: _as_handler(action, h) for action, h in (handlers or {}).items()}
        self.clock = clock
        self.auto_offset_reset = auto_offset_reset
        self.poll_interval_s = poll_interval_s
        self.connect_timeout_s = connect_timeout_s
        self._consumer_kwargs = consumer_kwargs
        self.state = ContainmentState(
            self.handlers, release_holds=release_holds, revert_unseen_releases=revert_unseen_releases
        )
        self.errors: Counter[str] = Counter()  # handler_errors, invalid_json, commit_errors
        self.records = 0  # records consumed
        self._consumer: AIOKafkaConsumer | None = None
        self._stopping = False
        self._busy = asyncio.Lock()

    # -- queries ---------------------------------------------------------------------

    def active(self) -> dict[str, dict[str, Any]]:
        """command_id → command, for the commands in force (as decided from the stream)."""
        return self.state.active()

    @property
    def stats(self) -> dict[str, int]:
        """Counts by decision reason (new, duplicate, renewed, released, expired, expired on
        arrival, unknown action, ...) plus handler errors and records consumed."""
        return {**self.state.counts, **self.errors, "records": self.records}

    def now_ms(self) -> int:
        return int(self.clock() * 1000)

    # -- lifecycle -------------------------------------------------------------------

    async def start(self) -> None:
        """Connect and subscribe. Raises ContainmentError within connect_timeout_s if there is no broker."""
        if self._consumer is not None:
            return
        consumer = AIOKafkaConsumer(
            self.topic,
            bootstrap_servers=self.bootstrap,
            group_id=self.group_id,
            enable_auto_commit=False,
            isolation_level="read_committed",
            auto_offset_reset=self.auto_offset_reset,
            **{**self.kafka.client_options(), **self._consumer_kwargs},
        )
        try:
            async with asyncio.timeout(self.connect_timeout_s):
                await consumer.start()
        except (TimeoutError, KafkaError, OSError) as error:
            await close_quietly(consumer)
            why = await diagnose(self.kafka)
            if isinstance(error, TimeoutError):
                why = f"no answer within {self.connect_timeout_s:g}s ({why})"
            raise ContainmentError(f"no Kafka broker at {bootstrap_text(self.bootstrap)}: {why}") from error
        self._consumer = consumer
        self._stopping = False

    async def stop(self) -> None:
        """Stop `run()` after the poll in progress (its records handled and committed), then
        disconnect. Idempotent; the decision state is kept, so a restarted object still knows
        which command ids it applied."""
        self._stopping = True
        async with self._busy:
            consumer, self._consumer = self._consumer, None
            if consumer is not None:
                await close_quietly(consumer)

    async def __aenter__(self) -> ContainmentListener:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def run(self) -> None:
        """Handle records and expiries until `stop()` is called."""
        await self.start()
        while not self._stopping:
            await self.step()

    async def run_until(self, predicate: Callable[[ContainmentListener], bool], timeout_s: float = 30.0) -> None:
        """Handle records and expiries until ``predicate(listener)`` is true (checked after each
        poll); raises TimeoutError after `timeout_s`. For tests and scripts.

        The deadline is checked between polls, never inside one: a poll's records are
        always handled and committed as a whole."""
        await self.start()
        deadline = time.monotonic() + timeout_s
        while not predicate(self):
            if self._stopping:
                raise ContainmentError("the listener was stopped")
            if time.monotonic() >= deadline:
                raise TimeoutError(f"run_until: condition not met within {timeout_s:g}s ({self.stats})")
            await self.step()

    async def release(self, command_id: str) -> bool:
        """A human's release (e.g. of a ``hold`` command): revert it now if active. Local to
        this listener; returns whether something was reverted."""
        async with self._busy:  # not in the middle of a poll's records
            decisions = self.state.release(command_id)
            await self._execute(decisions)
        return any(d.op == "revert" for d in decisions)

    # -- one round -------------------------------------------------------------------

    async def step(self) -> None:
        """One poll (at most poll_interval_s, less if an expiry is due sooner), the decisions
        for its records, the commit, then the expiries."""
        async with self._busy:
            consumer = self._consumer
            if consumer is None:
                raise ContainmentError("the listener is not started")
            wait_s = self.poll_interval_s
            due = self.state.next_expiry()
            if due is not None:
                wait_s = max(0.0, min(wait_s, (due - self.now_ms()) / 1000))
            try:
                batches = await consumer.getmany(timeout_ms=int(wait_s * 1000))
            except KafkaError as error:  # e.g. authorization: keep expiring on the clock meanwhile
                self.errors["poll_errors"] += 1
                log.error("polling %s failed: %s", self.topic, error)
                await asyncio.sleep(max(wait_s, 0.1))
                batches = {}
            offsets: dict[TopicPartition, int] = {}
            for tp, messages in batches.items():
                for message in messages:
                    self.records += 1
                    await self._execute(self._decide(message))
                    offsets[tp] = message.offset + 1
            if offsets:
                try:
                    await consumer.commit(offsets)
                except KafkaError as error:  # e.g. a rebalance: the records come again, ids dedupe
                    self.errors["commit_errors"] += 1
                    log.warning("committing offsets failed: %s", error)
            await self._execute(self.state.expire(self.now_ms()))

    def _decide(self, message: Any) -> list[Decision]:
        try:
            record = orjson.loads(message.value)
        except (orjson.JSONDecodeError, TypeError) as error:
            self.errors["invalid_json"] += 1
            log.warning("%s[%d]@%d is not JSON: %s", message.topic, message.partition, message.offset, error)
            return []
        decisions = self.state.on_record(record, self.now_ms())
        for d in decisions:
            if d.op == "ignore" and d.reason.startswith(("invalid", "unknown action")):
                log.warning(
                    "%s[%d]@%d %s: %s (command %s)",
                    message.topic,
                    message.partition,
                    message.offset,
                    d.reason,
                    record.get("action") if isinstance(record, dict) else None,
                    d.command_id,
                )
            else:
                log.debug("%s %s: %s", d.op, d.command_id, d.reason)
        return decisions

    async def _execute(self, decisions: list[Decision]) -> None:
        for d in decisions:
            if d.op == "ignore" or d.command is None:
                continue
            handler = self.handlers.get(d.command["action"])
            if handler is None:  # only for unseen releases with no action filter
                continue
            fn = handler.apply if d.op == "apply" else handler.revert
            try:
                result = fn(d.command)
                if inspect.isawaitable(result):
                    await result
            except Exception:  # noqa: BLE001 - a failing handler must not stop containment
                self.errors["handler_errors"] += 1
                log.exception("%s of %s (%s, %s) failed", d.op, d.command_id, d.command["action"], d.reason)
            else:
                log.info("%s %s %s %s (%s)", d.op, d.command["action"], d.command.get("target"), d.command_id, d.reason)
