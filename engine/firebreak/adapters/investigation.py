"""Load the events of an investigation — from files or a Kafka topic range — and run it.

The investigation itself is pure (engine/firebreak/investigate); this adapter only reads events
(bad ones counted and sampled, never fatal) and renders the report in a format.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson

from firebreak.adapters.drive import Driver, decode_event
from firebreak.adapters.file_replay import InputError, open_input
from firebreak.core import Event, InvalidEvent
from firebreak.core.cases import CaseBook
from firebreak.dsl import CompiledRule
from firebreak.investigate import Options, Selection, investigate, list_incidents
from firebreak.investigate.case import CaseReport, investigate_case, render_case_html, render_case_markdown
from firebreak.investigate.html import render_html
from firebreak.investigate.markdown import render_markdown
from firebreak.investigate.model import Report
from firebreak.records import CASE_KINDS

MAX_BAD_SAMPLES = 20
_CASE_TYPES = frozenset(k.value for k in CASE_KINDS)
FORMATS = ("markdown", "json", "html")


@dataclass
class LoadedEvents:
    events: list[Event] = field(default_factory=list)
    bad: int = 0
    bad_samples: list[str] = field(default_factory=list)
    source: str = ""

    def note_bad(self, where: str, reason: str) -> None:
        self.bad += 1
        if len(self.bad_samples) < MAX_BAD_SAMPLES:
            self.bad_samples.append(f"{where}: {reason}")


def events_from_files(paths: Sequence[str]) -> LoadedEvents:
    """Every valid event of the files, in file order (what a replay of them sees)."""
    loaded = LoadedEvents(source="files: " + ", ".join(paths))
    for path in paths:
        for number, raw in numbered_lines(path):
            try:
                loaded.events.append(decode_event(raw))
            except InvalidEvent as error:
                loaded.note_bad(f"{path}:{number}", str(error))
    return loaded


def numbered_lines(path: str) -> Iterator[tuple[int, bytes]]:
    """(line number, line) of each line of ``path`` that is not blank; a failed read is an
    `InputError` naming the file."""
    with open_input(path) as stream:
        try:
            for number, raw in enumerate(stream, start=1):
                if raw.strip():
                    yield number, raw
        except (OSError, EOFError) as error:
            raise InputError(f"{path}: read failed: {error}") from None


def events_from_topic(
    bootstrap: str, topic: str, since_ms: int, until_ms: int, rules: Sequence[CompiledRule], options: Options
) -> LoadedEvents:
    """The topic's events from ``since`` minus the rules' warm-up and the cause lookback, to
    ``until`` plus the allowed lateness (so the watermark reaches ``until``)."""
    from firebreak.adapters.topic_replay import read_topic_events, warmup_ms  # aiokafka: only for topics

    loaded = LoadedEvents(source=f"topic {topic} from {since_ms} to {until_ms}")
    start = since_ms - warmup_ms(rules) - options.lookback_ms
    loaded.events = read_topic_events(
        bootstrap,
        topic,
        start,
        until_ms + options.lateness_ms,
        on_bad=lambda where, reason, raw: loaded.note_bad(where, reason),
    )
    return loaded


@dataclass
class Outcome:
    records: list[dict[str, Any]]
    report: Report | CaseReport | None  # None: no incident was chosen; `incidents` lists them
    incidents: list[dict[str, Any]]


def records_from_file(path: str) -> list[dict[str, Any]]:
    """The records of a file (JSON lines, as `replay` or `demo` write them). A line that is not
    a record object is an `InputError` naming ``path:line``: records are the engine's output,
    not user input to skip."""
    records = []
    for number, raw in numbered_lines(path):
        try:
            record = orjson.loads(raw)
        except orjson.JSONDecodeError as error:
            raise InputError(f"{path}:{number}: not JSON: {error}") from None
        if not isinstance(record, dict) or not isinstance(record.get("type"), str):
            raise InputError(f"{path}:{number}: not a record (an object with a type)")
        records.append(record)
    return records


def with_case_records(
    records: list[dict[str, Any]], rules: Sequence[CompiledRule], events: Sequence[Event] = ()
) -> list[dict[str, Any]]:
    """``records`` as they are when they hold case records; otherwise with the cases they make,
    as `replay --cases` and the worker form them (scopes: the groups and the records'
    ``evidence_scope``)."""
    if any(r.get("type") in _CASE_TYPES for r in records):
        return records
    book = CaseBook.for_rules(rules)
    return [out for record in records for out in book.process(record)]


def replay_events(
    rules: Sequence[CompiledRule], events: Sequence[Event], lateness_ms: int, engine: str | None = None
) -> list[dict[str, Any]]:
    """Every record of the rules over the events (firebreak.core.run_events, through a `Driver`)."""
    driver = Driver(rules, lateness_ms, engine)
    return driver.feed_events(events).records + driver.finish()


def run(
    rules: Sequence[CompiledRule],
    loaded: LoadedEvents,
    selection: Selection | None,
    options: Options,
    engine: str | None = None,
    *,
    records: list[dict[str, Any]] | None = None,
    case_id: str | None = None,
) -> Outcome:
    """Replay the events through the rules (or take ``records``, e.g. `demo`'s) and, when an
    incident (``selection``) or a case (``case_id``) is chosen, investigate it. Incidents are
    grouped into cases as `replay --cases` does (unless ``records`` hold case records), so an
    investigation names its incident's case. Raises `firebreak.investigate.IncidentNotFound`
    (its message lists the incidents, or the cases, there are)."""
    if records is None:
        # All the rules, even for one --rule: the case of its incident depends on the others.
        records = replay_events(tuple(rules), loaded.events, options.lateness_ms, engine)
    records = with_case_records(records, rules, loaded.events)
    if case_id is not None:
        return Outcome(records, investigate_case(rules, loaded.events, case_id, options, records), [])
    if selection is None:
        return Outcome(records, None, list_incidents(records))
    report = investigate(rules, loaded.events, selection, options, records=records)
    return Outcome(records, report, [])


def render_listing(incidents: list[dict[str, Any]]) -> str:
    """The incident listing for scripts: a JSON array of `list_incidents` rows."""
    return orjson.dumps(incidents, option=orjson.OPT_INDENT_2).decode()


def render(report: Report | CaseReport, fmt: str) -> str:
    """``report`` as `fmt` (FORMATS); a report read back from JSON: `Report.from_json`."""
    if isinstance(report, CaseReport):
        if fmt == "json":
            return orjson.dumps(report.to_json(), option=orjson.OPT_INDENT_2).decode()
        return render_case_html(report) if fmt == "html" else render_case_markdown(report)
    if fmt == "json":
        return orjson.dumps(report.to_json(), option=orjson.OPT_INDENT_2).decode()
    if fmt == "html":
        return render_html(report)
    return render_markdown(report)
