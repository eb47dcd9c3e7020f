"""Publisher pieces that need no broker: keys, encoding, validation before anything is sent."""

from __future__ import annotations

import orjson
import pytest
from firebreak.sdk import AsyncPublisher, InvalidEvent, Publisher, PublishError
from firebreak.sdk.publisher import event_key, prepare

EVENT = {"event_id": "e1", "ts": "2026-11-27T10:00:00Z", "tenant": "acme", "model": "gpt-4o", "latency_ms": 12}


@pytest.mark.parametrize(
    ("event", "key_field", "key"),
    [
        (EVENT, "tenant", b"acme"),
        ({**EVENT, "tenant": None}, "tenant", b"e1"),
        ({k: v for k, v in EVENT.items() if k != "tenant"}, "tenant", b"e1"),
        ({**EVENT, "tenant": ""}, "tenant", b"e1"),
        (EVENT, "model", b"gpt-4o"),
        (EVENT, "latency_ms", b"12"),
        (EVENT, None, b"e1"),
    ],
)
def test_keys(event, key_field, key):
    assert event_key(event, key_field) == key


def test_prepare_encodes_the_event_as_json():
    key, value = prepare(EVENT, "tenant")
    assert key == b"acme" and orjson.loads(value) == EVENT


@pytest.mark.parametrize(
    ("event", "reason"),
    [
        ({"ts": 1}, "`event_id` is missing"),
        ({"event_id": "e1"}, "`ts` is missing"),
        ({"event_id": "e1", "ts": "yesterday"}, "is not an RFC 3339 time"),
        ({"event_id": "e1", "ts": 1, "type": "change"}, "a change event needs `kind`"),
        ({"event_id": "e1", "ts": 1, "latency_ms": "fast"}, "`latency_ms` must be a number"),
        ({"event_id": "e1", "ts": 1, "extra": {1, 2}}, "not JSON-serializable"),
        ([1, 2], "an event is a JSON object"),
    ],
)
async def test_invalid_events_raise_before_any_connection(event, reason):
    # Not even started: validation comes first, so nothing can have been sent.
    with pytest.raises(InvalidEvent, match=reason.replace("`", ".").replace("(", r"\(")):
        await AsyncPublisher("127.0.0.1:1").publish(event)
    with pytest.raises(InvalidEvent):
        Publisher("127.0.0.1:1").publish(event)


async def test_publishing_before_start_is_a_clear_error():
    with pytest.raises(PublishError, match="not started"):
        await AsyncPublisher("127.0.0.1:1").publish(EVENT)
    with pytest.raises(PublishError, match="not started"):
        Publisher("127.0.0.1:1").publish(EVENT)


def test_fixed_producer_settings_cannot_be_overridden():
    with pytest.raises(TypeError, match="enable_idempotence"):
        AsyncPublisher("x", enable_idempotence=False)
