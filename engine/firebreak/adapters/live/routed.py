"""The routed message (format 4): what stage 1 sends a shard, written and read here only.

One routed message per (batch of stage 1, shard) — split in several when its events pass
`MESSAGE_BYTES` — is text:

    {"v":4,"rv":"<rules version>","parts":[[input partition, its event time or null], ...]}
    PARTITION OFFSET TS MASK EVENT
    ...

The header names every input partition of the batch with how far its event time has got (the
heartbeat: a shard's watermark is the minimum over input partitions), and ``"idle": [p]`` for
an idle marker (a header alone). Each line is one event the shard must see: its input partition
and offset (a shard drops re-deliveries by them), its event time in ms, the rules it must look
at as a hex bit mask (by index in rules version ``rv``), and the event as JSON with every field
but the raw text (``prompt``, ``output``: no rule reads them, and they are most of an event's
bytes). Every other field crosses, whether a rule of the current version reads it or not, so
a rule reload never needs a field a routed message left out. When a shard's events are split
over several messages, only the last carries the heartbeats: time moves once all the batch's
events are in. The lines are written by the native router (native/src/route.rs) and read by
the native engine (`Core.take_routed`), or by `feed_python` for the Python core (tests, the
oracle).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import orjson

from firebreak.core import Event
from firebreak.event_types import EventType

VERSION = 4
MESSAGE_BYTES = 512 * 1024  # a shard's lines of one batch past this are split over several messages
RAW_TEXT_FIELDS = ("prompt", "output")  # not routed
Fed = tuple[int, int, int]  # (events taken, late, duplicates)


class RoutedFormatError(ValueError):
    """A routed message this release does not read (written by another release, or not by a worker)."""


@dataclass(frozen=True, slots=True)
class Routed:
    rules_version: str | None  # of the masks in ``body``
    heads: list[tuple[int, int | None]]  # (input partition, its event time) per input partition named
    idle: list[int]  # input partitions announced idle
    body: bytes  # the event lines


def encode(version: str, heads: Sequence[tuple[int, int | None]], bodies: Sequence[bytes]) -> list[bytes]:
    """A shard's routed messages of one batch: ``bodies`` are its lines (one or more chunks, from
    `NativeRouter.route_batch`), ``heads`` the batch's input partitions and their event times."""
    last = len(bodies) - 1
    out = []
    for index, body in enumerate(bodies):
        header = {"v": VERSION, "rv": version, "parts": [list(head) for head in heads] if index == last else []}
        out.append(orjson.dumps(header) + b"\n" + body)
    return out


def encode_idle(version: str, partition: int, ts: int | None) -> bytes:
    """An idle marker: input partition ``partition`` is caught up and quiet (its event time ``ts``)."""
    return orjson.dumps({"v": VERSION, "rv": version, "parts": [[partition, ts]], "idle": [partition]})


def decode(value: bytes) -> Routed:
    """A routed message → `Routed`; RoutedFormatError when it is not one of this format."""
    header, _, body = value.partition(b"\n")
    try:
        message = orjson.loads(header)
    except orjson.JSONDecodeError as error:
        raise RoutedFormatError(f"not a routed message: its header is not JSON ({error})") from None
    if not isinstance(message, dict) or message.get("v") != VERSION:
        found = message.get("v", "none") if isinstance(message, dict) else "none"
        raise RoutedFormatError(
            f"a routed message of format {found}; this release reads format {VERSION} only. It was written by "
            "an earlier release: let that release's workers drain the routed topic before upgrading, or start "
            "this group afresh with a new --app-id (its shards begin with empty windows)"
        )
    heads = [(int(p), None if ts is None else int(ts)) for p, ts in message.get("parts", ())]
    return Routed(message.get("rv"), heads, [int(p) for p in message.get("idle", ())], body)


def feed_python(engine: Any, body: bytes, next_offset: dict[int, int]) -> Fed:
    """The Python core's `Core.take_routed` without the evaluation: the lines of ``body`` at or
    after ``next_offset[partition]`` added to ``engine`` (every rule looked at; the mask only
    narrows which rules the native engine tries). ``next_offset`` moves on."""
    taken = late = duplicates = 0
    for line in body.splitlines():
        partition, offset, ts, _mask, raw = line.split(b" ", 4)
        partition, offset = int(partition), int(offset)
        if offset < next_offset.get(partition, 0):
            duplicates += 1
            continue
        next_offset[partition] = offset + 1
        data = orjson.loads(raw)
        if engine.add(Event(data["event_id"], int(ts), data.get("type", EventType.INFERENCE), data)):
            taken += 1
        else:
            late += 1
    return taken, late, duplicates
