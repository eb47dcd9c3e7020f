"""The event contract: validate a decoded JSON object into an `Event`.

Validation is pure: it takes an already-decoded object (adapters do the JSON)
and returns either an `Event` or the reason the object is not one. Raw text a
service may attach (``prompt``, ``output``) stays in ``Event.data`` for `where`
clauses but is never copied into any record (records build from ids and
aggregates only). Schema: docs/schemas/event.schema.json.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from firebreak.durations import format_duration  # noqa: F401 - re-exported: the one formatter
from firebreak.event_types import EventType

EVENT_TYPES = tuple(EventType)  # heartbeat: time only (docs/live.md)
CHANGE_KINDS = ("model_update", "prompt_change", "config_change", "deploy", "data_pipeline")
STRING_FIELDS = ("service", "feature", "model", "model_version", "prompt_template", "tenant", "user")
NUMBER_FIELDS = ("latency_ms", "tokens_in", "tokens_out", "cost_usd")
# The standard names in `flags` and `scores` (teams add their own: docs/dsl.md#vocabulary).
STANDARD_FLAGS = (
    "hallucination",
    "pii",
    "prompt_injection",
    "jailbreak",
    "error",
    "refusal",
    "toxicity",
    "system_prompt_leak",
    "cross_tenant",
)
STANDARD_SCORES = ("quality", "groundedness", "relevance")
# What an end user can say of an answer (a `report` event's `labels`; teams add their own:
# docs/dsl.md#vocabulary). docs/events.md#user-reports says what each means.
STANDARD_LABELS = ("thumbs_down", "wrong", "harmful", "data_exposure", "offensive", "other")
MAX_LABELS = 16
_LABEL = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,63}")
MAX_TS_MS = 253_402_300_799_999  # 9999-12-31T23:59:59.999Z
# A number from 1e9 up to 1e11 is epoch *seconds* of 2001-5138 (as milliseconds: January 1970 to
# March 1973, a time no live producer sends): refused, not taken as milliseconds.
EPOCH_SECONDS = (1_000_000_000, 100_000_000_000)
# Fields with a domain (docs/schemas/event.schema.json): a value outside it is refused with the event.
NUMBER_RANGES = {
    "latency_ms": (0, 86_400_000),  # up to one day
    "tokens_in": (0, 1_000_000_000),
    "tokens_out": (0, 1_000_000_000),
    "cost_usd": (0, 1_000_000),
}
MAX_SCORE = 1e9  # every score (`scores.*`) is finite, within -1e9..1e9
MAX_DEPTH = 64  # objects and arrays nested deeper than this: the event is refused
# RFC 3339 (section 5.6) and nothing else: `T`, `t` or a space (its note 5.6), `Z` or `z`, any
# fraction of a second; a zone is required.
_RFC3339 = re.compile(
    r"(\d{4})-(\d{2})-(\d{2})[Tt ](\d{2}):(\d{2}):(\d{2})(?:\.(\d+))?(?:[Zz]|([+-])(\d{2}):(\d{2}))", re.ASCII
)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_ONE_MS = timedelta(milliseconds=1)


@dataclass(frozen=True, slots=True)
class Event:
    event_id: str
    ts: int  # epoch milliseconds, UTC
    type: EventType  # inference | change | heartbeat | report (a str from code that builds events)
    data: dict[str, Any]


class InvalidEvent(ValueError):
    """The object is not an event; the message says why, for a dead-letter record."""


def parse_ts(value: Any) -> int:
    """RFC 3339 with a zone, or epoch milliseconds → epoch milliseconds."""
    if isinstance(value, bool):
        raise InvalidEvent("`ts` must be an RFC 3339 time or epoch milliseconds, not a boolean")
    if isinstance(value, int | float):
        if value != value or value < 0:
            raise InvalidEvent(f"`ts` {value!r} is out of range for epoch milliseconds")
        if value > MAX_TS_MS:
            raise InvalidEvent(
                f"`ts` {value!r} is after year 9999 as epoch milliseconds (microseconds or "
                "nanoseconds?); send epoch milliseconds or an RFC 3339 time"
            )
        if EPOCH_SECONDS[0] <= value < EPOCH_SECONDS[1]:
            raise InvalidEvent(
                f"`ts` {value!r} looks like epoch seconds (as milliseconds it is 1970-1973); "
                "send epoch milliseconds or an RFC 3339 time"
            )
        return int(value)
    if isinstance(value, str):
        return _rfc3339_ms(value)
    raise InvalidEvent("`ts` is missing" if value is None else "`ts` must be a string or a number")


def _rfc3339_ms(value: str) -> int:
    shown = value[:40]
    match = _RFC3339.fullmatch(value)
    if match is None:
        if _RFC3339.fullmatch(value + "Z") is not None:
            raise InvalidEvent(f"`ts` {shown!r} has no zone; add Z or an offset")
        raise InvalidEvent(f"`ts` {shown!r} is not an RFC 3339 time")
    year, month, day, hour, minute, second, fraction, sign, off_h, off_m = match.groups()
    try:
        moment = datetime(int(year), int(month), int(day), int(hour), int(minute), int(second), tzinfo=UTC)
    except ValueError:
        raise InvalidEvent(f"`ts` {shown!r} is not an RFC 3339 time (no such date or time)") from None
    offset = 0
    if sign is not None:
        if int(off_h) > 23 or int(off_m) > 59:
            raise InvalidEvent(f"`ts` {shown!r} has an offset out of range")
        offset = (int(off_h) * 60 + int(off_m)) * (1 if sign == "+" else -1)
    ms = (moment - _EPOCH) // _ONE_MS - offset * 60_000 + (int((fraction + "00")[:3]) if fraction else 0)
    if ms < 0:
        raise InvalidEvent(f"`ts` {shown!r} is before 1970")
    if ms > MAX_TS_MS:
        raise InvalidEvent(f"`ts` {shown!r} is after 9999")
    return ms


_CYCLE_MS = 146_097 * 86_400_000  # 400 Gregorian years: the calendar repeats


def format_ts(ms: int) -> str:
    """Epoch milliseconds → RFC 3339 UTC (``2026-11-27T10:00:00Z``, ``...:00.250Z``). A step
    boundary after the last event time allowed (9999-12-31T23:59:59.999Z) is written with its
    five-digit year (the calendar of 400 years before, plus 400)."""
    if ms > MAX_TS_MS:
        cycles = (ms - MAX_TS_MS - 1) // _CYCLE_MS + 1
        text = format_ts(ms - cycles * _CYCLE_MS)
        return f"{int(text[:4]) + 400 * cycles}{text[4:]}"
    moment = datetime.fromtimestamp(ms / 1000, tz=UTC)
    text = moment.strftime("%Y-%m-%dT%H:%M:%S")
    millis = ms % 1000
    return f"{text}.{millis:03d}Z" if millis else f"{text}Z"


def validate_event(obj: Any) -> Event:
    if not isinstance(obj, dict):
        raise InvalidEvent(f"an event is a JSON object, not {type(obj).__name__}")
    event_id = obj.get("event_id")
    if not isinstance(event_id, str) or not event_id:
        raise InvalidEvent("`event_id` is missing" if event_id is None else "`event_id` must be a non-empty string")
    ts = parse_ts(obj.get("ts"))
    written = obj.get("type", EventType.INFERENCE)
    try:
        kind = EventType(written)
    except ValueError:
        raise InvalidEvent(f"`type` {str(written)[:40]!r} is not one of {', '.join(EVENT_TYPES)}") from None
    for name in STRING_FIELDS:
        value = obj.get(name)
        if value is not None and not isinstance(value, str):
            raise InvalidEvent(f"`{name}` must be a string")
    for name in NUMBER_FIELDS:
        value = obj.get(name)
        if value is not None:
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise InvalidEvent(f"`{name}` must be a number")
            low, high = NUMBER_RANGES[name]
            if not low <= value <= high:
                raise InvalidEvent(f"`{name}` {value!r} is out of range ({low} to {high})")
    flags = obj.get("flags")
    if flags is not None:
        if not isinstance(flags, dict) or not all(isinstance(v, bool) for v in flags.values()):
            raise InvalidEvent("`flags` must be an object of booleans")
    scores = obj.get("scores")
    if scores is not None:
        if not isinstance(scores, dict) or not all(
            isinstance(v, int | float) and not isinstance(v, bool) for v in scores.values()
        ):
            raise InvalidEvent("`scores` must be an object of numbers")
        for name, value in scores.items():
            if not -MAX_SCORE <= value <= MAX_SCORE:
                raise InvalidEvent(f"score `{str(name)[:40]}` {value!r} is out of range (-1e9 to 1e9)")
    if _too_deep(obj, MAX_DEPTH):
        raise InvalidEvent(f"the event nests objects or arrays more than {MAX_DEPTH} deep")
    if kind is EventType.CHANGE:
        change_kind = obj.get("kind")
        if change_kind not in CHANGE_KINDS:
            raise InvalidEvent(f"a change event needs `kind`, one of {', '.join(CHANGE_KINDS)}")
    elif kind is EventType.REPORT:
        _check_report(obj)
    return Event(event_id, ts, kind, obj)


def _too_deep(value: Any, room: int) -> bool:
    """Whether ``value`` nests containers more than ``room`` deep (the event object is depth 1)."""
    if room <= 0:
        return True
    items = value.values() if isinstance(value, dict) else value
    for item in items:
        if (item.__class__ is dict or item.__class__ is list) and _too_deep(item, room - 1):
            return True
    return False


def _check_report(obj: dict[str, Any]) -> None:
    """A user report: one or more labels, optionally the inference event it is about (`ref`)."""
    labels = obj.get("labels")
    if not isinstance(labels, list) or not labels:
        raise InvalidEvent('a report event needs `labels`, a list of one or more labels such as ["wrong"]')
    if len(labels) > MAX_LABELS:
        raise InvalidEvent(f"a report has at most {MAX_LABELS} labels, not {len(labels)}")
    for label in labels:
        if not isinstance(label, str) or not _LABEL.fullmatch(label):
            shown = str(label)[:40]
            raise InvalidEvent(f"report label {shown!r} is not a name: letters, digits and `_`, up to 64")
    ref = obj.get("ref")
    if ref is not None and (not isinstance(ref, str) or not ref):
        raise InvalidEvent("`ref` (the event the report is about) must be a non-empty string")
