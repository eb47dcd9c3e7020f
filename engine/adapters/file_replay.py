"""Replay JSON-lines event files through the core engine.

The adapter owns the I/O: opening files (``-`` for stdin, ``.gz``), decoding
JSON with orjson, writing records and dead letters. Every decision is the
engine's. A bad line never stops a replay: it is counted, described (with its
file and line number) and, if asked, written to the dead-letter file.
"""

from __future__ import annotations

import gzip
import io
import sys
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import IO, Any

import orjson

from engine.core import DEFAULT_LATENESS_MS, Engine, InvalidEvent, format_ts, validate_event
from engine.dsl import CompiledRule

MAX_REPORTED_BAD_LINES = 20
MAX_DEAD_LETTER_RAW = 65_536


class InputError(Exception):
    """An input that cannot be opened or read at all."""


@dataclass
class ReplayResult:
    lines: int = 0
    events: int = 0
    bad: int = 0
    late: int = 0
    records: int = 0
    opened: Counter = field(default_factory=Counter)
    bad_samples: list[str] = field(default_factory=list)
    open_at_end: list[dict[str, Any]] = field(default_factory=list)

    def summary(self) -> str:
        lines = [
            f"events read: {self.events}   bad lines: {self.bad}   late events: {self.late}   records: {self.records}"
        ]
        if self.opened:
            lines.append("incidents opened by rule:")
            lines += [f"  {rule}: {count}" for rule, count in sorted(self.opened.items())]
        else:
            lines.append("incidents opened: none")
        if self.open_at_end:
            lines.append(f"still open at end of input: {len(self.open_at_end)}")
        return "\n".join(lines)


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
        result.bad += 1
        if len(result.bad_samples) < MAX_REPORTED_BAD_LINES:
            result.bad_samples.append(f"{path}:{number}: {reason}")
        if dead_letter is not None:
            dead_letter.write(
                orjson.dumps({"source": path, "line": number, "reason": reason,
                              "raw": raw[:MAX_DEAD_LETTER_RAW].decode("utf-8", "replace")})  # fmt: skip
                + b"\n"
            )

    for path in paths:
        with open_input(path) as stream:
            try:
                for number, raw in enumerate(stream, start=1):
                    result.lines += 1
                    if not raw.strip():
                        continue
                    try:
                        event = validate_event(orjson.loads(raw))
                    except orjson.JSONDecodeError as error:
                        bad(path, number, f"invalid JSON: {error}", raw.rstrip(b"\n"))
                        continue
                    except InvalidEvent as error:
                        bad(path, number, str(error), raw.rstrip(b"\n"))
                        continue
                    if engine.is_late(event):
                        result.late += 1
                        reason = (
                            f"late: ts {format_ts(event.ts)} is before the watermark "
                            f"{format_ts(engine.watermark)} (allowed lateness {lateness_ms // 1000}s)"
                        )
                        bad(path, number, reason, raw.rstrip(b"\n"))
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
