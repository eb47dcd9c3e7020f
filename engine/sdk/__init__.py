"""Client SDKs for services around Firebreak.

- `Publisher` / `AsyncPublisher` — publish inference and change events (engine.sdk.publisher).

See docs/sdk.md.
"""

from engine.core.events import InvalidEvent
from engine.sdk._kafka import DEFAULT_COMMANDS_TOPIC, DEFAULT_EVENTS_TOPIC
from engine.sdk.publisher import AsyncPublisher, Delivery, Publisher, PublishError

__all__ = [
    "DEFAULT_COMMANDS_TOPIC",
    "DEFAULT_EVENTS_TOPIC",
    "AsyncPublisher",
    "Delivery",
    "InvalidEvent",
    "PublishError",
    "Publisher",
]
