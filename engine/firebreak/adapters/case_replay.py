"""`firebreak replay --cases`: the replay's records, then the cases they make (core/cases.py).

Cases are downstream of records, so a replay with cases runs in two steps: the replay keeps
its records (far fewer than events), then — knowing which events its incidents name as
evidence — reads the files once more for those events' scope fields (tenant, service, ...:
where a `by user` incident's evidence concentrates), and passes the records through a
`CaseBook` with that scope. Standard input cannot be read twice: from it, scopes are the
groups' values only.

    records = []
    result = replay_files(paths, rules, records.append)
    for record in with_cases(records, rules, paths):
        emit(record)
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import orjson

from firebreak.adapters.file_replay import open_input
from firebreak.core.cases import CaseBook, evidence_scope
from firebreak.dsl import CompiledRule
from firebreak.records import is_incident


def evidence_ids(records: Iterable[dict[str, Any]]) -> set[str]:
    return {e for r in records if is_incident(r) for e in r.get("evidence") or ()}


def scan_scopes(paths: Sequence[str], wanted: set[str], dimensions: Sequence[str]) -> dict[str, dict[str, Any]]:
    """``{event id: {dimension: value}}`` of the ``wanted`` events found in the files (not
    standard input); lines that are not JSON objects are skipped (the replay reported them)."""
    found: dict[str, dict[str, Any]] = {}
    for path in paths:
        if path == "-" or len(found) == len(wanted):
            continue
        with open_input(path) as stream:
            for line in stream:
                if b'"event_id"' not in line:
                    continue
                try:
                    event = orjson.loads(line)
                except orjson.JSONDecodeError:
                    continue
                if isinstance(event, dict) and event.get("event_id") in wanted:
                    found[event["event_id"]] = {d: event[d] for d in dimensions if event.get(d) is not None}
    return found


def with_cases(
    records: Sequence[dict[str, Any]], rules: Sequence[CompiledRule], paths: Sequence[str] = ()
) -> Iterator[dict[str, Any]]:
    """The records, each incident naming its case, and the case records after it."""
    book = CaseBook.for_rules(rules)
    dimensions = sorted({d for dims in book.grouping.by.values() for d in dims})
    wanted = evidence_ids(records)
    if wanted and paths:
        book.scope_of = evidence_scope(scan_scopes(paths, wanted, dimensions), dimensions)
    for record in records:
        yield from book.process(record)
