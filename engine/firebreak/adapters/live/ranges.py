"""Input offsets read again for a routed reference whose batch this worker does not keep.

A shard takes a reference's events from the batch stage 1 kept (batch_cache.py) when stage 1
ran in this process; otherwise — stage 1 of that input partition is another worker's, or this
worker restarted since — it reads the reference's offsets from the input topic here, with a
consumer of its own outside the group (it commits nothing and moves no group offset), at the
isolation level of the group's consumer, so it reads the records stage 1 read. Successive
references of one partition usually follow each other: the records read past a range are
kept for the next one, and a range read for one shard serves the others of this worker.
"""

from __future__ import annotations

import asyncio
import logging
from collections import OrderedDict

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import OffsetOutOfRangeError

from firebreak.adapters.live.settings import WorkerSettings

log = logging.getLogger("firebreak.worker")

Records = list[tuple[int, int, bytes | None]]  # (partition, offset, value), as stage 1 routes them
RECENT = 64  # ranges kept for the other shards of this worker


class RangeReader:
    def __init__(self, settings: WorkerSettings, isolation_level: str = "read_uncommitted") -> None:
        self.settings = settings
        self.isolation_level = isolation_level
        self.consumer: AIOKafkaConsumer | None = None
        self.lock = asyncio.Lock()
        self.ahead: dict[int, Records] = {}  # per partition: records read past the last range
        self.recent: OrderedDict[tuple[int, int, int], Records] = OrderedDict()
        self.stats = {"ranges": 0, "records": 0, "reused": 0, "lost": 0}

    async def _consumer(self) -> AIOKafkaConsumer:
        if self.consumer is None:
            consumer = AIOKafkaConsumer(**self.settings.client_options(), group_id=None, enable_auto_commit=False,
                                        auto_offset_reset="none", isolation_level=self.isolation_level,
                                        max_partition_fetch_bytes=4 * 1024 * 1024)  # fmt: skip
            await consumer.start()
            self.consumer = consumer
        return self.consumer

    async def read(self, partition: int, first: int, last: int) -> Records:
        """The input records of ``partition`` from ``first`` to ``last`` (offsets, inclusive)."""
        key = (partition, first, last)
        async with self.lock:
            if key in self.recent:
                self.stats["reused"] += 1
                self.recent.move_to_end(key)
                return self.recent[key]
            records = await self._read(partition, first, last)
            self.recent[key] = records
            if len(self.recent) > RECENT:
                self.recent.popitem(last=False)
            self.stats["ranges"] += 1
            self.stats["records"] += len(records)
            return records

    async def _read(self, partition: int, first: int, last: int) -> Records:
        out: Records = []
        ahead = self.ahead.pop(partition, [])
        if ahead and ahead[0][1] <= first <= ahead[-1][1] + 1:
            out = [r for r in ahead if first <= r[1] <= last]
            if ahead[-1][1] >= last:
                self.ahead[partition] = [r for r in ahead if r[1] > last]
                return out
            start = ahead[-1][1] + 1
        else:
            start = first
        consumer = await self._consumer()
        tp = TopicPartition(self.settings.input_topic, partition)
        if tp not in consumer.assignment():
            consumer.assign([*consumer.assignment(), tp])
        consumer.seek(tp, start)
        deadline = asyncio.get_running_loop().time() + self.settings.commit_timeout_ms / 1000
        while True:
            try:
                batch = await consumer.getmany(tp, timeout_ms=500, max_records=5_000)
            except OffsetOutOfRangeError:
                # The input's retention removed offsets a shard had not read yet: say so, go on from
                # the oldest offset left (those events are lost to the shard; nothing else is).
                await consumer.seek_to_beginning(tp)
                begin = await consumer.position(tp)
                lost = max(0, min(begin, last + 1) - start)
                self.stats["lost"] += lost
                log.error("input partition %d: offsets %d-%d are no longer on the broker (retention); %d events "
                          "a shard had not read yet are lost to it", partition, start, begin - 1, lost,
                          extra={"fields": {"event": "input_lost", "partition": partition, "first": start,
                                            "next": begin}})  # fmt: skip
                if begin > last:
                    return out
                continue
            records = batch.get(tp, [])
            for record in records:
                if record.offset < start:
                    continue
                if record.offset <= last:
                    out.append((partition, record.offset, record.value))
                else:
                    self.ahead.setdefault(partition, []).append((partition, record.offset, record.value))
            if records and records[-1].offset >= last:
                return out
            if not records and await self._past(consumer, tp, last):
                return out  # the rest of the range is transaction markers or removed records
            if asyncio.get_running_loop().time() > deadline:
                raise TimeoutError(f"input partition {partition}: offsets {start}-{last} not read within "
                                   f"{self.settings.commit_timeout_ms / 1000:g} s")  # fmt: skip

    @staticmethod
    async def _past(consumer: AIOKafkaConsumer, tp: TopicPartition, last: int) -> bool:
        return await consumer.position(tp) > last

    async def stop(self) -> None:
        if self.consumer is not None:
            await self.consumer.stop()
            self.consumer = None
