"""The Faust app: agents that decode, call the stage logic, and send what it returns.

- ``route`` (input topic, concurrency 1): `RouteStage` per message → routed topic
  or dead-letter topic. At-least-once: after a crash Faust re-delivers from its
  committed offset, and the shards drop what they already took.
- ``evaluate`` (routed topic, concurrency 1, manual acks): `ShardState` per shard
  partition; records leave only in a transaction with the shard's head checkpoint
  (checkpoints.py), and routed messages are acked once a full snapshot covers them.
- a 1 s timer: idle markers for quiet input partitions, time for quiet shards,
  periodic checkpoints, rule-file reloads.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from typing import Any

import faust
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import (
    ClusterAuthorizationFailedError,
    IllegalOperation,
    KafkaError,
    ProducerFenced,
    TopicAlreadyExistsError,
    TopicAuthorizationFailedError,
    TransactionalIdAuthorizationFailed,
)
from faust.types import TP

from firebreak.adapters.live import batch_cache, batches
from firebreak.adapters.live.case_runner import CaseRunner
from firebreak.adapters.live.checkpoints import MAX_CHECKPOINT_BYTES, ShardWriter, load_checkpoint
from firebreak.adapters.live.metrics import CONTENT_TYPE, Metrics, ShardView, WorkerView
from firebreak.adapters.live.preflight import missing_permissions
from firebreak.adapters.live.ranges import RangeReader
from firebreak.adapters.live.routing import RouteStage
from firebreak.adapters.live.settings import WorkerSettings
from firebreak.adapters.live.shard import CheckpointError, ShardState
from firebreak.core import format_ts
from firebreak.core.sharding import rules_version
from firebreak.dsl import CompiledRule

log = logging.getLogger("firebreak.worker")

IDLE_PROBE_S = 5.0  # how long to wait for the broker's end offsets before declaring a partition idle
PAUSE_S = 5.0  # housekeeping runs every second: a gap this long means the process was paused
EXIT_REFUSED = 2  # the exit status when the broker refuses a permission the worker needs
EXIT_COMMIT_TIMEOUT = 3  # ... when a transaction of records does not end within --commit-timeout
EXIT_CHECKPOINT = 4  # ... when a shard's checkpoint was written by a release this one cannot read
EXIT_SHARDS = 5  # ... when --shards is not the partition count of the group's existing routed topic
SHARD_QUEUE = 64  # routed messages handed to a shard's task before the evaluate agent waits for it
RulesLoader = Callable[[], tuple[Sequence[CompiledRule] | None, str]]  # (rules or None, message)


class Shard:
    """A shard assigned to this worker: its state, writer, and what awaits a checkpoint."""

    def __init__(self, state: ShardState, writer: ShardWriter) -> None:
        self.state = state
        self.writer = writer
        self.unacked: list[Any] = []
        self.lock = asyncio.Lock()
        self.checkpointed_at = time.monotonic()
        self.queue: asyncio.Queue[tuple[Any, Any]] = asyncio.Queue(SHARD_QUEUE)  # routed messages to take
        self.task: asyncio.Task | None = None  # takes them, in order (`LiveWorker._shard_loop`)
        self.busy = False  # taking one now


class LiveWorker:
    def __init__(self, settings: WorkerSettings, rules: Sequence[CompiledRule], load_rules: RulesLoader,
                 rules_mtime: Callable[[], float]) -> None:  # fmt: skip
        self.settings = settings
        self.rules = tuple(rules)
        self.load_rules = load_rules
        self.rules_mtime = rules_mtime
        self.rules_seen = rules_mtime()
        self.reload_requested = False
        self.route_stage = RouteStage(self.rules, settings)
        self.shards: dict[int, Shard] = {}
        self.input_partitions = settings.input_partitions
        self.routed_partitions: int | None = None  # of the routed topic, as the broker has it (create_topics)
        self.last_input: dict[int, tuple[float, int]] = {}  # input partition → (monotonic time, offset)
        self.assigned_at = time.monotonic()  # the last assignment (rebalance): fetching was paused until then
        self.inputs_held: set[int] = set()  # input partitions assigned here
        self.shards_held: set[int] = set()  # shards (routed partitions) assigned here, from assignment to revoke
        self.fenced: set[int] = set()  # shards another worker took over while this one was paused
        self.last_housekeeping: float | None = None
        self.resumed_at = float("-inf")  # when housekeeping last found that this process had been paused
        self.idle_sent: set[int] = set()
        self.ranges = RangeReader(settings)  # references to batches another worker (or process) kept
        self.input_paused = False  # stage 1 waits: the kept batches passed their budget (batch_cache.py)
        self.opening: dict[int, asyncio.Future] = {}  # shards being opened (`_shard`)
        self.stopping = False  # the worker is shutting down (`_on_shutdown`)
        # The shards' native work (feed, evaluate): a thread per core, at most one per shard (2 here).
        feeders = max(1, min(settings.shards, os.cpu_count() or 2))
        self.feeder = ThreadPoolExecutor(feeders, thread_name_prefix="firebreak-feed")
        self.router_thread = ThreadPoolExecutor(1, thread_name_prefix="firebreak-route")  # stage 1's native routing
        self.last_views: dict[int, ShardView] = {}  # what a scrape showed of each shard last
        self.metrics = Metrics()
        self.cases = CaseRunner(settings, self.rules) if settings.cases else None  # stage 3 (case_runner.py)
        self.app = self._build_app()

    # ---- Faust wiring ----------------------------------------------------------------

    def _build_app(self) -> faust.App:
        s = self.settings
        app = faust.App(
            s.app_id,
            broker=[f"kafka://{server.strip()}" for server in s.bootstrap.split(",")],
            broker_credentials=s.kafka.faust_credentials(),
            value_serializer="raw",
            key_serializer="raw",
            topic_partitions=s.shards,
            consumer_auto_offset_reset="earliest",
            stream_wait_empty=False,
            broker_session_timeout=s.session_timeout_ms / 1000,
            broker_heartbeat_interval=min(3.0, s.session_timeout_ms / 3000),
            producer_acks=-1,
            producer_linger_ms=5,  # batch the routed messages
            broker_max_poll_records=s.route_batch,  # messages of one fetch: one batch of stage 1
            producer_max_request_size=MAX_CHECKPOINT_BYTES,
            web_enabled=True,
            web_port=s.web_port,
            web_bind=s.web_host,
            web_host=s.web_host,
            datadir=os.path.join(os.environ.get("FIREBREAK_DATADIR", "/tmp"), f"firebreak-{s.app_id}-{os.getpid()}"),
        )
        inputs = app.topic(s.input_topic, partitions=s.input_partitions, value_type=bytes, key_type=bytes)
        routed = app.topic(s.routed_topic, partitions=s.shards, value_type=bytes, key_type=bytes)
        dead = app.topic(s.dead_letter_topic, partitions=s.output_partitions, value_type=bytes, key_type=bytes)
        self.routed, self.dead = routed, dead

        @app.agent(inputs, concurrency=1)  # subscribes the input topic; takes it only without batches.py
        async def route(stream):
            async for events in stream.take_events(s.route_batch, within=s.route_batch_ms / 1000):
                batch = [(e.message.partition, e.message.offset, e.value) for e in events]
                for out in self.route_stage.handle(batch):  # one native call (docs/live.md)
                    topic = routed if out.topic == "routed" else dead
                    await topic.send(value=out.value, partition=out.partition)
                last: dict[int, int] = {}
                for partition, offset, _ in batch:
                    last[partition] = offset
                for partition, offset in last.items():
                    self._heard_input(partition, offset)
                self.metrics.events_in += len(batch)

        @app.agent(routed, concurrency=1)
        async def evaluate(stream):
            async for event in stream.noack().events():
                await self._evaluate(stream, event)

        @app.timer(1.0)
        async def housekeeping():
            await self._housekeeping()

        @app.page("/metrics")
        async def metrics(web, request):
            return web.text(self.metrics.render(self.view()), content_type=CONTENT_TYPE)

        @app.task
        async def on_start():
            asyncio.get_running_loop().add_signal_handler(signal.SIGHUP, self._request_reload)

        if self.cases is not None:

            @app.task
            async def cases():  # stage 3: one worker of the group leads it (case_runner.py)
                await self.cases.run()

        app.on_partitions_revoked.connect(self._on_revoked)
        app.on_before_shutdown.connect(self._on_shutdown)
        app.on_partitions_assigned.connect(self._on_assigned)
        return app

    async def create_topics(self) -> None:
        """Create every topic the worker uses, if missing (partition counts from settings)."""
        s = self.settings
        wanted = [
            NewTopic(s.input_topic, s.input_partitions, 1),
            NewTopic(s.routed_topic, s.shards, 1, topic_configs={"retention.ms": str(24 * 3_600_000),
                                                                 "max.message.bytes": str(8 * 1024 * 1024)}),
            NewTopic(s.incidents_topic, s.output_partitions, 1),
            NewTopic(s.containment_topic, s.output_partitions, 1),
            NewTopic(s.dead_letter_topic, s.output_partitions, 1),
            NewTopic(s.cases_topic, 1, 1, topic_configs={"cleanup.policy": "compact",
                                                         "max.message.bytes": str(MAX_CHECKPOINT_BYTES)}),
            NewTopic(s.checkpoint_topic, s.shards, 1, topic_configs={
                "cleanup.policy": "compact", "max.message.bytes": str(MAX_CHECKPOINT_BYTES),
                "segment.ms": str(600_000)}),
        ]  # fmt: skip
        admin = AIOKafkaAdminClient(**s.client_options(), request_timeout_ms=10_000)
        await admin.start()
        try:
            for topic in wanted:
                try:
                    await admin.create_topics([topic])
                except TopicAlreadyExistsError:
                    pass
                except (TopicAuthorizationFailedError, ClusterAuthorizationFailedError):
                    log.info("not allowed to create topic %s: it must exist already (the permission check says)",
                             topic.name)  # fmt: skip
            described = {d.get("topic"): d for d in await admin.describe_topics([s.input_topic, s.routed_topic])}
            self.input_partitions = len(described.get(s.input_topic, {}).get("partitions") or ()) or s.input_partitions
            self.routed_partitions = len(described.get(s.routed_topic, {}).get("partitions") or ()) or None
        finally:
            await admin.close()

    # ---- stage 1 ---------------------------------------------------------------------------

    async def _route_batch(self, segments: batches.Segments) -> None:
        """One fetch's input records (batches.py), per partition: route them in one call, send,
        then ack."""
        await self.app.flow_control.acquire()  # not while Faust has suspended the flow (a rebalance)
        assigned = self.app.consumer.assignment()
        segments = [(tp, records) for tp, records in segments if tp in assigned]
        if not segments:
            return
        batch = [(record.partition, record.offset, record.value) for _, records in segments for record in records]
        for out in await self.route_stage.handle_offloaded(batch, self._route_call):  # decoded on a thread
            topic = self.routed if out.topic == "routed" else self.dead
            await topic.send(value=out.value, partition=out.partition)
        consumer = self.app.consumer
        last: dict[int, int] = {}
        for tp, records in segments:
            batches.ack_offsets(consumer, tp, [record.offset for record in records])
            last[tp.partition] = records[-1].offset
        for partition, offset in last.items():
            self._heard_input(partition, offset)
        self.metrics.events_in += len(batch)
        if self.route_stage.cache.full() and not self.input_paused:
            # The shards of this worker are behind by more than the kept batches' budget: stop
            # fetching input (Faust's own backpressure for a full stream buffer) until they catch up.
            self.input_paused = True
            for tp in consumer.assignment():
                if tp.topic == self.settings.input_topic:
                    consumer.on_buffer_full(tp)

    def _input_catching_up(self) -> None:
        """Fetch input again once the shards have taken half the kept batches' budget back."""
        cache = self.route_stage.cache
        if self.input_paused and cache.bytes <= cache.budget // 2:
            self.input_paused = False
            consumer = self.app.consumer
            for tp in consumer.assignment():
                if tp.topic == self.settings.input_topic:
                    consumer.on_buffer_drop(tp)

    def _heard_input(self, partition: int, offset: int) -> None:
        self.last_input[partition] = (time.monotonic(), offset)
        if partition in self.idle_sent:
            self.idle_sent.discard(partition)
            log.info("input partition %d active again at offset %d", partition, offset,
                     extra={"fields": {"event": "partition_active", "partition": partition, "offset": offset}})

    async def _send_idle_markers(self) -> None:
        """An assigned input partition quiet for `idle_timeout_ms` and caught up is idle.

        "Caught up" is asked of the broker (its end offset now), not taken from the last fetch
        response: a consumer that has not fetched for a while (a rebalance pending, a paused
        fetcher) would otherwise call a partition with messages waiting idle, and make them late."""
        now = time.monotonic()
        quiet: list[tuple[TP, int, float]] = []
        for tp in self.app.consumer.assignment():
            if tp.topic != self.settings.input_topic or tp.partition in self.idle_sent:
                continue
            heard, offset = self.last_input.get(tp.partition, (self.assigned_at, -1))
            heard = max(heard, self.assigned_at)  # quiet counts from the last rebalance at the earliest
            if (now - heard) * 1000 >= self.settings.idle_timeout_ms:
                quiet.append((tp, offset, heard))
        if not quiet:
            return
        try:
            ends = await asyncio.wait_for(self.app.consumer.highwaters(*(tp for tp, _, _ in quiet)), IDLE_PROBE_S)
        except Exception as error:  # noqa: BLE001 - no answer means no idle marker this round; try again later
            log.debug("end offsets not known (%s); no partition declared idle this round", error)
            return
        for tp, offset, heard in quiet:
            end = ends.get(tp)
            if end is None or end > offset + 1 or self.last_input.get(tp.partition, (0, offset))[1] != offset:
                continue  # messages remain (slow, not idle), or one arrived while we asked
            for out in self.route_stage.idle(tp.partition):
                await self.routed.send(value=out.value, partition=out.partition)
            self.idle_sent.add(tp.partition)
            max_ts = self.route_stage.max_ts.get(tp.partition)
            at = format_ts(max_ts) if max_ts is not None else "no event yet"
            log.info("input partition %d idle: caught up at offset %d, quiet for %.0f s, last event time %s",
                     tp.partition, offset + 1, now - heard, at,
                     extra={"fields": {"event": "partition_idle", "partition": tp.partition, "offset": offset + 1,
                                       "event_time": None if max_ts is None else at}})  # fmt: skip

    # ---- stage 2 ------------------------------------------------------------------------------

    async def _start_shard(self, number: int) -> tuple[ShardWriter, dict | None, dict | None]:
        """A shard's producer, started — which fences any earlier owner's producer and aborts its
        open transaction — then the shard's checkpoint, read after that: the last one anybody
        commits for this shard (read before, a worker paused past its session could commit
        after it). Both wait out a broker that is briefly away (a restart while the shard
        starts: the agent used to crash there, and the routed message it held was lost to the
        shard); past --commit-timeout the worker stops with one line, as a commit that cannot
        end does."""

        async def writer() -> ShardWriter:
            started = ShardWriter(self.settings, number)  # a new one each try: a failed start is not resumed
            await started.start()
            return started

        started = await self._until_broker_answers(number, "its producer cannot start", writer, "producer")
        full, head = await self._until_broker_answers(number, "its checkpoint cannot be read",
                                                      lambda: load_checkpoint(self.settings, number),
                                                      "read")  # fmt: skip
        return started, full, head

    async def _until_broker_answers(self, number: int, what: str, attempt: Callable[[], Awaitable[Any]],
                                    operation: str) -> Any:  # fmt: skip
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
                self._refused(None if isinstance(reason, asyncio.CancelledError) else reason)
                raise reason
            log.warning("shard %d: %s yet (%s); retrying in %g s", number, what, type(reason).__name__, delay,
                        extra={"fields": {"event": "checkpoint_retry", "shard": number}})  # fmt: skip
            await asyncio.sleep(delay)
            delay = min(delay * 2, 5.0)

    async def _shard(self, number: int) -> Shard | None:
        """The shard's state, restored from its checkpoint when it is new here (`_open_shard`);
        None when its partition was revoked meanwhile. One opening per shard at a time: the
        assignment starts every new shard at once (`_open_assigned`), and a routed message that
        comes first waits for that opening rather than start a second producer, which would
        fence the first."""
        shard = self.shards.get(number)
        if shard is not None:
            return shard
        opening = self.opening.get(number)
        if opening is None:
            opening = self.opening[number] = asyncio.ensure_future(self._open_shard(number))

            def done(task: asyncio.Future, number: int = number) -> None:
                if self.opening.get(number) is task:
                    del self.opening[number]

            opening.add_done_callback(done)
        return await asyncio.shield(opening)

    def _open_assigned(self) -> None:
        """Open the shards assigned here, together, before their first routed message: each
        opening (a producer's transactions, the checkpoint read) takes a few hundred ms, and one
        after the other, on the first message of each, they held the first batches up."""
        for number in sorted(self.shards_held - set(self.shards) - set(self.opening) - self.fenced):
            task = asyncio.ensure_future(self._shard(number))
            task.add_done_callback(_log_failure)

    async def _open_shard(self, number: int) -> Shard | None:
        if number not in self.shards_held or number in self.fenced:
            return None  # revoked (or fenced) before the opening began
        shard = self.shards.get(number)
        if shard is None:
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
                if number not in self.shards_held or number in self.fenced:
                    return None
            writer, full, head = await self._start_shard(number)
            if number not in self.shards_held or number in self.fenced:
                await writer.stop()  # revoked while it started: the next owner restores it
                return None
            engine = self.route_stage.engine
            if full is None:
                state = ShardState(self.rules, number, s.shards, self.input_partitions, s.lateness_ms, engine)
            else:
                try:
                    state = ShardState.restore(self.rules, full, self.input_partitions, s.lateness_ms, engine)
                except CheckpointError as error:
                    log.critical("%s; stopping", error, extra={"fields": {"event": "stopped", "reason": "checkpoint"}})
                    logging.shutdown()
                    os._exit(EXIT_CHECKPOINT)
            if head is not None and head["derived"] > state.derived:
                state.suppress = head["derived"] - state.derived  # committed before: derive, do not send
            fields = {"event": "shard_restored" if full is not None or head is not None else "shard_fresh",
                      "shard": number, "routed_offset": state.routed_next, "rederive": state.suppress,
                      "watermark": None if state.engine.watermark is None else format_ts(state.engine.watermark),
                      "idle_partitions": sorted(state.idle)}  # fmt: skip
            if full is not None or head is not None:
                log.info("shard %d restored from its checkpoint: routed offset %d, watermark %s, idle input "
                         "partitions %s, %d records to re-derive unsent (committed before)", number,
                         state.routed_next, fields["watermark"], fields["idle_partitions"] or "none", state.suppress,
                         extra={"fields": fields})  # fmt: skip
            else:
                log.info("shard %d starts fresh (no checkpoint)", number, extra={"fields": fields})
            shard = self.shards[number] = Shard(state, writer)
        return shard

    async def _evaluate(self, stream, event) -> None:
        message = event.message
        if message.partition in self.fenced or message.partition not in self.shards_held:
            # Not ours (any more): fenced, or a message fetched before a revoke and delivered after
            # it. Taking it would start the shard here from a checkpoint its owner is moving past —
            # and fence that owner (a fault test's lost records). The next assignment says whose it is.
            return
        shard = await self._shard(message.partition)
        if shard is None:
            return
        # Each shard takes its messages in order on a task of its own, so that the shards' native
        # feeds (which let go of the GIL) run side by side on the feeder threads; the agent only
        # hands them over, and waits when a shard's queue is full.
        if shard.task is None:
            shard.task = asyncio.ensure_future(self._shard_loop(shard))
        await shard.queue.put((stream, event))

    async def _shard_loop(self, shard: Shard) -> None:
        number = shard.state.shard
        while True:
            stream, event = await shard.queue.get()
            if self.shards.get(number) is not shard:
                return  # revoked or fenced: its next owner takes these messages again
            shard.busy = True
            try:
                await self._take(shard, stream, event)
            except asyncio.CancelledError:
                raise
            except Exception as error:
                if self.stopping or self.shards.get(number) is not shard:
                    # Revoked or fenced while it took the message (its input read cut short, say):
                    # the next owner takes it again from the last checkpoint.
                    log.info("shard %d left this worker while taking routed message %d (%s)", number,
                             event.message.offset, type(error).__name__,
                             extra={"fields": {"event": "shard_left", "shard": number}})  # fmt: skip
                    return
                # a bug, not a broker problem (those are handled where they happen)
                log.critical("shard %d failed taking routed message %d: %s: %s; stopping (a restart resumes from "
                             "its checkpoint)", number, event.message.offset, type(error).__name__, error,
                             exc_info=True,
                             extra={"fields": {"event": "stopped", "reason": "shard failed"}})  # fmt: skip
                logging.shutdown()
                os._exit(1)
            finally:
                shard.busy = False

    def _stop_loop(self, shard: Shard) -> None:
        """The shard left this worker: its task ends (after the message it is taking, if any)."""
        if shard.task is not None and not shard.busy:
            shard.task.cancel()

    async def _take(self, shard: Shard, stream, event) -> None:
        message = event.message
        async with shard.lock:
            started = time.perf_counter()
            batch = rules = None
            head = shard.state.needs_batch(message.offset, event.value)
            if head is not None:  # a reference (format 3): the batch kept here, else its offsets read again
                batch, rules = batch_cache.take(head["b"], message.partition), head.get("rv")
                if batch is None:
                    batch, rules = await self._read_again(message.partition, head)
                else:
                    self._input_catching_up()
            offloaded = batch is not None and not isinstance(batch, bytes) and shard.state.kind == "native"
            if offloaded:
                # Feeding and evaluating let go of the GIL: on a feeder thread, beside stage 1, the
                # event loop and the other shards.
                taken = await shard.state.accept_offloaded(message.offset, event.value, batch, rules, self._offload)
            else:
                taken = shard.state.accept(message.offset, event.value, batch, rules)
            if not taken:
                await stream.ack(event)
                return
            shard.unacked.append((stream, event))
            if not offloaded:
                shard.state.tick()
            self.metrics.observe_evaluation(time.perf_counter() - started)
            if shard.state.pending:
                await self._checkpoint(shard, full=False)

    def _offload(self, feed: Callable[[], Any]) -> Awaitable[Any]:
        return asyncio.get_running_loop().run_in_executor(self.feeder, feed)

    def _route_call(self, call: Callable[..., Any], *args: Any) -> Awaitable[Any]:
        return asyncio.get_running_loop().run_in_executor(self.router_thread, call, *args)

    async def _read_again(self, number: int, head: dict[str, Any]) -> tuple[dict[int, Any], str | None]:
        """A reference's events from the input topic (ranges.py), routed as stage 1 did, per
        input partition with events for the shard."""
        batches, version = {}, None
        for partition, _hb, first, last, events in head["parts"]:
            if not events:
                continue
            records = await self._until_broker_answers(number, "its input offsets cannot be read",
                                                       partial(self.ranges.read, partition, first, last),
                                                       "input")  # fmt: skip
            self.metrics.read_again += len(records)
            batches[partition], version = self.route_stage.reroute(records, number, partition)
        return batches, version

    async def _checkpoint(self, shard: Shard, full: bool) -> None:
        """Commit pending records with the shard's head (or full snapshot); a full snapshot
        also acks the routed messages it covers."""
        records = shard.state.pending
        try:
            async with asyncio.timeout(self.settings.commit_timeout_ms / 1000):
                await shard.writer.commit(records, shard.state.checkpoint() if full else shard.state.header())
        except ProducerFenced:
            await self._fenced(shard)
            return
        except (KafkaError, IllegalOperation) as error:  # refused, or a send after the transaction failed
            self._refused(shard.writer.transaction_error() or error)
        except TimeoutError:
            # aiokafka can leave a refused transaction waiting forever: say what it knows, and stop
            self._refused(shard.writer.transaction_error())
        self.metrics.count_records(records)
        self.metrics.checkpoints["full" if full else "head"] += 1
        shard.state.pending = []
        if full:
            shard.checkpointed_at = time.monotonic()
            unacked, shard.unacked = shard.unacked, []
            for stream, event in unacked:
                await stream.ack(event)

    def _refused(self, error: Exception | None) -> None:
        """Records cannot be committed: the broker refused a write the permission check could
        not try (the output topics), or a transaction did not end within --commit-timeout. The
        worker stops with one line rather than retry forever or die with a traceback; nothing
        uncommitted was visible, and a restart resumes from the last checkpoint."""
        s = self.settings
        if isinstance(error, TopicAuthorizationFailedError | TransactionalIdAuthorizationFailed):
            user = s.kafka.sasl_username or "<principal>"
            log.critical("the broker refused to let this worker write its records (%s); allow it: kafka-acls --add "
                         "--allow-principal User:%s --operation Write --topic %s --topic %s; stopping",
                         type(error).__name__, user, s.incidents_topic, s.containment_topic,
                         extra={"fields": {"event": "stopped", "reason": type(error).__name__}})  # fmt: skip
            code = EXIT_REFUSED
        else:
            log.critical("records could not be committed within %g s (%s); stopping: a restart resumes from the last "
                         "checkpoint", s.commit_timeout_ms / 1000, type(error).__name__ if error else "no answer",
                         extra={"fields": {"event": "stopped", "reason": "commit timeout"}})  # fmt: skip
            code = EXIT_COMMIT_TIMEOUT
        logging.shutdown()
        os._exit(code)

    async def _fenced(self, shard: Shard) -> None:
        """Another worker owns this shard now (this one was paused or cut off past its session):
        its transaction was aborted, so drop the shard and its state; the owner restores it from
        the last committed checkpoint."""
        number = shard.state.shard
        self.fenced.add(number)
        self.route_stage.cache.forget(number)
        self._input_catching_up()
        if self.shards.get(number) is shard:
            del self.shards[number]
        self._stop_loop(shard)
        self.metrics.fenced += 1
        log.warning("shard %d fenced: another worker has taken it over (this one was paused past its session "
                    "or lost the broker); its uncommitted records were aborted and it is dropped here", number,
                    extra={"fields": {"event": "shard_fenced", "shard": number}})  # fmt: skip
        try:
            await shard.writer.stop()
        except Exception:  # noqa: BLE001 - a fenced producer may fail to close cleanly; it is discarded anyway
            pass

    async def _on_assigned(self, app, assigned: set[TP], **kwargs) -> None:
        s = self.settings
        inputs = sorted(tp.partition for tp in assigned if tp.topic == s.input_topic)
        shards = sorted(tp.partition for tp in assigned if tp.topic == s.routed_topic)
        self.assigned_at = time.monotonic()
        self.fenced.clear()  # what is assigned now is ours
        for partition in set(inputs) - self.inputs_held:  # new here: what we knew of it is stale
            self.last_input.pop(partition, None)
            self.idle_sent.discard(partition)
        self.inputs_held = set(inputs)
        self.shards_held = set(shards)
        self.route_stage.local_shards = self.shards_held  # batches are kept for these shards only
        for number in range(s.shards):
            if number not in self.shards_held:
                self.route_stage.cache.forget(number)
        log.info("assigned input partitions %s of %s and shards %s of %d", inputs or "none", s.input_topic,
                 shards or "none", s.shards,
                 extra={"fields": {"event": "assigned", "input_partitions": inputs, "shards": shards}})  # fmt: skip
        self._open_assigned()

    async def _on_shutdown(self, app, **kwargs) -> None:
        """The worker stops: the shards' tasks end (what they had not committed, the next owner
        takes again from the last checkpoint), then the input reader closes under no read."""
        self.stopping = True
        for shard in list(self.shards.values()):
            if shard.task is not None:
                shard.task.cancel()
        await asyncio.gather(*(s.task for s in self.shards.values() if s.task is not None), return_exceptions=True)
        await self.ranges.stop()

    async def _on_revoked(self, app, revoked: set[TP], **kwargs) -> None:
        if revoked:
            log.info("revoked %d partitions (a rebalance)", len(revoked),
                     extra={"fields": {"event": "revoked", "partitions": sorted(f"{tp.topic}[{tp.partition}]"
                                                                                  for tp in revoked)}})  # fmt: skip
        self.shards_held -= {tp.partition for tp in revoked if tp.topic == self.settings.routed_topic}
        self.route_stage.local_shards = self.shards_held
        for tp in revoked:
            if tp.topic == self.settings.routed_topic:
                self.route_stage.cache.forget(tp.partition)  # its next owner reads them from the input
            if tp.topic == self.settings.routed_topic and tp.partition in self.shards:
                shard = self.shards.pop(tp.partition)
                self._stop_loop(shard)
                await shard.writer.stop()  # the next owner restarts from the last checkpoint
        self._input_catching_up()

    async def _housekeeping(self) -> None:
        now = time.monotonic()
        if self.last_housekeeping is not None and now - self.last_housekeeping > PAUSE_S:
            # This process was paused (SIGSTOP, a VM freeze, a long GC): the high-water marks and
            # quiet times it knows are stale, so no partition is idle until it has looked again.
            log.warning("worker was paused for %.0f s; idle detection starts afresh", now - self.last_housekeeping,
                        extra={"fields": {"event": "paused", "seconds": round(now - self.last_housekeeping, 1)}})
            self.assigned_at = now
            self.resumed_at = now
        self.last_housekeeping = now
        await self._send_idle_markers()
        if self.reload_requested or self.rules_mtime() != self.rules_seen:
            await self._reload()
        # Every shard at once: each has its own transactional producer, and while one holds its
        # lock for a transaction the evaluate agent (one for all shards) waits for it. One after
        # the other, the full checkpoints of 4 shards held detection up for the sum of 4
        # transactions every --checkpoint-interval (p99 time to detect + 1-3 s on a loaded machine,
        # benchmarks/README.md); together, for the longest one.
        await asyncio.gather(*(self._tick_shard(shard) for shard in list(self.shards.values())))

    async def _tick_shard(self, shard: Shard) -> None:
        """Housekeeping of one shard: time for a quiet shard, its records, a full checkpoint when due."""
        interval = self.settings.checkpoint_interval_ms / 1000
        async with shard.lock:
            if self.shards.get(shard.state.shard) is not shard:
                return  # revoked or fenced while another shard's checkpoint went on
            shard.state.tick()
            due = time.monotonic() - shard.checkpointed_at >= interval and bool(shard.unacked)
            if shard.state.pending or due:
                await self._checkpoint(shard, full=due)

    # ---- rules reload ---------------------------------------------------------------------------

    def _request_reload(self) -> None:
        self.reload_requested = True

    async def _reload(self) -> None:
        self.reload_requested = False
        self.rules_seen = self.rules_mtime()
        rules, message = self.load_rules()
        if rules is None:
            log.error("rules not reloaded, keeping the %d current rules:\n%s", len(self.rules), message,
                      extra={"fields": {"event": "reload_failed", "rules": len(self.rules)}})  # fmt: skip
            self.metrics.reload_failures += 1
            return
        self.rules = tuple(rules)
        self.route_stage.set_rules(self.rules)
        for shard in list(self.shards.values()):
            async with shard.lock:
                shard.state.set_rules(self.rules)
                await self._checkpoint(shard, full=True)  # a restart must not replay across the reload
        self.metrics.reloads += 1
        version = rules_version(self.rules)
        log.info("rules reloaded: %d rules (version %s)", len(self.rules), version,
                 extra={"fields": {"event": "rules_reloaded", "rules": len(self.rules), "version": version}})

    def view(self) -> WorkerView:
        """What the metrics show at a scrape (engine/firebreak/adapters/live/metrics.py)."""
        shards = []
        for n, shard in self.shards.items():
            state = shard.state
            try:
                open_by_severity = Counter(item["severity"] for item in state.engine.open_incidents())
                pending_s = time.monotonic() - shard.checkpointed_at if shard.unacked else 0.0
                view = ShardView(n, dict(state.stats), open_by_severity, state.engine.watermark, dict(state.max_ts),
                                 frozenset(state.idle), state.input_partitions, pending_s)  # fmt: skip
            except RuntimeError:  # its engine is feeding on the feeder thread (borrowed): what it showed last
                view = self.last_views.get(n)
                if view is None:
                    continue
            self.last_views[n] = view
            shards.append(view)
        cases = self.cases.counts() if self.cases is not None else None
        return WorkerView(self.route_stage.stats["dead_lettered"], shards, self.lags(),
                          self.settings.checkpoint_interval_ms / 1000, cases)  # fmt: skip

    def lags(self) -> list[tuple[str, int, int]]:
        """(topic, partition, messages not yet taken) for the assigned partitions."""
        out = []
        consumer = self.app.consumer
        for tp in sorted(consumer.assignment()):
            highwater = consumer.highwater(tp)
            if highwater is None:
                continue
            if tp.topic == self.settings.input_topic:
                taken = self.last_input.get(tp.partition, (0, -1))[1] + 1
            elif tp.topic == self.settings.routed_topic and tp.partition in self.shards:
                taken = self.shards[tp.partition].state.routed_next
            else:
                continue
            out.append((tp.topic, tp.partition, max(0, highwater - taken)))
        return out

    # ---- running ------------------------------------------------------------------------------

    def summary(self) -> tuple[str, dict[str, Any]]:
        """What this worker does, for the start-up log line."""
        s = self.settings
        version = rules_version(self.rules)
        fields = {
            "event": "starting", "app_id": s.app_id, "bootstrap": s.bootstrap,
            "input_topic": s.input_topic, "input_partitions": self.input_partitions,
            "routed_topic": s.routed_topic, "shards": s.shards, "incidents_topic": s.incidents_topic,
            "containment_topic": s.containment_topic, "dead_letter_topic": s.dead_letter_topic,
            "checkpoint_topic": s.checkpoint_topic, "rules": len(self.rules), "rules_version": version,
            "rule_paths": list(s.rules), "lateness_ms": s.lateness_ms, "idle_timeout_ms": s.idle_timeout_ms,
            "checkpoint_interval_ms": s.checkpoint_interval_ms,
            "metrics_url": f"http://{s.web_host}:{s.web_port}/metrics", "engine": self.route_stage.engine,
        }  # fmt: skip
        text = (f"firebreak worker starting: group {s.app_id} on {s.bootstrap}; {s.input_topic} "
                f"({self.input_partitions} partitions) -> {s.routed_topic} ({s.shards} shards) -> "
                f"{s.incidents_topic}, {s.containment_topic}; bad input -> {s.dead_letter_topic}; "
                f"{len(self.rules)} rules (version {version}) from {', '.join(s.rules)}; lateness "
                f"{s.lateness_ms / 1000:g} s, idle after {s.idle_timeout_ms / 1000:g} s, full checkpoint every "
                f"{s.checkpoint_interval_ms / 1000:g} s; {self.route_stage.engine} engine"
                f"{f' ({self.route_stage.why_not})' if self.route_stage.why_not else ''}; "
                f"metrics at {fields['metrics_url']}")  # fmt: skip
        return text, fields

    def run(self) -> int:
        from faust.worker import Worker

        loop = new_loop()
        asyncio.set_event_loop(loop)
        loop.set_exception_handler(_quiet_fenced)
        loop.run_until_complete(self.create_topics())
        problem = shards_mismatch(self.settings, self.routed_partitions)
        if problem is not None:
            log.critical("%s; not starting", problem, extra={"fields": {"event": "stopped", "reason": "shards"}})
            return EXIT_SHARDS
        text, fields = self.summary()
        log.info(text, extra={"fields": fields})
        missing = loop.run_until_complete(missing_permissions(self.settings))
        for problem in missing:
            log.error(problem, extra={"fields": {"event": "permission_missing"}})
        if missing:
            log.error("firebreak worker: %d permission(s) missing on %s; not starting", len(missing),
                      self.settings.bootstrap, extra={"fields": {"event": "stopped", "missing": len(missing)}})
            return EXIT_REFUSED
        if self.settings.input_batches:  # the input in batches, past Faust's per-message path (batches.py)
            # Lingering up to route_batch_ms (50 ms) across fetches for fuller batches; messages held past a
            # fetch survive a rebalance (tests/unit/test_live_batches.py).
            batches.install(self.app, self.settings.input_topic, self._route_batch, self.settings.route_batch,
                            self.settings.route_batch_ms / 1000,
                            held_back=lambda: self.input_paused)  # creates the consumer: on `loop`
        # Logging is ours (engine/firebreak/adapters/live/logs.py): no spinner, no banner, no colour codes.
        worker = Worker(self.app, loop=loop, quiet=True, override_logging=False, redirect_stdouts=False)
        worker.spinner = None
        worker.execute_from_commandline()
        return 0


