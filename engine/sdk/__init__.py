"""Client SDKs for services around Firebreak.

- `Publisher` / `AsyncPublisher` — publish inference, change and user-report events (engine.sdk.publisher;
  `user_report` builds a report);
- `ContainmentListener` — apply and revert containment commands (engine.sdk.containment).

See docs/sdk.md.
"""

from engine.core.events import InvalidEvent
from engine.sdk._kafka import DEFAULT_COMMANDS_TOPIC, DEFAULT_EVENTS_TOPIC
from engine.sdk.containment import ContainmentError, ContainmentListener, ContainmentState, Decision, Handler
from engine.sdk.publisher import AsyncPublisher, Delivery, Publisher, PublishError, user_report

__all__ = [
    "DEFAULT_COMMANDS_TOPIC",
    "DEFAULT_EVENTS_TOPIC",
    "AsyncPublisher",
    "ContainmentError",
    "ContainmentListener",
    "ContainmentState",
    "Decision",
    "Delivery",
    "Handler",
    "InvalidEvent",
    "PublishError",
    "Publisher",
    "user_report",
]
