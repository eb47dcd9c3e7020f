"""The shard host: the shards (routed partitions) assigned to this worker — opened, fenced,
revoked, and fed their routed messages in order.

A shard opens when it is assigned: its transactional producer starts first (which fences any
earlier owner and aborts its open transaction), then its last checkpoint is read and restored
(`ShardState`). Each shard takes its routed messages in order on an asyncio task of its own,
and the native work of each message (feed and evaluate, `ShardState.accept_offloaded`) runs on
a feeder thread without the GIL, so shards run side by side. Records leave through the
committer (committer.py).

The local hand-off (handoff.py): a routed message this worker's stage 1 produced for a shard
open here is handed to it in process once the broker has acknowledged it; `Shard.expect` keeps
each offset taken once, in order, whichever path brings it.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Awaitable, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from aiokafka.errors import KafkaError

from firebreak.adapters.live.checkpoints import ShardWriter, load_checkpoint
from firebreak.adapters.live.committer import EXIT_CHECKPOINT, Committer, stop
from firebreak.adapters.live.handoff import Handed, LocalHandoff
from firebreak.adapters.live.routed import RoutedFormatError
from firebreak.adapters.live.settings import WorkerSettings
from firebreak.adapters.live.shard import CheckpointError, ShardState
from firebreak.core import format_ts
from firebreak.dsl import CompiledRule

log = logging.getLogger("firebreak.worker")

PAUSE_S = 5.0  # housekeeping runs every second: a gap this long means the process was paused
SHARD_QUEUE = 64  # routed messages handed to a shard's task before the evaluate agent waits for it
# Records of several routed messages in one transaction: while more messages wait in the shard's
# queue (a backlog), up to this many are taken before their records are committed, each
# transaction being a few round trips to the broker during which the shard takes nothing. At a
# steady rate the queue is empty after each message, so records leave at once, as before.
COMMIT_AFTER_MESSAGES = 8


class Shard:
    """A shard assigned to this worker: its state, writer, and what awaits a checkpoint."""

    def __init__(self, state: ShardState, writer: ShardWriter) -> None:
        self.state = state
        self.writer = writer
        # to ack once a full checkpoint covers them: (stream, event) of a message taken or dropped,
        # or (None, offset) of a fetched copy skipped before Faust's agent (handoff.py)
        self.unacked: list[Any] = []
        self.full_next = state.routed_next  # the routed offset its last committed full checkpoint reached
        # the routed offset the shard reaches once it has taken every message queued: a handed
        # message is queued only at this offset, and a fetched one below it is taken already
        self.expect = state.routed_next
        self.ack_fetched: Callable[[list[int]], None] | None = None  # acks skipped fetched copies
        self.lock = asyncio.Lock()
        self.checkpointed_at = time.monotonic()
        self.queue: asyncio.Queue[tuple[Any, Any]] = asyncio.Queue(SHARD_QUEUE)  # routed messages to take
        self.task: asyncio.Task | None = None  # takes them, in order (`ShardHost._shard_loop`)
        self.busy = False  # taking one now
        self.committed_mark: int | None = None  # the watermark of its last committed checkpoint
        self.taken_since_commit = 0  # routed messages taken since its records were last committed

    def mark_moved(self) -> bool:
        """Its watermark passed the one last committed, with no records to carry it: a head of its
        own (no records), so the case stage need not wait for the next full checkpoint. Not while
        a restored shard derives again what it had committed (``suppress``): its head would count
        fewer records than the one committed, and a second restart would send those again."""
        mark = self.state.engine.watermark
        if mark is None or self.state.suppress:
            return False
        return self.committed_mark is None or mark > self.committed_mark


class ShardHost:
    def __init__(
        self, settings: WorkerSettings, rules: Sequence[CompiledRule], committer: Committer, metrics: Any
    ) -> None:
        self.settings = settings
        self.rules = tuple(rules)
        self.committer = committer
        self.metrics = metrics
        self.input_partitions = settings.input_partitions  # as the broker has it, once the topics are described
        self.shards: dict[int, Shard] = {}
        self.held: set[int] = set()  # shards assigned here, from assignment to revoke
        self.fenced: set[int] = set()  # shards another worker took over while this one was paused
        self.opening: dict[int, asyncio.Future] = {}  # shards being opened (`shard`)
        self.stopping = False  # the worker is shutting down
        self.last_housekeeping: float | None = None
        self.resumed_at = float("-inf")  # when housekeeping last found that this process had been paused
        # The shards' native work (feed, evaluate): a thread per core, at most one per shard.
        self.feeder = ThreadPoolExecutor(
            max(1, min(settings.shards, os.cpu_count() or 2)), thread_name_prefix="firebreak-feed"
        )
        self.local = LocalHandoff(self)  # the local hand-off from this worker's stage 1 (handoff.py)

    # ---- assignment -------------------------------------------------------------------------

    def assigned(self, shards: set[int]) -> None:
        """The shards the group assigned here now; each new one opens (before its first message)."""
        self.fenced.clear()  # what is assigned now is ours
        self.held = set(shards)
        for number in sorted(self.held - set(self.shards) - set(self.opening)):
            task = asyncio.ensure_future(self.shard(number))
            task.add_done_callback(_log_failure)

    async def revoked(self, shards: set[int]) -> None:
        self.held -= shards
        for number in sorted(shards):
            shard = self.shards.pop(number, None)
            if shard is not None:
                self._stop_loop(shard)
                await shard.writer.stop()  # the next owner restarts from the last checkpoint

    async def shutdown(self) -> None:
        """The shards' tasks end (what they had not committed, the next owner takes again)."""
        self.stopping = True
        for shard in list(self.shards.values()):
            if shard.task is not None:
                shard.task.cancel()
        await asyncio.gather(*(s.task for s in self.shards.values() if s.task is not None), return_exceptions=True)

    def housekeeping(self, now: float) -> float | None:
        """Housekeeping runs now: the seconds this process was paused, when it was (None if not)."""
        last, self.last_housekeeping = self.last_housekeeping, now
        if last is not None and now - last > PAUSE_S:
            self.resumed_at = now
            return now - last
        return None

    # ---- opening ----------------------------------------------------------------------------

    async def shard(self, number: int) -> Shard | None:
        """The shard's state, restored from its checkpoint when it is new here (`_open`); None
        when its partition was revoked meanwhile. One opening per shard at a time: a routed
        message that comes first waits for the opening under way rather than start a second
        producer, which would fence the first."""
        shard = self.shards.get(number)
        if shard is not None:
            return shard
        opening = self.opening.get(number)
        if opening is None:
            opening = self.opening[number] = asyncio.ensure_future(self._open(number))

            def done(task: asyncio.Future, number: int = number) -> None:
                if self.opening.get(number) is task:
                    del self.opening[number]

            opening.add_done_callback(done)
        return await asyncio.shield(opening)

    def _ours(self, number: int) -> bool:
        return number in self.held and number not in self.fenced

    async def _open(self, number: int) -> Shard | None:
        if not self._ours(number):
            return None  # revoked (or fenced) before the opening began
        s = self.settings
        now = time.monotonic()
        paused = self.last_housekeeping is not None and now - self.last_housekeeping > PAUSE_S
        resumed = now if paused else self.resumed_at  # paused and housekeeping has not run yet, or it has
        wait = resumed + min(3.0, s.session_timeout_ms / 3000) + 0.5 - now
        if wait > 0:
            # This process was paused (SIGSTOP, a VM freeze) and may not have heard from the group
            # yet: the shard may be another worker's by now, and starting it would fence that owner.
            # A heartbeat tells (a revoke follows if so); the message waits, it is not dropped.
            await asyncio.sleep(wait)
            if not self._ours(number):
                return None
        writer, full, head = await self._start(number)
        if not self._ours(number):
            await writer.stop()  # revoked while it started: the next owner restores it
            return None
        if full is None:
            state = ShardState(self.rules, number, s.shards, self.input_partitions, s.lateness_ms)
        else:
            try:
                state = ShardState.restore(self.rules, full, self.input_partitions, s.lateness_ms)
            except CheckpointError as error:
                stop(EXIT_CHECKPOINT, f"{error}; stopping", "checkpoint")
        if head is not None and head["derived"] > state.derived:
            state.suppress = head["derived"] - state.derived  # committed before: derive, do not send
        _log_opened(number, state, full is not None or head is not None)
        shard = self.shards[number] = Shard(state, writer)
        return shard

    async def _start(self, number: int) -> tuple[ShardWriter, dict | None, dict | None]:
        """A shard's producer, started — which fences any earlier owner's producer and aborts its
        open transaction — then the shard's checkpoint, read after that: the last one anybody
        commits for this shard. Both wait out a broker that is briefly away; past
        --commit-timeout the worker stops with one line, as a commit that cannot end does."""

        async def writer() -> ShardWriter:
            started = ShardWriter(self.settings, number)  # a new one each try: a failed start is not resumed
            await started.start()
            return started

        started = await self._until_broker_answers(number, "its producer cannot start", writer, "producer")
        full, head = await self._until_broker_answers(
            number, "its checkpoint cannot be read", lambda: load_checkpoint(self.settings, number), "read"
        )
        return started, full, head

    async def _until_broker_answers(
        self, number: int, what: str, attempt: Callable[[], Awaitable[Any]], operation: str
    ) -> Any:
        deadline = time.monotonic() + self.settings.commit_timeout_ms / 1000
        delay = 0.5
        while True:
            try:
                return await attempt()
            except asyncio.CancelledError as error:
                task = asyncio.current_task()
                if task is None or task.cancelling():
                    raise  # the worker is stopping: not a broker problem
                reason: BaseException = error  # aiokafka cancelled its own fetch as the broker went away
            except (KafkaError, OSError) as error:
                reason = error
            self.metrics.checkpoint_failures[operation] += 1
            if time.monotonic() >= deadline:
                self.committer.refused(None if isinstance(reason, asyncio.CancelledError) else reason)
            log.warning(
                "shard %d: %s yet (%s); retrying in %g s",
                number,
                what,
                type(reason).__name__,
                delay,
                extra={"fields": {"event": "checkpoint_retry", "shard": number}},
            )
            await asyncio.sleep(delay)
            delay = min(delay * 2, 5.0)

    # ---- routed messages --------------------------------------------------------------------

    async def evaluate(self, stream: Any, event: Any) -> None:
        """A routed message (Faust's event): handed to its shard's task, in order."""
        number = event.message.partition
        if not self._ours(number):
            # Not ours (any more): fenced, or a message fetched before a revoke and delivered after
            # it. Taking it would start the shard here from a checkpoint its owner is moving past —
            # and fence that owner. The next assignment says whose it is.
            return
        shard = await self.shard(number)
        if shard is None:
            return
        if shard.task is None:
            shard.task = asyncio.ensure_future(self._shard_loop(shard))
        await shard.queue.put((stream, event))
        shard.expect = max(shard.expect, event.message.offset + 1)

    async def _shard_loop(self, shard: Shard) -> None:
        number = shard.state.shard
        while True:
            stream, event = await shard.queue.get()
            if self.shards.get(number) is not shard:
                return  # revoked or fenced: its next owner takes these messages again
            shard.busy = True
            try:  # (stream None: handed in process, handoff.py)
                await (self.local.take(shard, event) if stream is None else self._take(shard, stream, event))
            except asyncio.CancelledError:
                raise
            except RoutedFormatError as error:
                stop(
                    EXIT_CHECKPOINT,
                    f"shard {number}: routed message {_offset(event)}: {error}; stopping",
                    "routed format",
                )
            except Exception as error:
                if self.stopping or self.shards.get(number) is not shard:
                    # Revoked or fenced while it took the message: the next owner takes it again
                    # from the last checkpoint.
                    log.info(
                        "shard %d left this worker while taking routed message %d (%s)",
                        number,
                        _offset(event),
                        type(error).__name__,
                        extra={"fields": {"event": "shard_left", "shard": number}},
                    )
                    return
                # a bug, not a broker problem (those are handled where they happen)
                log.critical(
                    "shard %d failed taking routed message %d: %s: %s; stopping (a restart resumes from "
                    "its checkpoint)",
                    number,
                    _offset(event),
                    type(error).__name__,
                    error,
                    exc_info=True,
                )
                stop(1, reason="shard failed")
            finally:
                shard.busy = False

    def _stop_loop(self, shard: Shard) -> None:
        """The shard left this worker: its task ends (after the message it is taking, if any)."""
        if shard.task is not None and not shard.busy:
            shard.task.cancel()

    async def _take(self, shard: Shard, stream: Any, event: Any) -> None:
        message = event.message
        async with shard.lock:
            started = time.perf_counter()
            # Feeding and evaluating let go of the GIL: on a feeder thread, beside stage 1, the
            # event loop and the other shards.
            if not await shard.state.accept_offloaded(message.offset, event.value, self._offload):
                if message.offset >= shard.full_next:  # handed since the last full checkpoint: acked with the next
                    shard.unacked.append((stream, event))
                else:
                    await stream.ack(event)  # taken before the last full checkpoint
                return
            event.value = event.message.value = None  # taken: kept only to be acked at the next full checkpoint
            shard.unacked.append((stream, event))
            await self._taken(shard, started)

    async def _taken(self, shard: Shard, started: float) -> None:
        self.metrics.observe_evaluation(time.perf_counter() - started)
        shard.taken_since_commit += 1
        if shard.state.pending and (shard.queue.empty() or shard.taken_since_commit >= COMMIT_AFTER_MESSAGES):
            await self._commit(shard, full=False)

    def _offload(self, feed: Callable[[], Any]) -> Awaitable[Any]:
        return asyncio.get_running_loop().run_in_executor(self.feeder, feed)

    # ---- time, checkpoints, reloads ---------------------------------------------------------

    async def tick(self) -> None:
        """Every shard at once: time for quiet shards, their records, full checkpoints when due.
        Together, because each has its own producer and one shard's transaction would otherwise
        hold the others' records up (p99 time to detect, benchmarks/README.md)."""
        await asyncio.gather(*(self._tick(shard) for shard in list(self.shards.values())))

    async def _tick(self, shard: Shard) -> None:
        interval = self.settings.checkpoint_interval_ms / 1000
        async with shard.lock:
            if self.shards.get(shard.state.shard) is not shard:
                return  # revoked or fenced while another shard's checkpoint went on
            shard.state.tick()
            due = time.monotonic() - shard.checkpointed_at >= interval and bool(shard.unacked)
            if shard.state.pending or due or shard.mark_moved():
                await self._commit(shard, full=due)

    async def reload(self, rules: Sequence[CompiledRule]) -> None:
        """New rules for every shard, each checkpointed in full at once: a restart must not
        replay across the reload."""
        self.rules = tuple(rules)
        for shard in list(self.shards.values()):
            async with shard.lock:
                shard.state.set_rules(self.rules)
                await self._commit(shard, full=True)

    async def _commit(self, shard: Shard, full: bool) -> None:
        if not await self.committer.commit(shard, full):
            await self._fenced(shard)

    async def _fenced(self, shard: Shard) -> None:
        """Another worker owns this shard now (this one was paused or cut off past its session):
        its transaction was aborted, so drop the shard and its state; the owner restores it from
        the last committed checkpoint."""
        number = shard.state.shard
        self.fenced.add(number)
        if self.shards.get(number) is shard:
            del self.shards[number]
        self._stop_loop(shard)
        self.metrics.fenced += 1
        log.warning(
            "shard %d fenced: another worker has taken it over (this one was paused past its session "
            "or lost the broker); its uncommitted records were aborted and it is dropped here",
            number,
            extra={"fields": {"event": "shard_fenced", "shard": number}},
        )
        try:
            await shard.writer.stop()
        except Exception:  # noqa: BLE001 - a fenced producer may fail to close cleanly; it is discarded anyway
            pass


