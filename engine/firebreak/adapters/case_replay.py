"""`firebreak replay --cases`: the replay's records, then the cases they make (core/cases.py).

Cases are downstream of records, so a replay with cases runs in two steps: the replay keeps
its records (far fewer than events), then passes them through a `CaseBook`. What a case
needs of the events — where a `by user` incident's evidence concentrates (tenant, service,
...) — the engine wrote into each incident record (``evidence_scope``), so files, standard
input and the live worker's case stage all form the same cases from the records alone.

    records = []
    result = replay_files(paths, rules, records.append)
    for record in with_cases(records, rules):
        emit(record)
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

from firebreak.core.cases import CaseBook
from firebreak.dsl import CompiledRule


def with_cases(records: Sequence[dict[str, Any]], rules: Sequence[CompiledRule]) -> Iterator[dict[str, Any]]:
    """The records, each incident naming its case, and the case records after it."""
    book = CaseBook.for_rules(rules)
    for record in records:
        yield from book.process(record)
    yield from book.finish()  # first pages still held by group_wait, at their due time
