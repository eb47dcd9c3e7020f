"""Sharded evaluation (the worker's scale-out design) gives the records of one engine.

The Python core's own sharding API (`Engine.add` with ``owns``, core/sharding.py), on the
Python core in every pass: the native engine's shards run the same design through the
worker's `ShardState` (tests/unit/live/test_live_stages.py, test_live_time.py), on the engine
under test."""

from __future__ import annotations

import zlib

import orjson
import pytest
from firebreak.core import Engine
from firebreak.core.sharding import Router, owner, shard_of
from test_core_properties import BASE, BASE_RECORDS, RULES


@pytest.mark.parametrize(("partitions", "shards", "tick"), [(1, 1, 1), (4, 2, 1), (4, 4, 97), (3, 5, 400)])
def test_sharded_engines_with_min_watermark_equal_one_engine(partitions, shards, tick):
    """Input keyed by user over `partitions`; events forwarded to the shards owning their
    (rule, group) pairs; each shard's watermark is the min over input partitions."""
    router = Router(RULES, shards)
    engines = [Engine(RULES, owns=owner(s, shards)) for s in range(shards)]
    seen_max = [[None] * partitions for _ in range(shards)]  # per shard, per input partition
    records = []

    def heartbeat(partition, ts):
        for s in range(shards):
            seen_max[s][partition] = max(seen_max[s][partition] or ts, ts)

    def advance():
        for s, engine in enumerate(engines):
            if None not in seen_max[s]:
                records.extend(engine.advance(min(seen_max[s]) - engine.lateness_ms))

    for n, event in enumerate(BASE, start=1):
        partition = zlib.crc32(event.data["user"].encode()) % partitions
        for s in router.pairs_by_shard(event.data):
            assert engines[s].add(event)
        heartbeat(partition, event.ts)
        if n % tick == 0:
            advance()
    advance()
    last = max(e.ts for e in BASE)
    for engine in engines:
        records.extend(engine.finish(last))
    # Merged, the shards' records are exactly the single engine's records.
    assert sorted(map(orjson.dumps, records)) == sorted(map(orjson.dumps, BASE_RECORDS))


def test_every_pair_has_exactly_one_shard():
    for key in [(), ("a",), (None,), (1, "x"), (True,)]:
        owners = [s for s in range(4) if owner(s, 4)("rule", key)]
        assert owners == [shard_of("rule", key, 4)]
