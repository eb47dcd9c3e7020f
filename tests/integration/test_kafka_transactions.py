"""The broker supports exactly-once producers (transaction.state.log.min.isr=1 on one node)."""

from __future__ import annotations

import asyncio

import orjson
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

pytestmark = pytest.mark.kafka


async def test_read_committed_sees_committed_transactions_only(kafka_bootstrap, create_topic, unique_topic):
    topic = await create_topic(unique_topic("commands"), partitions=2)

    producer = AIOKafkaProducer(
        bootstrap_servers=kafka_bootstrap,
        transactional_id=unique_topic("txn"),
        value_serializer=orjson.dumps,
    )
    await producer.start()
    try:
        async with producer.transaction():
            for i in range(100):
                await producer.send(topic, value={"id": i, "committed": True})
        await producer.begin_transaction()
        for i in range(100, 150):
            await producer.send(topic, value={"id": i, "committed": False})
        await producer.abort_transaction()
        async with producer.transaction():
            await producer.send(topic, value={"id": 150, "committed": True})
    finally:
        await producer.stop()

    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=kafka_bootstrap,
        group_id=None,
        auto_offset_reset="earliest",
        isolation_level="read_committed",
        value_deserializer=orjson.loads,
    )
    await consumer.start()
    seen: list[dict] = []
    try:
        async with asyncio.timeout(30):
            while len(seen) < 101:
                for records in (await consumer.getmany(timeout_ms=500)).values():
                    seen.extend(record.value for record in records)
        for records in (await consumer.getmany(timeout_ms=500)).values():
            seen.extend(record.value for record in records)
    finally:
        await consumer.stop()

    assert sorted(event["id"] for event in seen) == [*range(100), 150]
    assert all(event["committed"] for event in seen)
