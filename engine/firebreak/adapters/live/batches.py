"""Stage 1's input in batches, past Faust's per-message path.

Faust's fetcher hands every message it fetched to the conductor one by one, each in a
`wait_first` (a task and two futures), then through a channel queue and the stream's
processors to the agent; with `take_events` that is still all done per message, and it costs
more than everything else the worker does: an agent that does nothing with its batches takes
a small fraction of the messages aiokafka's `getmany` alone takes (benchmarks/faust_floor.py;
the figures are in benchmarks/README.md, "Live worker"). So for the input topic the worker takes each fetch's records as
one batch straight from the consumer: Faust still owns the group, the assignment, the
fetching, the offsets (gaps included) and the commits; the routed topic still goes through
Faust's agent as before.

`install(app, topic, handle)` replaces the app consumer's `_drain_messages` (the fetcher's
loop, faust-streaming 0.15.3) with the same loop that collects the input topic's records of
each fetch — per partition, as aiokafka returns them, without a Faust `Message` per record —
and hands them to ``handle(segments)`` once (``segments``: [(tp, [record, ...])]);
``handle`` acks them (`ack_offsets`) when their routed messages are sent (then Faust commits,
after flushing its producer: at-least-once).

The same loop also hands the routed topic's messages to the shards (Faust's callback), so it
does not wait for ``handle``: each batch's ``handle`` runs as a task of its own, after the one
before it (batches are routed and sent in the order they were fetched), and the loop goes on
fetching the next batch and handing routed messages to the shards meanwhile — stage 1 routes
batch N+1 while the shards evaluate batch N. At most `STAGE1_AHEAD` batches are in hand at once
(routing, or waiting for the one before): then the loop waits for the oldest. A batch in hand is
read but not acked, like one held while the loop lingers, so a rebalance cannot lose it
(tests/unit/live/test_live_batches.py). When the loop awaited ``handle`` inline, no routed
message reached a shard while a batch routed: benchmarks/README.md, "Eighth pass".

With the local hand-off (shard_host.py), a routed message its shard has taken or queued already
(handed in process by this worker's stage 1) is skipped here (``skip``): no Faust `Message`, not
through the agent; the shard host acks it once a full checkpoint covers it.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Awaitable, Callable, Iterable
from time import monotonic
from typing import Any

from faust.types.tuples import ack_lock
from mode.utils.futures import notify

log = logging.getLogger("firebreak.worker")

# This module is the only one that touches Faust's private internals. What it reads of the
# pinned faust-streaming (and what it copies: `_drain` is `Consumer._drain_messages` with
# `getmany` inlined; `ack_offsets` is `Consumer.ack`); tests/unit/live/test_faust_internals.py fails
# loudly when a Faust release changes any of it: read the new code, adapt, then update these.
FAUST_VERSION = "0.15.3"
FAUST_SOURCES = {  # Consumer method → sha256 (first 16 hex) of its source in FAUST_VERSION
    "_drain_messages": "44a2500309e83c63",
    "getmany": "4b168d84882a70d6",
    "ack": "5fcf41cf45153475",
    "_wait_next_records": "6218e1969a636b3f",
}
# the private names it reads of Faust's Consumer (``_stopped``: of mode's Service, its base)
FAUST_PRIVATE = (
    "_committed_offset",
    "_acked_index",
    "_acked",
    "_n_acked",
    "_waiting_for_ack",
    "_to_message",
    "_read_offset",
    "_commit_every",
    "_wait_next_records",
    "_buffered_partitions",
    "_add_gap",
    "_drain_messages",
    "_stopped",
    "_thread",
)

# The consumer's fetch waits on the broker at most this long for data (Faust's worker consumer:
# 1,500 ms). aiokafka keeps one fetch in flight per broker, for the partitions with nothing left
# in its buffer; when those are only routed partitions with nothing new — the shards have taken
# everything, which the local hand-off makes the rule — the broker holds that fetch for the whole
# wait, and the input partitions, emptied meanwhile by stage 1, are not fetched again until it
# returns: the whole worker idles (benchmarks/README.md, "Thirteenth pass": 0.8–3.8 s of ~7–11 s
# idle in a 200k run at 1,500 ms, 0.25 s at 100 ms). An idle worker sends ~10 fetches a second.
FETCH_MAX_WAIT_MS = 100
# what the above reads of Faust's consumer thread (faust.transport.drivers.aiokafka) → sha256 (first 16 hex)
FAUST_THREAD_SOURCES = {"_create_consumer": "a4dc6ba0681a298c", "_create_worker_consumer": "c2701bfc3e6f6cad"}

STAGE1_AHEAD = 2  # batches handed to stage 1 and not yet sent, at most (one routing, one waiting for it)
HELD_BACK_POLL_S = 0.005  # how soon the fetcher asks again for input held back (`install`'s held_back)
FETCHING = "FETCHING"  # faust.transport.consumer.CONSUMER_FETCHING
Segments = list[tuple[Any, list[Any]]]  # [(tp, [aiokafka ConsumerRecord, ...])], in order of arrival


def install(
    app: Any,
    topic: str,
    handle: Callable[[Segments], Awaitable[None]],
    size: int = 1_000,
    linger_s: float = 0.0,
    held_back: Callable[[], bool] | None = None,
    skip: Callable[[Any, int], bool] | None = None,
) -> None:
    """``size``, ``linger_s``: a fetch with fewer than ``size`` input messages waits for the next
    fetches, up to ``linger_s`` after its first message, so that a moderate rate still makes
    batches (each batch is one routed message per (input partition, shard)). ``skip(tp, offset)``:
    True for a message of another topic (the routed one) that its shard has taken already (handed
    to it in process: `LocalHandoff.skip_fetched`, handoff.py, which then acks it once a checkpoint covers it);
    it is not handed to Faust's agent."""
    consumer = app.consumer
    consumer._drain_messages = _drain(app, consumer, topic, handle, size, linger_s, held_back, skip)
    fetch_wait(consumer, FETCH_MAX_WAIT_MS)


