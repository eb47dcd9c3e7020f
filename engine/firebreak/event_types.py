"""The types of input event (an event's ``type``): a leaf module, so that the rules language,
the core and the adapters can all say which events they mean without importing each other.

A StrEnum: a member equals its wire string (``EventType.REPORT == "report"``), so it compares
with a decoded event's ``type`` directly; docs/schemas/event.schema.json is the contract.
"""

from __future__ import annotations

from enum import StrEnum


class EventType(StrEnum):
    INFERENCE = "inference"  # one answer of an AI system: what rules measure
    CHANGE = "change"  # a model update, prompt or config change, deploy: what investigations rank as causes
    HEARTBEAT = "heartbeat"  # time only: moves a quiet partition's clock (docs/live.md)
    REPORT = "report"  # an end user's report on an answer: counted by reports(LABEL)


DEFAULT = EventType.INFERENCE  # an event without ``type``
COUNTED = frozenset({EventType.INFERENCE, EventType.REPORT})  # what rules count (each rule one: its source)