def shards_mismatch(settings: WorkerSettings, routed_partitions: int | None) -> str | None:
    """Why the worker must not start with ``settings.shards`` on a routed topic of
    ``routed_partitions`` partitions (None: fine). A group's (rule, group) pairs are assigned to
    shards by `crc32 mod shards`, and its shards' checkpoints hold that count: a worker with
    another count would route events to shards that do not own their pairs."""
    if routed_partitions is None or routed_partitions == settings.shards:
        return None
    return (f"group {settings.app_id} has {routed_partitions} shards (its routed topic {settings.routed_topic} has "
            f"{routed_partitions} partitions) but this worker was started with --shards {settings.shards}: the shard "
            f"count cannot change for an --app-id (pairs are assigned by crc32 mod shards); run with --shards "
            f"{routed_partitions}, or start a new group with another --app-id (its shards begin with empty windows)")


def new_loop() -> asyncio.AbstractEventLoop:
    """The worker's event loop: uvloop where it is installed (not on Windows), else asyncio's.
    Chosen here, explicitly, for the loop the worker runs — not through Faust's FAUST_LOOP
    variable, which had to be set before `import faust`."""
    try:
        import uvloop
    except ImportError:
        return asyncio.new_event_loop()
    return uvloop.new_event_loop()


def _log_failure(task: asyncio.Future) -> None:
    """A shard opened ahead of its messages failed: the first routed message opens it again."""
    if not task.cancelled() and task.exception() is not None:
        log.warning("shard opening failed (%s); its first routed message opens it again",
                    type(task.exception()).__name__, extra={"fields": {"event": "shard_open_failed"}})


def _quiet_fenced(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
    """A fenced or refused producer leaves its error in aiokafka's internal futures too; `_fenced`
    and `_refused` have handled and logged it, so asyncio's "exception was never retrieved" is noise."""
    if isinstance(context.get("exception"), ProducerFenced | TopicAuthorizationFailedError):
        log.debug("handled elsewhere: %s", context.get("message"))  # `_fenced` / `_refused` said it already
        return
    loop.default_exception_handler(context)
