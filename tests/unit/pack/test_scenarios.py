"""The starter pack against synthetic traffic: each injected incident is caught by the rule
meant for it, on the right group, soon after onset; normal traffic opens no incident.

Traffic comes from firebreak.synthetic at a modest 6 events/s
(the pack's per-tenant and per-model `min N events` need about that much). An injection starts once the
rules that should catch it can fire: relative rules need 6 windows of baseline first.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import orjson
import pytest
from corekit import run
from firebreak.adapters.demo import IncidentRow, affected_events, incident_rows, match
from firebreak.adapters.starter_pack import starter_rule_sources
from firebreak.core import DEFAULT_LATENESS_MS, Event, parse_ts, validate_event
from firebreak.dsl import CompiledRule, load_rules
from firebreak.synthetic import HOUR, MINUTE, RAW_OUTPUTS, RAW_PROMPTS, Injection, Traffic

START = parse_ts("2026-03-03T10:00:00Z")
RATE = 6.0
TAIL = 20 * MINUTE  # normal traffic after the injection ends


@dataclass(frozen=True)
class Case:
    file: str  # the rule file of the category
    target: str
    expected: frozenset[str]  # rules meant to catch it (any one will do)
    onset: int  # after the start of the log
    within: int  # the latest acceptable detection, after onset
    duration: int = 30 * MINUTE


CASES = {
    "hallucination": Case(
        "hallucination.rules",
        "gpt-4o",
        frozenset({"hallucination_spike_by_model"}),
        onset=80 * MINUTE,
        within=10 * MINUTE,
    ),
    "data_leakage": Case(
        "data_leakage.rules", "acme", frozenset({"pii_in_outputs_by_tenant"}), onset=30 * MINUTE, within=10 * MINUTE
    ),
    # a drift, not a step: quality falls over 20 minutes
    "quality_degradation": Case(
        "quality_degradation.rules",
        "rag-answer-v12",
        frozenset({"quality_drop_by_template"}),
        onset=110 * MINUTE,
        within=25 * MINUTE,
        duration=40 * MINUTE,
    ),
    "adversarial": Case(
        "adversarial.rules",
        "globex",
        frozenset({"injection_probing_user", "repeated_jailbreaks_by_user"}),
        onset=20 * MINUTE,
        within=5 * MINUTE,
    ),
    # spend_spike_by_service (cost per call against 3h) is not armed 110 minutes in: the
    # longer prompts are prompt_tokens_per_call's (cost per call against 90 minutes)
    "cost": Case(
        "cost.rules",
        "support-bot",
        frozenset({"spend_spike_by_service", "prompt_tokens_per_call"}),
        onset=110 * MINUTE,
        within=10 * MINUTE,
    ),
}


@functools.cache
def pack() -> dict[str, tuple[CompiledRule, ...]]:
    """The starter pack (as `firebreak demo` finds it), rule file by rule file."""
    sources = starter_rule_sources()
    compiled, problems = load_rules(sources)
    assert not [p for p in problems if p.level == "error"], problems
    return {name.rsplit("/", 1)[-1]: tuple(r for r in compiled if r.path == name) for name in sources}


def replay(rules: tuple[CompiledRule, ...], events: list[Event]) -> list[dict]:
    """Every record of the engine under test (the rule_engine fixture) for ``events``."""
    return run(rules, events, lateness_ms=DEFAULT_LATENESS_MS)


def describe(rows: list[IncidentRow]) -> str:
    lines = [f"  +{(r.opened - START) // MINUTE}m {r.rule} {r.group} {r.value} vs {r.threshold}" for r in rows]
    return "\n".join(lines) or "  (none)"


@pytest.mark.parametrize("category", list(CASES))
@pytest.mark.usefixtures("rule_engine")
def test_injected_incident_is_detected(category: str) -> None:
    case = CASES[category]
    traffic = Traffic(
        11,
        START,
        case.onset + case.duration + TAIL,
        RATE,
        [Injection(category, case.onset, case.duration, case.target)],
    )
    (truth,) = traffic.truths
    objects = list(traffic.events())
    records = replay(pack()[case.file], [validate_event(obj) for obj in objects])
    rows = incident_rows(records)
    match(rows, traffic.truths, affected_events(traffic.truths, objects))

    caught = [r for r in rows if r.truth is truth and r.rule in case.expected]
    assert caught, f"no {sorted(case.expected)} incident on {truth.dimension}={case.target}; got:\n{describe(rows)}"
    first = min(r.opened for r in caught)
    assert truth.onset_ts <= first <= truth.onset_ts + case.within, describe(caught)
    assert {r.category for r in caught} == {category}
    stray = [r for r in rows if r.truth is None and r.related is None]
    assert not stray, f"incidents on normal traffic:\n{describe(stray)}"
    text = b"\n".join(orjson.dumps(r) for r in records)
    assert not any(raw.encode() in text for raw in RAW_PROMPTS + RAW_OUTPUTS), "raw text in a record"


@functools.cache
def normal_traffic(seed: int = 12) -> tuple[Event, ...]:
    return tuple(validate_event(e) for e in Traffic(seed, START, 3 * HOUR, RATE).events())


def opened_text(records: list[dict]) -> str:
    return "\n".join(f"  {r['ts']} {r['rule']} {r['group']}: {r['why']}" for r in records)


@pytest.mark.parametrize("file", [case.file for case in CASES.values()])
@pytest.mark.usefixtures("rule_engine")
def test_normal_traffic_opens_no_incident(file: str) -> None:
    records = replay(pack()[file], list(normal_traffic()))
    opened = [r for r in records if r["type"] == "incident.opened"]
    assert not opened, opened_text(opened)


def test_every_rule_file_has_a_scenario() -> None:
    # reports.rules counts user reports: rules/reports.user-reports.test.toml and the demo's leak
    assert set(pack()) - {"reports.rules"} == {case.file for case in CASES.values()}
