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
from typing import Any

log = logging.getLogger("firebreak.worker")

FETCHING = "FETCHING"  # faust.transport.consumer.CONSUMER_FETCHING


def install(app: Any, topic: str, handle: Callable[[list[Any]], Awaitable[None]]) -> None:
    consumer = app.consumer
    consumer._drain_messages = _drain(app, consumer, topic, handle)


def _drain(app: Any, consumer: Any, topic: str, handle: Callable[[list[Any]], Awaitable[None]]):
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
        try:
            while not (consumer_should_stop() or fetcher_should_stop()):
                set_flag(FETCHING)
                messages = getmany(timeout=1.0)
                await consumer.sleep(0)
                if consumer.should_stop:
                    continue
                batch: list[Any] = []
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
                        batch.append(message)
                    else:
                        await consumer.wait_first(callback(message), consumer.suspend_flow.wait())
                    set_read_offset(tp, offset)
                if batch:
                    await handle(batch)
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
