"""Replay JSON-lines event files through the core engine.

The adapter owns the I/O: opening files (``-`` for stdin, ``.gz``), decoding
JSON with orjson, writing records and dead letters. Every decision is the
engine's. A bad line never stops a replay: it is counted, described (with its
file and line number) and, if asked, written to the dead-letter file.

The loop itself is drive.drive_batches (the one drive loop of every replay). The pieces
every replay shares — `decode_event` (from drive.py), `late_reason`, `write_dead_letter`
and `ReplayResult` — are also used by the topic replay (topic_replay.py), so a bad
message and a bad line are treated alike.
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

from firebreak.adapters.drive import DriveCounts, Driver, decode_event, drive_batches, late_text  # noqa: F401 - decode_event: re-exported
from firebreak.core import DEFAULT_LATENESS_MS, Engine, Event
from firebreak.core.cases import CaseBook
from firebreak.core.engine import DEFAULT_MAX_SKEW_MS
from firebreak.dsl import CompiledRule

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


def late_reason(event: Event, engine: Engine) -> str:
    return late_text(event.ts, engine.watermark or 0, engine.lateness_ms)


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
    engine: str | None = None,
    cases: CaseBook | None = None,
    max_skew_ms: int | None = DEFAULT_MAX_SKEW_MS,
) -> ReplayResult:
    """Replay the files through the rules (drive.drive_batches); ``emit`` gets each record.
    ``engine``: ``python`` or ``native`` (None: drive.default_engine). ``cases``: the case
    component the records pass through (core/cases.py), or None. ``max_skew_ms``: how far
    after the latest event time an event may be (`Engine.is_ahead`; None: no bound)."""
    driver = Driver(rules, lateness_ms, engine, cases, max_skew_ms)
    result = ReplayResult()
    sink = _FileSink(result, emit, dead_letter)
    counts = DriveCounts()

    def report(counts: DriveCounts) -> None:
        sink.count(counts)
        progress(result)

    for path in paths:
        sink.path = path
        with open_input(path) as stream:
            try:
                drive_batches(_batches(path, stream), driver, sink, counts, report if progress else None, finish=False)
            except (OSError, EOFError, gzip.BadGzipFile) as error:
                raise InputError(f"{path}: read failed after line {counts.lines}: {error}") from None
    for record in driver.finish():
        counts.records += 1
        emit(record)
    sink.count(counts)
    result.opened = driver.opened
    result.open_at_end = driver.open_incidents()
    return result


BATCH_BYTES = 2 << 20  # lines read at a time (readlines' hint): ~4,000 events of ~500 bytes


def _batches(path: str, stream: IO[bytes]) -> Iterator[tuple[Numbered, list[bytes]]]:
    """The stream's lines a batch at a time (read and split in C: no Python step per line),
    the next batch read on a thread of its own while the engine takes this one (the native
    engine lets the GIL go while it works: reading no longer waits for it, nor it for reading)."""
    first = 1
    for lines in read_ahead(lambda: stream.readlines(BATCH_BYTES)):
        yield Numbered(path, first), lines
        first += len(lines)


def read_ahead(read: Callable[[], list[bytes]], depth: int = 2) -> Iterator[list[bytes]]:
    """What ``read()`` returns, call after call until it returns nothing, read by a thread up
    to ``depth`` calls ahead; an exception it raises comes out here, in its turn."""
    import queue
    import threading

    ready: queue.Queue[tuple[list[bytes] | None, BaseException | None]] = queue.Queue(depth)
    stop = threading.Event()

    def reader() -> None:
        while not stop.is_set():
            try:
                item = read()
            except BaseException as error:  # noqa: BLE001 - handed to the consumer, raised there
                _put(ready, (None, error), stop)
                return
            _put(ready, (item, None), stop)
            if not item:
                return

    thread = threading.Thread(target=reader, name="firebreak-read-ahead", daemon=True)
    thread.start()
    try:
        while True:
            item, error = ready.get()
            if error is not None:
                raise error
            if not item:
                return
            yield item
    finally:
        stop.set()
        while thread.is_alive():  # let a reader blocked on a full queue see the stop
            try:
                ready.get_nowait()
            except queue.Empty:
                thread.join(0.01)


def _put(ready: Any, item: Any, stop: Any) -> None:
    import queue

    while not stop.is_set():
        try:
            ready.put(item, timeout=0.1)
            return
        except queue.Full:
            continue


@dataclass(frozen=True)
class Numbered:
    """Where the lines of a batch came from: ``[i]`` is (path, line number) of its line i."""

    path: str
    first: int

    def __getitem__(self, index: int) -> tuple[str, int]:
        return self.path, self.first + index


class _FileSink:
    """Records to ``emit``; bad and late lines counted, sampled and dead-lettered with file and line."""

    def __init__(
        self, result: ReplayResult, emit: Callable[[dict[str, Any]], None], dead_letter: IO[bytes] | None
    ) -> None:
        self.result, self.record, self.dead_letter, self.path = result, emit, dead_letter, ""

    def bad(self, where: tuple[str, int], reason: str, raw: bytes, late: bool) -> None:
        path, number = where
        self.result.note_bad(f"{path}:{number}", reason)  # late lines are sampled with the bad ones ...
        if late:
            self.result.bad -= 1  # ... but counted apart
            self.result.late += 1
        write_dead_letter(self.dead_letter, {"source": path, "line": number}, reason, raw)

    def count(self, counts: DriveCounts) -> None:
        self.result.lines, self.result.events, self.result.records = counts.lines, counts.events, counts.records
