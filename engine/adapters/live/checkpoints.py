"""Crash-safe shard state: records and checkpoint in one Kafka transaction.

A shard's records are produced only inside a transaction that also writes the
shard's checkpoint (its `ShardState` snapshot, which holds its position in the
routed partition) to the compacted checkpoint topic, partition = shard. In the
read_committed view, a record is visible if and only if the checkpoint that
accounts for it is. After a crash the shard restarts from its last committed
checkpoint and re-reads the routed partition from the position in it; the
records it re-derives were never committed before, so every record appears
exactly once. The routed messages are acked to Faust only after the checkpoint
that covers them commits, so Faust's committed offset never passes it.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from engine.adapters.live.settings import WorkerSettings

log = logging.getLogger(__name__)

MAX_CHECKPOINT_BYTES = 64 * 1024 * 1024
TAIL = 16  # a checkpoint transaction writes one message and one commit marker


def record_key(record: dict[str, Any]) -> bytes:
    """incident_id for incident records; the target (canonical JSON) for containment."""
    if record["type"].startswith("incident."):
        return record["incident_id"].encode()
    return orjson.dumps(record["target"], option=orjson.OPT_SORT_KEYS)


async def load_checkpoint(settings: WorkerSettings, shard: int) -> dict[str, Any] | None:
    """The last committed checkpoint of a shard, or None for a shard never checkpointed."""
    tp = TopicPartition(settings.checkpoint_topic, shard)
    consumer = AIOKafkaConsumer(
        bootstrap_servers=settings.bootstrap,
        isolation_level="read_committed",
        enable_auto_commit=False,
        fetch_max_bytes=MAX_CHECKPOINT_BYTES,
        max_partition_fetch_bytes=MAX_CHECKPOINT_BYTES,
    )
    await consumer.start()
    try:
        consumer.assign([tp])
        end = (await consumer.end_offsets([tp]))[tp]
        if end == 0:
            return None
        for start in (max(0, end - TAIL), 0):
            consumer.seek(tp, start)
            last = await _read_last(consumer, tp, end)
            if last is not None:
                return orjson.loads(last)
            if start == 0:
                break
        return None
    finally:
        await consumer.stop()


async def _read_last(consumer: AIOKafkaConsumer, tp: TopicPartition, end: int) -> bytes | None:
    last = None
    while await consumer.position(tp) < end:
        batch = await consumer.getmany(tp, timeout_ms=1000, max_records=64)
        for message in batch.get(tp, []):
            last = message.value
        if not batch:
            await asyncio.sleep(0)
    return last


class ShardWriter:
    """The transactional producer of one shard. Its transactional id is per shard, so a
    shard that moves to another worker fences the old owner's producer."""

    def __init__(self, settings: WorkerSettings, shard: int) -> None:
        self.settings = settings
        self.shard = shard
        self.producer = AIOKafkaProducer(
            bootstrap_servers=settings.bootstrap,
            transactional_id=f"{settings.app_id}.shard.{shard}",
            enable_idempotence=True,
            compression_type="gzip",
            max_request_size=MAX_CHECKPOINT_BYTES,
            linger_ms=0,
        )

    async def start(self) -> None:
        await self.producer.start()

    async def stop(self) -> None:
        await self.producer.stop()

    async def commit(self, records: list[dict[str, Any]], checkpoint: dict[str, Any]) -> None:
        settings = self.settings
        async with self.producer.transaction():
            for record in records:
                topic = settings.incidents_topic if record["type"].startswith("incident.") else (
                    settings.containment_topic
                )
                await self.producer.send(topic, orjson.dumps(record), key=record_key(record))
            await self.producer.send(
                settings.checkpoint_topic, orjson.dumps(checkpoint), key=str(self.shard).encode(), partition=self.shard
            )
