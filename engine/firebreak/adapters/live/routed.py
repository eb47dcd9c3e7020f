"""The routed message (format 7): what stage 1 sends a shard, written and read here only.

One routed message per (batch of stage 1, shard) — split in several when its rows pass
`MESSAGE_BYTES` — is a header line of JSON, then the rows as one zstd frame:

    {"v":7,"rv":"<rules version>","parts":[[input partition, its event time or null], ...]}
    ZSTD(ROW ROW ...)

The rows are compressed by stage 1 in Rust without the GIL (`NativeRouter.route_batch`) and
decompressed by the shard in Rust without the GIL (`Core.take_routed`); the routed topic's
producer does not compress again (format 5 left that to the producer, on the event loop with
the GIL held). A shard with no event of the batch gets an empty body, not a frame.

The header names every input partition of the batch with how far its event time has got (the
heartbeat: a shard's watermark is the minimum over input partitions), and ``"idle": [p]`` for
an idle marker (a header alone). Each row is one event the shard must see, in binary
(little-endian; native/src/rows.rs writes them, `rows` here reads them):

    u32 LEN (bytes after it)  u32 PARTITION  i64 OFFSET  i64 TS  u64 MASK  u64 POP  u64 FLAGGED  VALUE

its input partition and offset (a shard drops re-deliveries by them), its event time in ms,
the rules of which the shard owns the event's (rule, group) pair as a bit mask (by index in rules
version ``rv``), the `Kx population` / `baseline(S, population)` rules that count the event on
this shard without it owning the pair (``POP``; the owner has the rule's bit in ``MASK``), of
those the ones whose flag the event has set (``FLAGGED``: `flags.<flag> is True`) — past 64
rules a mask bit stands for every rule from the 64th on, population rules reach every shard in
``MASK`` and ``POP`` stays empty: the shard then checks each pair's owner itself, as format 6
did — and the event as a value: a tag byte, then: 0 null, 1 false, 2 true, 3 int (i64), 4 float
(f64), 5 string (byte length, UTF-8), 6 array (count, items), 7 object (count, then each key as
a string's length and bytes, and its value); lengths and counts as LEB128 varints — with every
field but the raw text (``prompt``, ``output``: no rule reads them, and they are most of an
event's bytes), its keys in the input line's order. A shard reads a row without parsing JSON
again (format 4 sent JSON text: each shard parsed every event again). Every other field
crosses, whether a rule of the current version reads it or not, so a rule reload never needs a
field a routed message left out.
A row with an empty ``MASK`` only counts population rules: with the rules of ``rv``, the shard
adds its time to those rules' totals (late or not as any event) without reading the value
(format 6's shard read such an event and routed it to a group it did not own, to count it). The
value is still there, so a shard whose rules changed since (a reload: ``rv`` is not its own)
evaluates the event in full with its new rules, as before.
When a shard's rows are split over several messages, only the last carries the heartbeats:
time moves once all the batch's events are in. The native engine reads the rows
(`Core.take_routed`), `feed_python` the Python core (tests, the oracle; `plain` decompresses
a body with cramjam, aiokafka's codec, so the oracle does not share the native decompressor).
"""

from __future__ import annotations

import struct
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import orjson

from firebreak.core import Event
from firebreak.event_types import EventType

VERSION = 7
MESSAGE_BYTES = 512 * 1024  # a shard's rows of one batch past this are split over several messages
RAW_TEXT_FIELDS = ("prompt", "output")  # not routed
Fed = tuple[int, int, int]  # (events taken, late, duplicates)


class RoutedFormatError(ValueError):
    """A routed message this release does not read (written by another release, or not by a worker)."""


@dataclass(frozen=True, slots=True)
class Routed:
    rules_version: str | None  # of the masks in ``body``
    heads: list[tuple[int, int | None]]  # (input partition, its event time) per input partition named
    idle: list[int]  # input partitions announced idle
    body: bytes  # the event rows as one zstd frame (empty: none); `plain` gives the rows