def fetch_wait(consumer: Any, ms: int) -> None:
    """The worker's aiokafka consumer, once Faust's consumer thread makes it, waits on the broker
    at most ``ms`` in a fetch (`FETCH_MAX_WAIT_MS`): set on the client before it starts, which is
    when it makes its fetcher with the value."""
    thread = consumer._thread
    create = thread._create_worker_consumer

    def create_worker_consumer(transport: Any) -> Any:
        client = create(transport)
        client._fetch_max_wait_ms = ms  # aiokafka's AIOKafkaConsumer: passed to its Fetcher in start()
        return client

    thread._create_worker_consumer = create_worker_consumer


def ack_offsets(consumer: Any, tp: Any, offsets: Iterable[int]) -> None:
    """Faust's `Consumer.ack` for many offsets of one partition at once, without `Message`s:
    offsets at or past the committed one join the partition's acked offsets, which Faust's
    commit turns into the committed offset (up to the first offset not acked)."""
    with ack_lock:
        committed = consumer._committed_offset[tp]
        index, acked = consumer._acked_index[tp], consumer._acked[tp]
        added = 0
        for offset in offsets:
            if (committed is None or offset >= committed) and offset not in index:
                index.add(offset)
                acked.append(offset)
                added += 1
        consumer._n_acked += added
    notify(consumer._waiting_for_ack)


