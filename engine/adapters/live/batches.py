"""Stage 1's input in batches, past Faust's per-message path.

Faust's fetcher hands every message it fetched to the conductor one by one, each in a
`wait_first` (a task and two futures), then through a channel queue and the stream's
processors to the agent; with `take_events` that is still all done per message, and it costs
more than everything else the worker does: an agent that does nothing with its batches takes
~7k messages/s on our 2 cores under load (benchmarks/faust_floor.py), against ~380k/s for
aiokafka's `getmany` alone. So for the input topic the worker takes each fetch's messages as
one batch straight from the consumer's `getmany`: Faust still owns the group, the
assignment, the fetching, the offsets (gaps included) and the commits; the routed topic
still goes through Faust's agent as before.

`install(app, topic, handle)` replaces the app consumer's `_drain_messages` (the fetcher's
loop, faust-streaming 0.15.3) with the same loop that collects the input topic's messages of
each fetch and awaits ``handle(messages)`` once for them; ``handle`` acks them when their
routed messages are sent (then Faust commits, after flushing its producer: at-least-once).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from time import monotonic
from typing import Any

log = logging.getLogger("firebreak.worker")

FETCHING = "FETCHING"  # faust.transport.consumer.CONSUMER_FETCHING


def install(app: Any, topic: str, handle: Callable[[list[Any]], Awaitable[None]], size: int = 1_000,
            linger_s: float = 0.0) -> None:  # fmt: skip
    """``size``, ``linger_s``: a fetch with fewer than ``size`` input messages waits for the next
    fetches, up to ``linger_s`` after its first message, so that a moderate rate still makes
    batches (each batch is one routed message per (input partition, shard))."""
    consumer = app.consumer
    consumer._drain_messages = _drain(app, consumer, topic, handle, size, linger_s)


def _drain(app: Any, consumer: Any, topic: str, handle: Callable[[list[Any]], Awaitable[None]], size: int = 1_000,
           linger_s: float = 0.0):  # fmt: skip
    async def drain_messages(fetcher: Any) -> None:  # pragma: no cover - exercised against a broker
        callback = consumer.callback
        getmany = consumer.getmany
        consumer_should_stop = consumer._stopped.is_set
        fetcher_should_stop = fetcher._stopped.is_set
        get_read_offset = consumer._read_offset.__getitem__
        set_read_offset = consumer._read_offset.__setitem__
        set_flag, unset_flag = consumer.diag.set_flag, consumer.diag.unset_flag
        commit_every = consumer._commit_every
        acks_enabled_for = app.topics.acks_enabled_for
        batch: list[Any] = []  # input messages not yet routed
        since = 0.0  # when the first of them arrived
        try:
            while not (consumer_should_stop() or fetcher_should_stop()):
                set_flag(FETCHING)
                wait = 1.0 if not batch else max(0.0, since + linger_s - monotonic())
                messages = getmany(timeout=wait)
                await consumer.sleep(0)
                if consumer.should_stop:
                    continue
                async for tp, message in messages:
                    offset = message.offset
                    read = get_read_offset(tp)
                    if read is not None and offset < read:
                        continue  # Faust drops these too (seen before a seek)
                    if read and offset - read > 1 and acks_enabled_for(message.topic):
                        await consumer._add_gap(tp, read + 1, offset)  # so the commit can pass the gap
                    if commit_every is not None and consumer._n_acked >= commit_every:
                        consumer._n_acked = 0
                        await consumer.commit()
                    if tp.topic == topic:
                        if not batch:
                            since = monotonic()
                        batch.append(message)
                    else:
                        await consumer.wait_first(callback(message), consumer.suspend_flow.wait())
                    set_read_offset(tp, offset)
                if batch and (len(batch) >= size or monotonic() - since >= linger_s):
                    # (messages of partitions revoked meanwhile are left out by ``handle``, unacked)
                    batch, ready = [], batch
                    await handle(ready)
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

    return drain_messages