def encode(version: str, heads: Sequence[tuple[int, int | None]], bodies: Sequence[bytes]) -> list[bytes]:
    """A shard's routed messages of one batch: ``bodies`` are its rows (one or more chunks, from
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


MAX_PLAIN_BYTES = 1 << 30  # a body that says it holds more rows than this is refused


def plain(body: bytes) -> bytes:
    """A routed body's rows (its zstd frame decompressed; empty for an empty body).
    RoutedFormatError when it is not a zstd frame."""
    if not body:
        return b""
    import cramjam

    if body[:4] != b"\x28\xb5\x2f\xfd":
        raise RoutedFormatError("a routed message's body is not a zstd frame")
    try:
        rows = bytes(cramjam.zstd.decompress(body))
    except cramjam.DecompressionError as error:
        raise RoutedFormatError(f"a routed message's body is a broken zstd frame ({error})") from None
    if len(rows) > MAX_PLAIN_BYTES:
        raise RoutedFormatError("a routed message's body holds more than 1 GiB of rows")
    return rows


_ROW = struct.Struct("<IIqqQQQ")  # LEN PARTITION OFFSET TS MASK POP FLAGGED
_I64, _F64 = struct.Struct("<q"), struct.Struct("<d")


def rows(body: bytes) -> Iterator[tuple[int, int, int, int, dict[str, Any]]]:
    """The rows of a routed message's body: (input partition, offset, event time, rule mask,
    the event). RoutedFormatError when a row is malformed. `heads` gives the population masks."""
    for (partition, offset, ts, mask, _pop, _flagged), data in _rows(body):
        yield partition, offset, ts, mask, data


def heads(body: bytes) -> Iterator[tuple[int, int, int, int, int, int]]:
    """The heads of a routed body's rows: (input partition, offset, event time, MASK, POP,
    FLAGGED)."""
    for head, _data in _rows(body):
        yield head


def _rows(body: bytes) -> Iterator[tuple[tuple[int, int, int, int, int, int], dict[str, Any]]]:
    at, end = 0, len(body)
    while at < end:
        if end - at < _ROW.size:
            raise RoutedFormatError("a routed row is cut short")
        size, partition, offset, ts, mask, pop, flagged = _ROW.unpack_from(body, at)
        stop = at + 4 + size
        if stop > end:
            raise RoutedFormatError("a routed row is cut short")
        try:
            data, after = _value(body, at + _ROW.size)
        except (struct.error, IndexError, UnicodeDecodeError, KeyError) as error:
            raise RoutedFormatError(f"a routed row is malformed ({error})") from None
        if after != stop or not isinstance(data, dict):
            raise RoutedFormatError("a routed row is malformed")
        yield (partition, offset, ts, mask, pop, flagged), data
        at = stop


def _len(b: bytes, at: int) -> tuple[int, int]:
    """A LEB128 varint at ``at``: (its value, where it ends)."""
    n = shift = 0
    while True:
        byte = b[at]
        at += 1
        n |= (byte & 0x7F) << shift
        if byte < 0x80:
            return n, at
        shift += 7
        if shift > 28:
            raise KeyError("a length past 32 bits")


def _value(b: bytes, at: int) -> tuple[Any, int]:
    tag = b[at]
    at += 1
    if tag <= 2:
        return (None, False, True)[tag], at
    if tag == 3:
        return _I64.unpack_from(b, at)[0], at + 8
    if tag == 4:
        return _F64.unpack_from(b, at)[0], at + 8
    n, at = _len(b, at)
    if tag == 5:
        if at + n > len(b):
            raise IndexError("a string cut short")
        return b[at : at + n].decode(), at + n
    if tag == 6:
        items = []
        for _ in range(n):
            item, at = _value(b, at)
            items.append(item)
        return items, at
    if tag == 7:
        obj: dict[str, Any] = {}
        for _ in range(n):
            size, at = _len(b, at)
            if at + size > len(b):
                raise IndexError("a key cut short")
            key = b[at : at + size].decode()
            value, at = _value(b, at + size)
            obj[key] = value  # a repeated key: its first place, its last value (as orjson)
        return obj, at
    raise KeyError(f"tag {tag}")


def feed_python(engine: Any, body: bytes, next_offset: dict[int, int], masks: bool = False) -> Fed:
    """The Python core's `Core.take_routed` without the evaluation: the rows of ``body`` (a
    routed message's body: a zstd frame, `plain`) at or after ``next_offset[partition]`` added
    to ``engine``: every rule looked at (the mask only narrows which rules the native engine
    tries), but with ``masks`` (stage 1 had the engine's rules), a row whose mask is empty only
    counts the population rules its ``POP`` names (`Engine.add_population`), as the native
    engine does, without the event. ``next_offset`` moves on."""
    taken = late = duplicates = 0
    compact = masks and len(engine.states) <= 64
    for (partition, offset, ts, mask, pop, flagged), data in _rows(plain(body)):
        if offset < next_offset.get(partition, 0):
            duplicates += 1
            continue
        next_offset[partition] = offset + 1
        if compact and mask == 0:
            counted = [(index, bool(flagged >> index & 1)) for index in range(64) if pop >> index & 1]
            added = engine.add_population(ts, counted)
        else:
            added = engine.add(Event(data["event_id"], ts, data.get("type", EventType.INFERENCE), data))
        if added:
            taken += 1
        else:
            late += 1
    return taken, late, duplicates
