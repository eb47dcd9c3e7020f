"""User reports in an investigation: joined to the answers they name, counted in the impact.

A `report` event names the inference event it is about (``ref``). Joining puts the answer's
identity beside the report — which service, model, template, tenant and user produced the
reported answer — so that an investigation can say "12 users reported wrong answers, 11 of
them from model m-2 on template support-v3" even when the reporting client knew nothing of
models. Pure: events in, events and a summary (`UserReports`) out.
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from collections.abc import Callable, Sequence
from typing import Any

from firebreak.core import Event
from firebreak.event_types import EventType
from firebreak.investigate.model import AnswerCount, ReportExample, UserReports

# What a report takes from the answer it names, when it does not say it itself.
ANSWER_FIELDS = ("service", "feature", "model", "model_version", "prompt_template", "tenant", "user")
SHOWN_DIMENSIONS = ("model", "prompt_template", "service", "tenant")
MAX_VALUES = 5
MAX_EXAMPLES = 5


def join_reports(log: Sequence[Event]) -> tuple[list[Event], set[str]]:
    """The log with every report whose ``ref`` names an inference event of the log completed
    with that answer's fields (the report's own fields win); and the ids of those reports."""
    answers = {e.event_id: e.data for e in log if e.type == EventType.INFERENCE}
    joined: set[str] = set()
    out = []
    for e in log:
        if e.type == EventType.REPORT:
            answer = answers.get(e.data.get("ref")) if isinstance(e.data.get("ref"), str) else None
            if answer is not None:
                extra = {k: answer[k] for k in ANSWER_FIELDS if k in answer and e.data.get(k) is None}
                e = dataclasses.replace(e, data={**e.data, **extra})
                joined.add(e.event_id)
        out.append(e)
    return out, joined


def user_reports(
    log: Sequence[Event], joined: set[str], in_group: Callable[[dict[str, Any]], bool], start: int, end: int
) -> UserReports:
    """The reports about the incident: those from ``start`` to ``end`` whose (joined) fields
    fall in the incident's group. How many, from how many users, with which labels, and which
    models, templates, services and tenants produced the answers they name."""
    reports = [e for e in log if e.type == EventType.REPORT and start <= e.ts <= end and in_group(e.data)]
    labels: Counter[str] = Counter(label for e in reports for label in e.data.get("labels", ()))
    answers: dict[str, tuple[AnswerCount, ...]] = {}
    for dim in SHOWN_DIMENSIONS:
        values = Counter(str(e.data[dim]) for e in reports if e.data.get(dim) is not None)
        if values:
            answers[dim] = tuple(AnswerCount(v, n) for v, n in values.most_common(MAX_VALUES))
    return UserReports(
        reports=len(reports),
        users=len({e.data.get("user") for e in reports if e.data.get("user") is not None}),
        joined=sum(1 for e in reports if e.event_id in joined),
        labels=dict(labels.most_common()),
        answers=answers,
        examples=tuple(_example(e) for e in reports[:MAX_EXAMPLES]),
    )


def _example(report: Event) -> ReportExample:
    return ReportExample(report.event_id, report.data.get("ref"), tuple(report.data.get("labels", ())))