def _offset(event: Any) -> int:
    """A routed message's offset: fetched (Faust's event) or handed in process (handoff.py)."""
    return event.offset if isinstance(event, Handed) else event.message.offset


def _log_opened(number: int, state: ShardState, restored: bool) -> None:
    watermark = None if state.engine.watermark is None else format_ts(state.engine.watermark)
    fields = {
        "event": "shard_restored" if restored else "shard_fresh",
        "shard": number,
        "routed_offset": state.routed_next,
        "rederive": state.suppress,
        "watermark": watermark,
        "idle_partitions": sorted(state.idle),
    }
    if restored:
        log.info(
            "shard %d restored from its checkpoint: routed offset %d, watermark %s, idle input partitions %s, "
            "%d records to re-derive unsent (committed before)",
            number,
            state.routed_next,
            watermark,
            sorted(state.idle) or "none",
            state.suppress,
            extra={"fields": fields},
        )
    else:
        log.info("shard %d starts fresh (no checkpoint)", number, extra={"fields": fields})


def _log_failure(task: asyncio.Future) -> None:
    """A shard opened ahead of its messages failed: the first routed message opens it again."""
    if not task.cancelled() and task.exception() is not None:
        log.warning(
            "shard opening failed (%s); its first routed message opens it again",
            type(task.exception()).__name__,
            extra={"fields": {"event": "shard_open_failed"}},
        )
