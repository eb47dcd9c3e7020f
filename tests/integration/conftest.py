"""Helpers for tests against the real Kafka broker (see tests/conftest.py)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import pytest
from aiokafka.admin import AIOKafkaAdminClient, NewTopic


@pytest.fixture
def create_topic(kafka_bootstrap: str) -> Callable[..., Awaitable[str]]:
    """`await create_topic(name, partitions=1)` creates the topic (replication 1) and returns its name."""

    async def create(name: str, partitions: int = 1) -> str:
        admin = AIOKafkaAdminClient(bootstrap_servers=kafka_bootstrap, request_timeout_ms=15_000)
        await admin.start()
        try:
            resp = await admin.create_topics([NewTopic(name, num_partitions=partitions, replication_factor=1)])
            for topic, code, *rest in resp.topic_errors:
                assert code == 0, f"creating topic {topic} failed: error {code} {rest}"
            # Wait until the broker serves metadata for every partition.
            for _ in range(100):
                described = await admin.describe_topics([name])
                if described and described[0]["error_code"] == 0 and len(described[0]["partitions"]) == partitions:
                    return name
                await asyncio.sleep(0.05)
            raise AssertionError(f"topic {name} never showed {partitions} partitions in metadata")
        finally:
            await admin.close()

    return create
