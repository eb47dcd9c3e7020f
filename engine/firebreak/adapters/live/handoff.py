"""The local hand-off (docs/live.md, "The local hand-off"): a routed message this worker's stage 1
produced for a shard open here is handed to that shard in process once the broker has
acknowledged it at its offset (`LocalHandoff.sent`), as `Handed` — the same bytes the routed
partition holds at that offset. A shard takes every offset of its routed partition once, in
order, whichever path brings it: a handed message joins the shard's queue only when its offset is
the very next one the shard will reach (`Shard.expect`), else it is dropped and the fetched copy
is taken as before; a fetched message the shard has taken or queued already is skipped before
Faust's agent (`skip_fetched`, called by batches.py) and acked once a full checkpoint covers it
(committer.py).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from firebreak.adapters.live.shard_host import Shard, ShardHost


@dataclass(frozen=True, slots=True)
class Handed:
    """A routed message handed to its shard in process (the local hand-off): the broker
    acknowledged ``value`` at ``offset`` of the shard's routed partition."""

    offset: int
    value: bytes


class LocalHandoff:
    """The shard host's (shard_host.py) local hand-off."""

    def __init__(self, host: ShardHost) -> None:
        self.host = host
        # acks fetched routed offsets of a shard without a Faust message (the app: batches.ack_offsets)
        self.ack_offsets: Callable[[int, list[int]], None] | None = None

    def sent(self, number: int, delivery: asyncio.Future, value: bytes) -> None:
        """Stage 1 produced ``value`` to routed partition ``number`` (``delivery``: the producer's
        future, its result the record's metadata). When that shard is open here, it is handed
        the message once the broker has acknowledged it (`_delivered`); a message not written —
        the send failed, the worker stops before the acknowledgement — is never handed."""
        shard = self.host.shards.get(number)
        if shard is None or not self.host._ours(number):
            return  # opening, or another worker's: it fetches the message

        def delivered(future: asyncio.Future) -> None:
            self._delivered(shard, future, value)

        delivery.add_done_callback(delivered)

    def _delivered(self, shard: Shard, delivery: asyncio.Future, value: bytes) -> None:
        """The broker acknowledged a routed message for ``shard`` at an offset: it joins the
        shard's queue when that offset is the next one the shard reaches (`Shard.expect`) —
        so each offset is taken once, in order, with the bytes the routed partition holds there;
        else (out of order, queue full, the shard gone) the fetched copy is taken instead."""
        number = shard.state.shard
        if delivery.cancelled() or delivery.exception() is not None:
            self.host.metrics.local["unsent"] += 1  # not written: nothing to hand (Faust's send reports it)
            return
        offset = delivery.result().offset
        if self.host.shards.get(number) is not shard or not self.host._ours(number) or self.host.stopping:
            return
        if offset != shard.expect or shard.queue.full():
            self.host.metrics.local["fetched"] += 1  # the shard takes the fetched copy
            return
        if shard.task is None:
            shard.task = asyncio.ensure_future(self.host._shard_loop(shard))
        shard.queue.put_nowait((None, Handed(offset, value)))
        shard.expect = offset + 1

    def skip_fetched(self, tp: Any, offset: int) -> bool:
        """A routed message just fetched (batches.py, before Faust's agent): True when its shard
        has taken it already or queued it (handed in process) — it is then not handed to Faust,
        and is acked once a full checkpoint covers it (committer.py)."""
        if tp.topic != self.host.settings.routed_topic:
            return False
        shard = self.host.shards.get(tp.partition)
        if shard is None or self.ack_offsets is None or offset >= shard.expect or not self.host._ours(tp.partition):
            return False
        if shard.ack_fetched is None:
            shard.ack_fetched = partial(self.ack_offsets, tp.partition)
        self.host.metrics.local["skipped"] += 1
        if offset < shard.full_next:  # covered by its last full checkpoint (a re-delivery)
            shard.ack_fetched([offset])
        else:  # acked once a full checkpoint covers it (Faust's committed offset never passes one)
            shard.unacked.append((None, offset))
        return True

    async def take(self, shard: Shard, handed: Handed) -> None:
        """A routed message handed in process: queued at the offset the shard reaches now, so
        taken exactly as its fetched copy would be; the fetched copy is acked instead of it."""
        async with shard.lock:
            started = time.perf_counter()
            if not await shard.state.accept_offloaded(handed.offset, handed.value, self.host._offload):
                return  # (cannot happen: queued only at the shard's next offset)
            self.host.metrics.local["taken"] += 1
            await self.host._taken(shard, started)
