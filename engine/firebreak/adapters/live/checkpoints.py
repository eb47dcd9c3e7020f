"""Crash-safe shard state: records and checkpoints in Kafka transactions.

A shard's checkpoint partition (compacted, partition = shard) holds two keys:

- ``full``: the whole `ShardState` snapshot, with its position in the routed
  partition and the number of records derived so far; written every
  `full_checkpoint_interval_ms`, on rule reloads and on a clean stop;
- ``head``: just the position and the count of records derived, written in the
  same transaction as every batch of records.

In the read_committed view a record is visible if and only if the head that
counts it is. After a crash the shard restores the last full snapshot and
re-reads the routed partition from the snapshot's position: the engine is
deterministic, so it derives the same records in the same order, and the
first (head − full) of them — committed before the crash — are not sent again.
Every record appears exactly once. Routed messages are acked to Faust only up to
the last full snapshot, so Faust's committed offset never passes it.
"""

from __future__ import annotations

import logging
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition, codec
from aiokafka.errors import IllegalOperation

from firebreak.adapters.live.settings import WorkerSettings
from firebreak.records import Stream, record_key, stream_of

log = logging.getLogger(__name__)

MAX_CHECKPOINT_BYTES = 64 * 1024 * 1024
FULL, HEAD = b"full", b"head"  # the two keys of a shard's checkpoint partition


async def load_checkpoint(settings: WorkerSettings, shard: int) -> tuple[dict | None, dict | None]:
    """The last committed (full, head) checkpoints of a shard; (None, None) for a new shard."""
    tp = TopicPartition(settings.checkpoint_topic, shard)
    consumer = AIOKafkaConsumer(
        **settings.client_options(),
        isolation_level="read_committed",
        enable_auto_commit=False,
        fetch_max_bytes=MAX_CHECKPOINT_BYTES,
        max_partition_fetch_bytes=MAX_CHECKPOINT_BYTES,
    )
    try:
        await consumer.start()
        consumer.assign([tp])
        end = (await consumer.end_offsets([tp]))[tp]
        latest: dict[bytes, bytes] = {}
        if end:
            consumer.seek(tp, 0)
            while await consumer.position(tp) < end:
                # Short waits: records the read_committed view skips (the permission check's aborted
                # test transaction on partition 0, say) return nothing, only move the position on —
                # a 1 s wait there held shard 0's opening up by a second at every worker start.
                batch = await consumer.getmany(tp, timeout_ms=50, max_records=500)
                for message in batch.get(tp, []):
                    latest[message.key] = message.value
        full, head = latest.get(FULL), latest.get(HEAD)
        return (orjson.loads(full) if full else None), (orjson.loads(head) if head else None)
    finally:
        await consumer.stop()


class ShardWriter:
    """The transactional producer of one shard. Its transactional id is per shard, so a
    shard that moves to another worker fences the old owner's producer."""

    def __init__(self, settings: WorkerSettings, shard: int) -> None:
        self.settings = settings
        self.shard = shard
        self.producer = AIOKafkaProducer(
            **settings.client_options(),
            transactional_id=f"{settings.app_id}.shard.{shard}",
            enable_idempotence=True,
            # zstd: about as small as gzip here and far cheaper on the event loop (measured in
            # benchmarks/README.md, "Full checkpoints"); readers need nothing new
            # (the consumer decompresses either), gzip where zstd's codec (cramjam) is missing
            compression_type="zstd" if codec.has_zstd() else "gzip",
            max_request_size=MAX_CHECKPOINT_BYTES,
            linger_ms=0,
        )

    async def start(self) -> None:
        await self.producer.start()

    async def stop(self) -> None:
        await self.producer.stop()

    def transaction_error(self) -> BaseException | None:
        """The error that ended the current transaction, when aiokafka has one (it can hold it
        in its transaction manager and leave the commit waiting)."""
        waiter = getattr(getattr(self.producer, "_txn_manager", None), "_transaction_waiter", None)
        if waiter is not None and waiter.done() and not waiter.cancelled():
            return waiter.exception()
        return None

    async def commit(self, records: list[dict[str, Any]], checkpoint: dict[str, Any]) -> None:
        """Records and a checkpoint (``kind`` "head" or "full") in one transaction."""
        settings = self.settings
        async with self.producer.transaction():
            try:
                for record in records:
                    incident = stream_of(record) is Stream.INCIDENTS
                    topic = settings.incidents_topic if incident else settings.containment_topic
                    await self.producer.send(topic, orjson.dumps(record), key=record_key(record))
                key = FULL if checkpoint["kind"] == "full" else HEAD
                await self.producer.send(
                    settings.checkpoint_topic, orjson.dumps(checkpoint), key=key, partition=self.shard
                )
            except IllegalOperation as error:
                # The transaction failed under us (e.g. a topic refused): raise why, which the
                # abort on leaving this block would forget.
                cause = self.transaction_error()
                if cause is not None:
                    raise cause from error
                raise
