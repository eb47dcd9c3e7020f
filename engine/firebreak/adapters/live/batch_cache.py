"""Stage 1's batches kept decoded in memory for the shards of the same worker.

Since routed format 3 the routed topic carries no events: stage 1 decodes a batch once
(`NativeRouter.route_batch`), keeps it here, and sends each shard a reference — the input
partition, the batch's first and last offset of it, how many of its events the shard must
see, and the batch's key. A shard of the same process takes the events from the kept batch
(`Core.feed_batch`); any other (another worker, or this one after a restart) reads the
offsets from the input topic and routes them again (`ranges.py`) — the same events, so the
same decisions. Every event is decoded once per worker instead of once per shard, and the
routed topic no longer copies each event to every shard (docs/live.md, "The batch path").

A batch stays until every local shard it names has taken its reference, or that shard is
revoked; stage 1 stops fetching input while the kept batches pass the budget
(backpressure), so the shards' lag, not the cache, bounds the memory.
"""

from __future__ import annotations

import uuid
import weakref
from collections import OrderedDict
from collections.abc import Mapping
from typing import Any

BUDGET_BYTES = 16 * 1024 * 1024  # kept batches past this: stage 1 stops fetching until the shards catch up

_caches: weakref.WeakValueDictionary[str, BatchCache] = weakref.WeakValueDictionary()  # this process's caches


class BatchCache:
    def __init__(self, budget_bytes: int = BUDGET_BYTES) -> None:
        self.id = uuid.uuid4().hex[:16]  # a key names its cache: another process (or a restart) has not got it
        self.budget = budget_bytes
        self.seq = 0
        self.kept: OrderedDict[int, tuple[Any, int, dict[int, int]]] = OrderedDict()  # seq → (batch, size, refs/shard)
        self.bytes = 0
        _caches[self.id] = self

    def add(self, batch: Any, refs: Mapping[int, int]) -> str:
        """Keep ``batch`` until the local shards have taken ``refs`` ({shard: references});
        returns its key."""
        self.seq += 1
        pending = {shard: n for shard, n in refs.items() if n > 0}
        if pending:
            size = batch.size()
            self.kept[self.seq] = (batch, size, pending)
            self.bytes += size
        return f"{self.id}:{self.seq}"

    def take(self, seq: int, shard: int) -> Any | None:
        """The batch for one reference of ``shard`` (None: not kept, or no longer)."""
        entry = self.kept.get(seq)
        if entry is None:
            return None
        batch, size, pending = entry
        left = pending.get(shard, 0) - 1
        if left > 0:
            pending[shard] = left
        else:
            pending.pop(shard, None)
            if not pending:
                del self.kept[seq]
                self.bytes -= size
        return batch

    def forget(self, shard: int) -> None:
        """``shard`` is no longer this worker's: its references are read from the input by its next owner."""
        for seq in list(self.kept):
            batch, size, pending = self.kept[seq]
            pending.pop(shard, None)
            if not pending:
                del self.kept[seq]
                self.bytes -= size

    def full(self) -> bool:
        return self.bytes > self.budget

    def __len__(self) -> int:
        return len(self.kept)


def take(key: str, shard: int) -> Any | None:
    """The kept batch a reference names, when it was kept in this process (else None)."""
    cache_id, _, seq = key.partition(":")
    cache = _caches.get(cache_id)
    if cache is None or not seq.isdigit():
        return None
    return cache.take(int(seq), shard)