def _drain(
    app: Any,
    consumer: Any,
    topic: str,
    handle: Callable[[Segments], Awaitable[None]],
    size: int = 1_000,
    linger_s: float = 0.0,
    held_back: Callable[[], bool] | None = None,
    skip: Callable[[Any, int], bool] | None = None,
):
    async def drain_messages(fetcher: Any) -> None:
        """Faust's `Consumer._drain_messages` with its `getmany` (faust-streaming 0.15.3) inlined:
        wait for records (and for the flow, during a rebalance), then per partition: skip what
        is before the read offset, record gaps, and hand the input topic's records on."""
        callback = consumer.callback
        to_message = consumer._to_message
        consumer_should_stop = consumer._stopped.is_set
        fetcher_should_stop = fetcher._stopped.is_set
        get_read_offset = consumer._read_offset.__getitem__
        set_read_offset = consumer._read_offset.__setitem__
        set_flag, unset_flag = consumer.diag.set_flag, consumer.diag.unset_flag
        commit_every = consumer._commit_every
        acks_enabled_for = app.topics.acks_enabled_for
        batch: Segments = []  # input records not yet routed
        held = 0  # how many
        since = 0.0  # when the first of them arrived
        in_hand: deque[asyncio.Future] = deque()  # batches handed to stage 1, oldest first (`_after`)
        try:
            while not (consumer_should_stop() or fetcher_should_stop()):
                set_flag(FETCHING)
                wait = 1.0 if not batch else max(0.0, since + linger_s - monotonic())
                if held_back is not None and held_back():
                    # The input is held back (`Consumer.on_buffer_full`: the shards are behind): the fetch
                    # asks for the other partitions only, so look again soon — the input's records are
                    # fetched already and wait in aiokafka's buffer — rather than wait a second for them.
                    wait = min(wait, HELD_BACK_POLL_S)
                records, active = await consumer._wait_next_records(wait)
                await consumer.sleep(0)
                if records is None or consumer.should_stop:
                    continue
                if not consumer.flow_active:
                    try:  # as Faust's getmany: fetched while the flow stopped, so read again from the commit
                        await consumer.perform_seek()
                    except Exception as error:  # noqa: BLE001 - Faust logs and carries on too
                        log.warning("seek after a stopped flow failed: %r", error)
                    continue
                generation = app.consumer_generation_id
                for tp, tp_records in records.items():
                    if not consumer.flow_active or app.consumer_generation_id != generation:
                        break  # a rebalance began: what was fetched is fetched again after it
                    if active is not None and tp not in active and tp not in consumer._buffered_partitions:
                        continue
                    app.monitor.track_tp_end_offset(tp, consumer.highwater(tp))
                    read = get_read_offset(tp)
                    acks = acks_enabled_for(tp.topic)
                    if tp.topic == topic:
                        kept = []
                        for record in tp_records:
                            offset = record.offset
                            if read is not None and offset < read:
                                continue  # Faust drops these too (seen before a seek)
                            if read and offset - read > 1 and acks:
                                await consumer._add_gap(tp, read + 1, offset)  # so the commit can pass the gap
                            kept.append(record)
                            read = offset
                        if kept:
                            if not batch:
                                since = monotonic()
                            batch.append((tp, kept))
                            held += len(kept)
                            set_read_offset(tp, read)
                    else:
                        for record in tp_records:
                            offset = record.offset
                            if read is not None and offset < read:
                                continue
                            if read and offset - read > 1 and acks:
                                await consumer._add_gap(tp, read + 1, offset)
                            if skip is None or not skip(tp, offset):  # (taken already: handed in process)
                                message = to_message(tp, record)
                                await consumer.wait_first(callback(message), consumer.suspend_flow.wait())
                            set_read_offset(tp, offset)
                            read = offset
                    if commit_every is not None and consumer._n_acked >= commit_every:
                        consumer._n_acked = 0
                        await consumer.commit()
                while in_hand and in_hand[0].done():
                    in_hand.popleft().result()  # sent (or its failure raised here)
                if batch and (held >= size or monotonic() - since >= linger_s):
                    # (records of partitions revoked meanwhile are left out by ``handle``, unacked)
                    batch, ready, held = [], batch, 0
                    while len(in_hand) >= STAGE1_AHEAD:
                        await in_hand.popleft()
                    in_hand.append(asyncio.ensure_future(_after(in_hand[-1] if in_hand else None, handle, ready)))
                unset_flag(FETCHING)
        except consumer.consumer_stopped_errors:
            if app.should_stop:
                return
            raise
        except asyncio.CancelledError:
            if app.should_stop:
                return
            raise
        except Exception as error:
            log.exception("draining messages failed: %r", error)
            raise
        finally:
            unset_flag(FETCHING)
            for task in in_hand:  # not sent, so not acked: read again from the group's committed offset
                task.cancel()

    return drain_messages


async def _after(before: asyncio.Future | None, handle: Callable[[Segments], Awaitable[None]], ready: Segments) -> None:
    """``handle(ready)`` once the batch before it is sent (a failure there fails this one too)."""
    if before is not None:
        await before
    await handle(ready)
