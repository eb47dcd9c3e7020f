"""Client SDKs for services around Firebreak.

- `Publisher` / `AsyncPublisher` — publish inference, change and user-report events (firebreak.sdk.publisher;
  `user_report` builds a report);
- `ContainmentListener` — apply and revert containment commands (firebreak.sdk.containment).

See docs/sdk.md.
"""

from firebreak.core.events import InvalidEvent
from firebreak.sdk._kafka import DEFAULT_COMMANDS_TOPIC, DEFAULT_EVENTS_TOPIC
from firebreak.sdk.containment import ContainmentError, ContainmentListener, ContainmentState, Decision, Handler
from firebreak.sdk.publisher import AsyncPublisher, Delivery, Publisher, PublishError, user_report

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
