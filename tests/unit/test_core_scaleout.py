"""Per-partition pre-aggregation + merged evaluation gives the records of one engine."""

from __future__ import annotations

import zlib

import orjson
import pytest
from test_core_properties import BASE, BASE_RECORDS, RULES

from engine.core import Engine
from engine.core.aggregator import Aggregator


def dump(records) -> bytes:
    return b"\n".join(orjson.dumps(r) for r in records)


def partition_of(event, partitions: int) -> int:
    return zlib.crc32(event.data["user"].encode()) % partitions


@pytest.mark.parametrize(("partitions", "close_every"), [(1, 1), (4, 1), (4, 97), (3, 500)])
def test_partitioned_pre_aggregation_equals_a_single_engine(partitions, close_every):
    aggregators = [Aggregator(RULES) for _ in range(partitions)]
    engine = Engine(RULES)
    records = []

    def flush():
        for aggregator in aggregators:
            for index, key, start, bucket in aggregator.close():
                engine.merge_partial(index, key, start, bucket)
        marks = [a.watermark for a in aggregators]
        if all(m is not None for m in marks):
            engine.note_stream_start(min(a.min_ts for a in aggregators))
            records.extend(engine.advance(min(marks)))

    for n, event in enumerate(BASE, start=1):
        aggregators[partition_of(event, partitions)].process(event)
        if n % close_every == 0:
            flush()
    flush()
    for aggregator in aggregators:
        for index, key, start, bucket in aggregator.close_all():
            engine.merge_partial(index, key, start, bucket)
    records.extend(engine.finish(max(a.max_ts for a in aggregators)))
    assert dump(records) == dump(BASE_RECORDS)


def test_a_partial_for_an_evaluated_step_is_refused_and_counted():
    aggregator = Aggregator(RULES)
    for event in BASE[:200]:
        aggregator.process(event)
    partials = aggregator.close_all()
    engine = Engine(RULES)
    engine.advance(BASE[199].ts)
    assert not engine.merge_partial(*partials[0])
    assert engine.stats["late_partials"] == 1
