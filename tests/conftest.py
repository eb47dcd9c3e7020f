"""Fixtures shared by every test suite.

Tests that need Kafka talk to a real broker, never a mock: `kafka_bootstrap`
finds it (KAFKA_BOOTSTRAP, default 127.0.0.1:9092, as started by
`scripts/kafka-local start` or `scripts/test`). If nothing answers there, those
tests fail with a one-line message -- they never skip and never hang.
"""

from __future__ import annotations

import asyncio
import os
import re
import uuid
from collections.abc import Callable

import pytest

DEFAULT_BOOTSTRAP = "127.0.0.1:9092"
PROBE_TIMEOUT_S = 5.0


def bootstrap_address() -> str:
    return os.environ.get("KAFKA_BOOTSTRAP", "").strip() or DEFAULT_BOOTSTRAP


async def _list_topics(bootstrap: str, timeout_s: float) -> list[str]:
    from aiokafka.admin import AIOKafkaAdminClient

    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=int(timeout_s * 1000))
    try:
        async with asyncio.timeout(timeout_s):
            await admin.start()
            return await admin.list_topics()
    finally:
        try:
            await admin.close()
        except Exception:  # noqa: BLE001 - closing a half-started client must not mask the real error
            pass


def probe_broker(bootstrap: str, timeout_s: float = PROBE_TIMEOUT_S) -> str | None:
    """Return None if a broker at `bootstrap` lists its topics within `timeout_s`, else why not."""
    loop = asyncio.new_event_loop()
    try:
        loop.run_until_complete(_list_topics(bootstrap, timeout_s))
    except TimeoutError:
        return f"no answer within {timeout_s:g}s"
    except Exception as exc:  # noqa: BLE001 - any failure means "no usable broker"
        text, name = str(exc), type(exc).__name__
        if not text.startswith(name):
            text = f"{name}: {text}" if text else name
        return text.splitlines()[0][:200]
    finally:
        loop.close()
    return None


@pytest.fixture(scope="session")
def kafka_bootstrap() -> str:
    """Bootstrap address of a live Kafka broker; fails (never skips) when there is none."""
    bootstrap = bootstrap_address()
    why = probe_broker(bootstrap)
    if why is not None:
        pytest.fail(
            f"no Kafka broker at {bootstrap} — start one with scripts/kafka-local start or set KAFKA_BOOTSTRAP ({why})",
            pytrace=False,
        )
    return bootstrap


@pytest.fixture
def unique_topic(request: pytest.FixtureRequest) -> Callable[[str], str]:
    """Factory of fresh topic names, unique per call: unique_topic("in") -> "fbt-test-x-in-3f9a0c1b2d".

    Only [A-Za-z0-9-] is used: Kafka warns when names mix '.' and '_'.
    """
    base = re.sub(r"[^A-Za-z0-9-]+", "-", request.node.name).strip("-")[:60]

    def make(suffix: str = "t") -> str:
        suffix = re.sub(r"[^A-Za-z0-9-]+", "-", suffix)
        return f"fbt-{base}-{suffix}-{uuid.uuid4().hex[:10]}"

    return make


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    # Anything that uses the broker is a kafka test, marked or not, so that
    # `-m "not kafka"` (scripts/test --no-kafka) reliably leaves it out.
    # tryfirst: this must run before pytest deselects by marker.
    for item in items:
        if "kafka_bootstrap" in getattr(item, "fixturenames", ()) and item.get_closest_marker("kafka") is None:
            item.add_marker(pytest.mark.kafka)
