"""The input source: the input topic's partitions assigned to this worker, fetched a batch at a
time (batches.py), routed by stage 1 (routing.py) and sent to the routed topic, then acked;
and the idle markers of quiet partitions.

No backpressure is needed here: what stage 1 routes waits on the broker (the routed topic), not
in this process, and the routed topic's consumer is bounded by Faust's stream buffer — a shard
that falls behind makes its routed partition lag, never this worker's memory grow.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from faust.types import TP

from firebreak.adapters.live import batches
from firebreak.adapters.live.routing import Out, RouteStage
from firebreak.adapters.live.settings import WorkerSettings
from firebreak.core import format_ts

log = logging.getLogger("firebreak.worker")

IDLE_PROBE_S = 5.0  # how long to wait for the broker's end offsets before declaring a partition idle


class InputSource:
    def __init__(
        self,
        settings: WorkerSettings,
        app: Any,
        route_stage: RouteStage,
        metrics: Any,
        send: Callable[[Out], Awaitable[None]],
    ) -> None:
        """``send``: sends one of stage 1's messages (routed, or a dead letter)."""
        self.settings = settings
        self.app = app
        self.route_stage = route_stage
        self.metrics = metrics
        self.send = send
        self.last_input: dict[int, tuple[float, int]] = {}  # input partition → (monotonic time, offset)
        self.assigned_at = time.monotonic()  # the last assignment (rebalance): fetching was paused until then
        self.held: set[int] = set()  # input partitions assigned here
        self.idle_sent: set[int] = set()
        self.router_thread = ThreadPoolExecutor(1, thread_name_prefix="firebreak-route")  # stage 1's native routing

    def install(self, skip: Callable[[TP, int], bool] | None = None) -> None:
        """Take the input topic a fetch at a time, past Faust's per-message path (batches.py).
        Lingering up to route_batch_ms across fetches for fuller batches; messages held past a
        fetch survive a rebalance (tests/unit/live/test_live_batches.py). Creates the consumer.
        ``skip``: the routed messages its shard took already (the local hand-off), not handed to Faust."""
        s = self.settings
        batches.install(self.app, s.input_topic, self.route_batch, s.route_batch, s.route_batch_ms / 1000, skip=skip)

    async def route_batch(self, segments: batches.Segments) -> None:
        """One fetch's input records (batches.py): routed in one native call, sent, then acked."""
        await self.app.flow_control.acquire()  # not while Faust has suspended the flow (a rebalance)
        assigned = self.app.consumer.assignment()
        segments = [(tp, records) for tp, records in segments if tp in assigned]
        if not segments:
            return
        batch = [(record.partition, record.offset, record.value) for _, records in segments for record in records]
        for out in await self.route_stage.handle_offloaded(batch, self._route_call):  # decoded on a thread
            await self.send(out)
        consumer = self.app.consumer
        last: dict[int, int] = {}
        for tp, records in segments:
            batches.ack_offsets(consumer, tp, [record.offset for record in records])
            last[tp.partition] = records[-1].offset
        for partition, offset in last.items():
            self.heard(partition, offset)
        self.metrics.events_in += len(batch)

    def _route_call(self, call: Callable[..., Any], *args: Any) -> Awaitable[Any]:
        return asyncio.get_running_loop().run_in_executor(self.router_thread, call, *args)

    def heard(self, partition: int, offset: int) -> None:
        self.last_input[partition] = (time.monotonic(), offset)
        if partition in self.idle_sent:
            self.idle_sent.discard(partition)
            fields = {"event": "partition_active", "partition": partition, "offset": offset}
            log.info("input partition %d active again at offset %d", partition, offset, extra={"fields": fields})

    def assigned(self, partitions: set[int]) -> None:
        self.assigned_at = time.monotonic()
        for partition in partitions - self.held:  # new here: what we knew of it is stale
            self.last_input.pop(partition, None)
            self.idle_sent.discard(partition)
        self.held = set(partitions)

    def paused(self, now: float) -> None:
        """This process was paused: the quiet times it knows are stale; idle detection starts afresh."""
        self.assigned_at = now

    def taken(self, partition: int) -> int:
        """The next offset of an input partition stage 1 has not taken yet (for the lag)."""
        return self.last_input.get(partition, (0, -1))[1] + 1

    async def send_idle_markers(self) -> None:
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
                await self.send(out)
            self.idle_sent.add(tp.partition)
            max_ts = self.route_stage.max_ts.get(tp.partition)
            at = format_ts(max_ts) if max_ts is not None else "no event yet"
            log.info(
                "input partition %d idle: caught up at offset %d, quiet for %.0f s, last event time %s",
                tp.partition,
                offset + 1,
                now - heard,
                at,
                extra={
                    "fields": {
                        "event": "partition_idle",
                        "partition": tp.partition,
                        "offset": offset + 1,
                        "event_time": None if max_ts is None else at,
                    }
                },
            )
