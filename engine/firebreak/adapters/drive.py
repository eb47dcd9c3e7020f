"""One drive loop: a source of input → an engine → a sink of records and refused input.

    driver = Driver(rules, lateness_ms)                  # the one place an engine plugs in
    fed = driver.feed_lines([b'{"event_id": ...}', ...]) # raw JSON lines, in a batch
    fed = driver.feed_events([event, ...])               # events a source already decoded
    records = driver.finish()                            # end of a replay

    result = drive_batches(batches, driver, sink)        # the whole loop over (places, lines) batches
    result = drive_batches(batched(pairs), driver, sink) # ... over (where, line) pairs

File replay, topic replay, backtest and investigate all drive their engine through a
`Driver`: the Python core (engine/firebreak/core, the executable specification) or the native
one (engine/firebreak/native). A `Fed` says what a batch gave: the records, in the engine's order,
and the refused inputs — bad (not an event, with the reason `validate_event` gives) and
late (before the watermark) or ahead (more than the maximum skew after the latest event time:
`Engine.is_ahead`) — by their index in the batch, so the caller, who knows
where each input came from, can report and dead-letter it.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Protocol

from firebreak.core import DEFAULT_LATENESS_MS, Engine, Event
from firebreak.core.cases import CaseBook
from firebreak.core.engine import DEFAULT_MAX_SKEW_MS
from firebreak.dsl import CompiledRule
from firebreak.errors import EngineError
from firebreak.feed import Fed, ahead_text, decode_event, decoded_lines, late_text  # noqa: F401 - re-exported

BATCH_LINES = 4096
ENGINES = ("python", "native")


@contextmanager
def python_core_errors(wrap: bool = True) -> Iterator[None]:
    """An error raised inside the Python core, as the native engine's host gives it: an
    EngineError (engine/firebreak/errors.py), which commands print in one line."""
    try:
        yield
    except EngineError:
        raise
    except Exception as error:
        if not wrap:
            raise
        raise EngineError(f"the Python core failed: {type(error).__name__}: {error}") from error


class EngineCore(Protocol):
    """What a `Driver` needs of an engine (firebreak.core.Engine, firebreak.native.NativeEngine)."""

    watermark: int | None
    lateness_ms: int
    opened: Counter

    def advance(self, watermark: int) -> list[dict[str, Any]]: ...
    def finish(self, max_ts: int | None = None) -> list[dict[str, Any]]: ...
    def open_incidents(self) -> list[dict[str, Any]]: ...
    def snapshot(self) -> dict[str, Any]: ...


class Driver:
    """The engine of one replay, behind one interface. ``engine``: ``python`` (the core),
    ``native`` (engine/firebreak/native: every rule the DSL accepts; it refuses any other), or
    None for the default (`default_engine`: native)."""

    def __init__(
        self,
        rules: Sequence[CompiledRule],
        lateness_ms: int = DEFAULT_LATENESS_MS,
        engine: str | None = None,
        cases: CaseBook | None = None,
        max_skew_ms: int | None = DEFAULT_MAX_SKEW_MS,
    ) -> None:
        """``cases``: pass the engine's records through this case component (core/cases.py):
        each incident record then names its case, and case records follow it. ``max_skew_ms``:
        how far after the latest event time an event may be (`Engine.is_ahead`; None: no bound)."""
        self.rules = tuple(rules)
        self.cases = cases
        self.kind = engine or default_engine()
        if self.kind not in ENGINES:
            raise ValueError(f"unknown engine {self.kind!r}: one of {', '.join(ENGINES)}")
        if self.kind == "native":
            from firebreak.native import NativeEngine  # the compiled extension: only when asked for

            self.core: Any = NativeEngine(self.rules, lateness_ms, max_skew_ms)
        else:
            self.core = Engine(self.rules, lateness_ms, max_skew_ms=max_skew_ms)

    @classmethod
    def restore(
        cls,
        rules: Sequence[CompiledRule],
        snapshot: dict[str, Any],
        engine: str | None = None,
        lateness_ms: int | None = None,
        max_skew_ms: int | None = DEFAULT_MAX_SKEW_MS,
    ) -> Driver:
        """A Driver whose engine goes on from ``snapshot`` (the core's layout, `Engine.snapshot`,
        which both engines write and restore): a rule whose text changed starts afresh."""
        driver = cls(rules, snapshot["lateness_ms"] if lateness_ms is None else lateness_ms, engine, None, max_skew_ms)
        driver.core = type(driver.core).restore(driver.rules, snapshot, lateness_ms, max_skew_ms=max_skew_ms)
        return driver

    # ---- what ran where ---------------------------------------------------------------

    def placement(self) -> dict[str, str]:
        """rule name → the engine that runs it (``python`` or ``native``)."""
        if self.kind == "native":
            return self.core.placement()
        return {rule.name: "python" for rule in self.rules}

    # ---- input ----------------------------------------------------------------------------

    def feed_lines(self, lines: Sequence[bytes], max_bytes: int | None = None) -> Fed:
        """A batch of raw JSON lines (blank ones are skipped, neither events nor bad)."""
        if self.kind == "native":
            return self._cased_fed(self.core.feed_lines(lines, max_bytes))
        fed = Fed()
        engine = self.core
        with python_core_errors():
            for index, _raw, event in decoded_lines(lines, max_bytes, fed):
                self._take(engine, index, event, fed)
        return self._cased_fed(fed)

    def feed_events(self, events: Iterable[Event]) -> Fed:
        """Events a source has already decoded and validated (a topic's merge, an investigation)."""
        if self.kind == "native":
            return self._cased_fed(self.core.feed_events(events))
        fed = Fed()
        engine = self.core
        with python_core_errors():
            for index, event in enumerate(events):
                self._take(engine, index, event, fed)
        return self._cased_fed(fed)

    def _cased(self, records: list[dict[str, Any]]) -> list[dict[str, Any]]:
        if self.cases is None or not records:
            return records
        return [out for record in records for out in self.cases.process(record)]

    def _cased_fed(self, fed: Fed) -> Fed:
        fed.records = self._cased(fed.records)
        return fed

    @staticmethod
    def _take(engine: Engine, index: int, event: Event, fed: Fed) -> None:
        if engine.is_late(event):
            fed.late.append((index, late_text(event.ts, engine.watermark or 0, engine.lateness_ms)))
            return
        if engine.is_ahead(event):
            fed.late.append((index, ahead_text(event.ts, engine.max_ts, engine.max_skew_ms)))
            return
        fed.events += 1
        fed.records.extend(engine.process(event))

    # ---- time and state ---------------------------------------------------------------------

    def advance(self, watermark: int) -> list[dict[str, Any]]:
        with python_core_errors(self.kind == "python"):
            return self._cased(self.core.advance(watermark))

    def finish(self) -> list[dict[str, Any]]:
        with python_core_errors(self.kind == "python"):
            records = self._cased(self.core.finish())
        # the first pages still held (group_wait) leave at their due time: the end of a replay
        return records + self.cases.finish() if self.cases is not None else records

    @property
    def watermark(self) -> int | None:
        return self.core.watermark

    @property
    def opened(self) -> Counter:
        return Counter(self.core.opened)

    def open_incidents(self) -> list[dict[str, Any]]:
        return self.core.open_incidents()

    def snapshot(self) -> dict[str, Any]:
        return self.core.snapshot()


def default_engine() -> str:
    """``FIREBREAK_ENGINE`` if set; else ``native`` (the Python core where the extension is not built)."""
    import os

    chosen = os.environ.get("FIREBREAK_ENGINE")
    if chosen:
        return chosen
    from firebreak.native import available

    return "native" if available() else "python"


# ---- the loop over numbered lines ---------------------------------------------------------


class LineSink(Protocol):
    def record(self, record: dict[str, Any]) -> None: ...
    def bad(self, where: Any, reason: str, raw: bytes, late: bool) -> None: ...


@dataclass
class DriveCounts:
    lines: int = 0
    events: int = 0
    bad: int = 0
    late: int = 0
    records: int = 0


def batched(source: Iterable[tuple[Any, bytes]]) -> Iterator[tuple[list[Any], list[bytes]]]:
    """``(where, raw line)`` pairs as `drive_batches` takes them: batches of `BATCH_LINES`."""
    places: list[Any] = []
    lines: list[bytes] = []
    for where, raw in source:
        places.append(where)
        lines.append(raw)
        if len(lines) >= BATCH_LINES:
            yield places, lines
            places, lines = [], []
    if lines:
        yield places, lines


def drive_batches(
    source: Iterable[tuple[Sequence[Any], list[bytes]]],
    driver: Driver,
    sink: LineSink,
    counts: DriveCounts | None = None,
    progress: Callable[[DriveCounts], None] | None = None,
    progress_every: int = 50_000,
    finish: bool = True,
) -> DriveCounts:
    """Feed batches of raw lines to the driver, each with where its lines came from
    (``places[i]``: where ``lines[i]`` came from); records and refused lines go to the sink in
    input order. ``finish``: end of input (evaluate the last steps)."""
    counts = counts if counts is not None else DriveCounts()
    next_progress = progress_every
    for places, lines in source:
        counts.lines += len(lines)
        fed = driver.feed_lines(lines)
        refused = sorted([(i, reason, False) for i, reason in fed.bad] + [(i, reason, True) for i, reason in fed.late])
        for index, reason, late in refused:
            if late:
                counts.late += 1
            else:
                counts.bad += 1
            sink.bad(places[index], reason, lines[index].rstrip(b"\n"), late)
        counts.events += fed.events
        for record in fed.records:
            counts.records += 1
            sink.record(record)
        if progress is not None and counts.lines >= next_progress:
            progress(counts)
            next_progress = counts.lines - counts.lines % progress_every + progress_every
    if finish:
        for record in driver.finish():
            counts.records += 1
            sink.record(record)
    return counts
