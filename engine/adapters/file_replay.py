"""Replay JSON-lines event files through the core engine.

The adapter owns the I/O: opening files (``-`` for stdin, ``.gz``), decoding
JSON with orjson, writing records and dead letters. Every decision is the
engine's. A bad line never stops a replay: it is counted, described (with its
file and line number) and, if asked, written to the dead-letter file.

The pieces every replay shares — `decode_event`, `late_reason`,
`write_dead_letter` and `ReplayResult` — are also used by the topic replay
(topic_replay.py), so a bad message and a bad line are treated alike.
"""

from __future__ import annotations

import gzip
import io
import sys
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import IO, Any, ClassVar

import orjson

from engine.core import DEFAULT_LATENESS_MS, Engine, Event, InvalidEvent, format_ts, validate_event
from engine.dsl import CompiledRule

MAX_REPORTED_BAD_LINES = 20
MAX_DEAD_LETTER_RAW = 65_536


class InputError(Exception):
    """An input that cannot be opened or read at all."""


@dataclass
class ReplayResult:
    bad_noun: ClassVar[str] = "line"  # what one unit of input is called in the summary
    end_of_input: ClassVar[str] = "end of input"

    lines: int = 0
    events: int = 0
    bad: int = 0
    late: int = 0
    records: int = 0
    opened: Counter = field(default_factory=Counter)
    bad_samples: list[str] = field(default_factory=list)
    open_at_end: list[dict[str, Any]] = field(default_factory=list)

    def note_bad(self, where: str, reason: str) -> None:
        """Count a bad input and keep the first few as samples (``where: reason``)."""
        self.bad += 1
        if len(self.bad_samples) < MAX_REPORTED_BAD_LINES:
            self.bad_samples.append(f"{where}: {reason}")

    def counts(self) -> str:
        return (
            f"events read: {self.events}   bad {self.bad_noun}s: {self.bad}   late events: {self.late}   "
            f"records: {self.records}"
        )

    def head(self) -> list[str]:
        """The summary's first lines: the counts."""
        return [self.counts()]

    def summary(self) -> str:
        lines = self.head()
        if self.opened:
            lines.append("incidents opened by rule:")
            lines += [f"  {rule}: {count}" for rule, count in sorted(self.opened.items())]
        else:
            lines.append("incidents opened: none")
        if self.open_at_end:
            lines.append(f"still open at {self.end_of_input}: {len(self.open_at_end)}")
        return "\n".join(lines)


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


def late_reason(event: Event, engine: Engine) -> str:
    return (
        f"late: ts {format_ts(event.ts)} is before the watermark "
        f"{format_ts(engine.watermark or 0)} (allowed lateness {engine.lateness_ms // 1000}s)"
    )


def write_dead_letter(sink: IO[bytes] | None, position: dict[str, Any], reason: str, raw: bytes) -> None:
    """One dead-letter line: where the input was (``position``), why it was refused, and the raw input."""
    if sink is not None:
        text = raw[:MAX_DEAD_LETTER_RAW].decode("utf-8", "replace")
        sink.write(orjson.dumps({**position, "reason": reason, "raw": text}) + b"\n")


@contextmanager
def open_input(path: str) -> Iterator[IO[bytes]]:
    try:
        if path == "-":
            yield sys.stdin.buffer
            return
        raw = open(path, "rb")  # noqa: SIM115 - closed below
    except OSError as error:
        raise InputError(f"{path}: cannot open: {error.strerror or error}") from None
    try:
        if path.endswith(".gz"):
            with gzip.open(raw, "rb") as unzipped:
                yield io.BufferedReader(unzipped)  # type: ignore[arg-type]
        else:
            yield raw
    finally:
        raw.close()


def replay_files(
    paths: list[str],
    rules: tuple[CompiledRule, ...],
    emit: Callable[[dict[str, Any]], None],
    dead_letter: IO[bytes] | None = None,
    lateness_ms: int = DEFAULT_LATENESS_MS,
    progress: Callable[[ReplayResult], None] | None = None,
) -> ReplayResult:
    engine = Engine(rules, lateness_ms)
    result = ReplayResult()

    def bad(path: str, number: int, reason: str, raw: bytes) -> None:
        result.note_bad(f"{path}:{number}", reason)
        write_dead_letter(dead_letter, {"source": path, "line": number}, reason, raw)

    for path in paths:
        with open_input(path) as stream:
            try:
                for number, raw in enumerate(stream, start=1):
                    result.lines += 1
                    if not raw.strip():
                        continue
                    try:
                        event = decode_event(raw)
                    except InvalidEvent as error:
                        bad(path, number, str(error), raw.rstrip(b"\n"))
                        continue
                    if engine.is_late(event):
                        result.late += 1
                        bad(path, number, late_reason(event, engine), raw.rstrip(b"\n"))
                        result.bad -= 1  # late events are counted apart from bad lines
                        continue
                    result.events += 1
                    for record in engine.process(event):
                        result.records += 1
                        emit(record)
                    if progress is not None and result.lines % 50_000 == 0:
                        progress(result)
            except (OSError, EOFError, gzip.BadGzipFile) as error:
                raise InputError(f"{path}: read failed after line {result.lines}: {error}") from None
    for record in engine.finish():
        result.records += 1
        emit(record)
    result.opened = Counter(engine.opened)
    result.open_at_end = engine.open_incidents()
    return result
