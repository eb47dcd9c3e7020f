"""The Faust app: the worker's three parts wired together.

- the input source (input_source.py): the input topic a fetch at a time → stage 1
  (`RouteStage`, one native call per batch) → the routed topic (one message per
  (batch, shard), the events as data: routed.py) or the dead-letter topic; idle markers.
  At-least-once: after a crash Faust re-delivers from its committed offset, and the shards
  drop what they already took.
- the shard host (shard_host.py): ``evaluate`` (routed topic, concurrency 1, manual acks)
  hands each routed message to its shard (`ShardState`), opened, fenced and revoked there.
- the committer (committer.py): records leave only in a transaction with the shard's head
  checkpoint (checkpoints.py), and routed messages are acked once a full snapshot covers
  them; the exit codes when that cannot be.
- a 1 s timer: idle markers for quiet input partitions, time for quiet shards, periodic
  checkpoints, rule-file reloads.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import time
from collections import Counter
from collections.abc import Callable, Sequence
from typing import Any

import faust
from aiokafka.errors import (
    ProducerFenced,
    TopicAuthorizationFailedError,
)
from faust.types import TP

from firebreak.adapters.live import batches
from firebreak.adapters.live.case_runner import CaseRunner
from firebreak.adapters.live.checkpoints import MAX_CHECKPOINT_BYTES
from firebreak.adapters.live.committer import (
    EXIT_CHECKPOINT,
    EXIT_COMMIT_TIMEOUT,
    EXIT_REFUSED,
    EXIT_SHARDS,
    Committer,
)
from firebreak.adapters.live.input_source import InputSource
from firebreak.adapters.live.metrics import CONTENT_TYPE, Metrics, ShardView, WorkerView
from firebreak.adapters.live.preflight import missing_permissions
from firebreak.adapters.live.routing import NotNative, Out, RouteStage
from firebreak.adapters.live.settings import WorkerSettings
from firebreak.adapters.live.shard_host import ShardHost
from firebreak.adapters.live.startup import create_topics, start_summary
from firebreak.core.sharding import rules_version
from firebreak.dsl import CompiledRule

__all__ = ["EXIT_CHECKPOINT", "EXIT_COMMIT_TIMEOUT", "EXIT_REFUSED", "EXIT_SHARDS", "LiveWorker"]

log = logging.getLogger("firebreak.worker")

RulesLoader = Callable[[], tuple[Sequence[CompiledRule] | None, str]]  # (rules or None, message)


class LiveWorker:
    def __init__(
        self,
        settings: WorkerSettings,
        rules: Sequence[CompiledRule],
        load_rules: RulesLoader,
        rules_mtime: Callable[[], float],
    ) -> None:
        self.settings = settings
        self.rules = tuple(rules)
        self.load_rules = load_rules
        self.rules_mtime = rules_mtime
        self.rules_seen = rules_mtime()
        self.reload_requested = False
        self.route_stage = RouteStage(self.rules, settings)
        self.routed_partitions: int | None = None  # of the routed topic, as the broker has it (create_topics)
        self.last_views: dict[int, ShardView] = {}  # what a scrape showed of each shard last
        self.metrics = Metrics()
        self.cases = CaseRunner(settings, self.rules) if settings.cases else None  # stage 3 (case_runner.py)
        self.app = self._build_app()
        self.input = InputSource(settings, self.app, self.route_stage, self.metrics, self._send)
        self.host = ShardHost(settings, self.rules, Committer(settings, self.metrics), self.metrics)

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
            # A routed message carries its events (routed.py, up to MESSAGE_BYTES of rows), compressed
            # already: stage 1 packs its rows into a zstd frame in Rust without the GIL (format 6), so
            # the producer does not compress again (cramjam on the event loop was 14% of a worker's
            # CPU: benchmarks/README.md, "Seventh pass"); dead letters go uncompressed (rare). Several
            # fetched per partition per round trip (4 MB; 16 MB held more in memory for nothing).
            producer_compression_type=None,
            consumer_max_fetch_size=4 * 1024 * 1024,
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
                    await self._send(out)
                last: dict[int, int] = {}
                for partition, offset, _ in batch:
                    last[partition] = offset
                for partition, offset in last.items():
                    self.input.heard(partition, offset)
                self.metrics.events_in += len(batch)

        @app.agent(routed, concurrency=1)
        async def evaluate(stream):
            async for event in stream.noack().events():
                await self.host.evaluate(stream, event)

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
        """Create every topic the worker uses, if missing (startup.py), and read the partition
        counts the broker has."""
        inputs, self.routed_partitions = await create_topics(self.settings)
        self.host.input_partitions = inputs or self.settings.input_partitions

    async def _send(self, out: Out) -> None:
        topic = self.routed if out.topic == "routed" else self.dead
        delivery = await topic.send(value=out.value, partition=out.partition)
        if out.topic == "routed" and self.settings.local_handoff and out.partition is not None:
            self.host.local.sent(out.partition, delivery, out.value)  # the local hand-off: once acknowledged

    async def _on_assigned(self, app, assigned: set[Any], **kwargs) -> None:
        s = self.settings
        inputs = sorted(tp.partition for tp in assigned if tp.topic == s.input_topic)
        shards = sorted(tp.partition for tp in assigned if tp.topic == s.routed_topic)
        self.input.assigned(set(inputs))
        log.info(
            "assigned input partitions %s of %s and shards %s of %d",
            inputs or "none",
            s.input_topic,
            shards or "none",
            s.shards,
            extra={"fields": {"event": "assigned", "input_partitions": inputs, "shards": shards}},
        )
        self.host.assigned(set(shards))

    async def _on_revoked(self, app, revoked: set[Any], **kwargs) -> None:
        if revoked:
            log.info(
                "revoked %d partitions (a rebalance)",
                len(revoked),
                extra={
                    "fields": {
                        "event": "revoked",
                        "partitions": sorted(f"{tp.topic}[{tp.partition}]" for tp in revoked),
                    }
                },
            )
        await self.host.revoked({tp.partition for tp in revoked if tp.topic == self.settings.routed_topic})

    async def _on_shutdown(self, app, **kwargs) -> None:
        await self.host.shutdown()

    async def _housekeeping(self) -> None:
        now = time.monotonic()
        paused = self.host.housekeeping(now)
        if paused is not None:
            # This process was paused (SIGSTOP, a VM freeze, a long GC): the high-water marks and
            # quiet times it knows are stale, so no partition is idle until it has looked again.
            log.warning(
                "worker was paused for %.0f s; idle detection starts afresh",
                paused,
                extra={"fields": {"event": "paused", "seconds": round(paused, 1)}},
            )
            self.input.paused(now)
        await self.input.send_idle_markers()
        if self.reload_requested or self.rules_mtime() != self.rules_seen:
            await self._reload()
        await self.host.tick()

    # ---- rules reload ---------------------------------------------------------------------------

    def _request_reload(self) -> None:
        self.reload_requested = True

    async def _reload(self) -> None:
        self.reload_requested = False
        self.rules_seen = self.rules_mtime()
        rules, message = self.load_rules()
        if rules is None:
            log.error(
                "rules not reloaded, keeping the %d current rules:\n%s",
                len(self.rules),
                message,
                extra={"fields": {"event": "reload_failed", "rules": len(self.rules)}},
            )
            self.metrics.reload_failures += 1
            return
        try:
            self.route_stage.set_rules(rules)
        except NotNative as error:
            log.error(
                "rules not reloaded, keeping the %d current rules: %s",
                len(self.rules),
                error,
                extra={"fields": {"event": "reload_failed", "rules": len(self.rules)}},
            )
            self.metrics.reload_failures += 1
            return
        self.rules = tuple(rules)
        await self.host.reload(self.rules)
        self.metrics.reloads += 1
        version = rules_version(self.rules)
        fields = {"event": "rules_reloaded", "rules": len(self.rules), "version": version}
        log.info("rules reloaded: %d rules (version %s)", len(self.rules), version, extra={"fields": fields})

    def view(self) -> WorkerView:
        """What the metrics show at a scrape (engine/firebreak/adapters/live/metrics.py)."""
        shards = []
        for n, shard in self.host.shards.items():
            state = shard.state
            try:
                open_by_severity = Counter(item["severity"] for item in state.engine.open_incidents())
                pending_s = time.monotonic() - shard.checkpointed_at if shard.unacked else 0.0
                view = ShardView(
                    n,
                    dict(state.stats),
                    open_by_severity,
                    state.engine.watermark,
                    dict(state.max_ts),
                    frozenset(state.idle),
                    state.input_partitions,
                    pending_s,
                )
            except RuntimeError:  # its engine is feeding on the feeder thread (borrowed): what it showed last
                view = self.last_views.get(n)
                if view is None:
                    continue
            self.last_views[n] = view
            shards.append(view)
        cases = self.cases.counts() if self.cases is not None else None
        return WorkerView(
            self.route_stage.stats["dead_lettered"],
            shards,
            self.lags(),
            self.settings.checkpoint_interval_ms / 1000,
            cases,
        )

    def lags(self) -> list[tuple[str, int, int]]:
        """(topic, partition, messages not yet taken) for the assigned partitions."""
        out = []
        consumer = self.app.consumer
        for tp in sorted(consumer.assignment()):
            highwater = consumer.highwater(tp)
            if highwater is None:
                continue
            if tp.topic == self.settings.input_topic:
                taken = self.input.taken(tp.partition)
            elif tp.topic == self.settings.routed_topic and tp.partition in self.host.shards:
                taken = self.host.shards[tp.partition].state.routed_next
            else:
                continue
            out.append((tp.topic, tp.partition, max(0, highwater - taken)))
        return out

    # ---- running ------------------------------------------------------------------------------

    def summary(self) -> tuple[str, dict[str, Any]]:
        """What this worker does, for the start-up log line (startup.py)."""
        return start_summary(self.settings, self.rules, self.host.input_partitions)

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
            log.error(
                "firebreak worker: %d permission(s) missing on %s; not starting",
                len(missing),
                self.settings.bootstrap,
                extra={"fields": {"event": "stopped", "missing": len(missing)}},
            )
            return EXIT_REFUSED
        if self.settings.input_batches:  # the input in batches, past Faust's per-message path (batches.py)
            # with the local hand-off, a routed message its shard took already skips Faust's agent
            self.input.install(
                self.host.local.skip_fetched if self.settings.local_handoff else None
            )  # creates the consumer
            routed_topic = self.settings.routed_topic

            def ack_offsets(number: int, offsets: list[int]) -> None:
                batches.ack_offsets(self.app.consumer, TP(routed_topic, number), offsets)

            self.host.local.ack_offsets = ack_offsets
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
    return (
        f"group {settings.app_id} has {routed_partitions} shards (its routed topic {settings.routed_topic} has "
        f"{routed_partitions} partitions) but this worker was started with --shards {settings.shards}: the shard "
        f"count cannot change for an --app-id (pairs are assigned by crc32 mod shards); run with --shards "
        f"{routed_partitions}, or start a new group with another --app-id (its shards begin with empty windows)"
    )


def new_loop() -> asyncio.AbstractEventLoop:
    """The worker's event loop: uvloop where it is installed (not on Windows), else asyncio's.
    Chosen here, explicitly, for the loop the worker runs — not through Faust's FAUST_LOOP
    variable, which had to be set before `import faust`."""
    try:
        import uvloop
    except ImportError:
        return asyncio.new_event_loop()
    return uvloop.new_event_loop()


def _quiet_fenced(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
    """A fenced or refused producer leaves its error in aiokafka's internal futures too; `_fenced`
    and `_refused` have handled and logged it, so asyncio's "exception was never retrieved" is noise."""
    if isinstance(context.get("exception"), ProducerFenced | TopicAuthorizationFailedError):
        log.debug("handled elsewhere: %s", context.get("message"))  # `_fenced` / `_refused` said it already
        return
    loop.default_exception_handler(context)
