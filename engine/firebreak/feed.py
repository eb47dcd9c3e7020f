"""What feeding one batch to an engine gives, and the pieces both engines share to get it.

A `Fed` holds the records in the engine's order and the refused inputs — bad (not an event,
with the reason `validate_event` gives) and late (before the watermark) or ahead (more than the
maximum skew after the latest event time: `Engine.is_ahead`) — by their index in the batch.
`decode_event`/`decoded_lines` turn raw JSON lines into events; `late_text`/`ahead_text` give the
reasons refused events carry. The Python core's `Driver` (adapters/drive.py) and the native
engine (firebreak/native) both use them: they live here so that neither imports the other.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import orjson

from firebreak.core import Event, InvalidEvent, format_ts, validate_event
from firebreak.core.engine import AHEAD_CONFIRM, DEFAULT_MAX_SKEW_MS
from firebreak.durations import format_duration


def decode_event(raw: bytes | None, max_bytes: int | None = None) -> Event:
    """One JSON document → an `Event`; `InvalidEvent` with the reason when it is not one."""
    raw = raw or b""
    if max_bytes is not None and len(raw) > max_bytes:
        raise InvalidEvent(f"event is {len(raw)} bytes; the limit is {max_bytes}")
    try:
        obj = orjson.loads(raw)
    except orjson.JSONDecodeError as error:
        raise InvalidEvent(f"invalid JSON: {error}") from None
    return validate_event(obj)


def decoded_lines(lines: Iterable[bytes], max_bytes: int | None, fed: Fed) -> Iterable[tuple[int, bytes, Event]]:
    """(index, raw, event) for each non-blank line that is an event; the others go to ``fed.bad``
    with their index and reason (blank lines are neither)."""
    for index, raw in enumerate(lines):
        if not raw.strip():
            continue
        try:
            event = decode_event(raw, max_bytes)
        except InvalidEvent as error:
            fed.bad.append((index, str(error)))
            continue
        yield index, raw, event


def late_text(ts: int, watermark: int, lateness_ms: int, max_skew_ms: int | None = DEFAULT_MAX_SKEW_MS) -> str:
    """The reason a late event is refused (dead letters, bad samples). An event refused for
    being too far ahead comes with the latest event time instead of the watermark
    (``ts`` after it: the engines hand both kinds back alike)."""
    if ts > watermark:
        return ahead_text(ts, watermark, max_skew_ms)
    return (
        f"late: ts {format_ts(ts)} is before the watermark {format_ts(watermark)} "
        f"(allowed lateness {lateness_ms // 1000}s)"
    )


def ahead_text(ts: int, max_ts: int, max_skew_ms: int | None) -> str:
    """The reason an event is refused for being too far ahead (`Engine.is_ahead`)."""
    skew = format_duration(max_skew_ms) if max_skew_ms is not None else "the maximum skew"
    return (
        f"ahead: ts {format_ts(ts)} is more than {skew} after the latest event time {format_ts(max_ts)} "
        f"(max skew; {AHEAD_CONFIRM} such events in a row move the clock)"
    )


@dataclass
class Fed:
    """What one batch gave: records in the engine's order; refused inputs by batch index."""

    records: list[dict[str, Any]] = field(default_factory=list)
    bad: list[tuple[int, str]] = field(default_factory=list)  # (index, reason): not an event
    late: list[tuple[int, str]] = field(default_factory=list)  # (index, reason): before the watermark
    events: int = 0  # events taken (neither bad nor late)
