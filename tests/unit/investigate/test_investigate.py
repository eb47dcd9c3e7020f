"""Investigations on generated logs: the true cause ranks first among decoys, the right
dimension value tops the contributors, and the report hangs together."""

from __future__ import annotations

import dataclasses
import functools

import orjson
import pytest
from corekit import run as run_rules
from firebreak.core import format_ts, parse_ts, validate_event
from firebreak.dsl import load_rules
from firebreak.investigate import IncidentNotFound, Selection, investigate, list_incidents
from firebreak.investigate.markdown import render_markdown
from firebreak.investigate.model import Report
from firebreak.investigate.review import Detection, suggest_monitoring
from firebreak.synthetic import CATEGORIES, RAW_OUTPUTS, RAW_PROMPTS
from investigate_scenarios import Case, build

# the records come from the engine under test (tests/conftest.py)
pytestmark = [pytest.mark.filterwarnings("error"), pytest.mark.usefixtures("rule_engine")]


@functools.cache
def case_and_report(category: str) -> tuple[Case, list[dict], dict]:
    case = build(category)
    records = run_rules(case.rules, case.events)
    truth = case.truth
    opened = [
        i for i in list_incidents(records) if truth.onset_ts - 10 * 60_000 <= parse_ts(i["opened"]) <= truth.end_ts
    ]
    assert opened, f"{category}: the rule opened no incident for the injection"
    report = investigate(case.rules, case.events, Selection(incident_id=opened[0]["incident_id"]), records=records)
    return case, records, report.to_json()


@pytest.mark.parametrize("category", CATEGORIES)
def test_true_cause_ranks_first(category):
    case, _, report = case_and_report(category)
    causes = report["suspected_causes"]
    assert causes, "no cause candidates"
    top = causes[0]
    if category == "adversarial":  # no change causes it: the attack does
        assert top["kind"] == "attack"
        assert top["dimensions"]["user"] in case.truth.users
    else:
        assert top["event_id"] == case.truth.cause_event_id, [(c["event_id"], c["score"], c["why"]) for c in causes]
        assert top["score"] > causes[1]["score"]
    ids = [c["event_id"] for c in causes]
    for decoy in case.decoys:  # both hard decoys were considered, and lost
        assert decoy in ids and ids.index(decoy) > 0
    assert [c["rank"] for c in causes] == list(range(1, len(causes) + 1))
    assert all(a["score"] >= b["score"] for a, b in zip(causes, causes[1:], strict=False))


@pytest.mark.parametrize("category", CATEGORIES)
def test_right_dimension_value_tops_the_contributors(category):
    case, _, report = case_and_report(category)
    top = report["contributors"][0]
    pinned = set(case.truth.scope) | {("user", u) for u in case.truth.users}
    assert (top["dimension"], top["value"]) in pinned, report["contributors"][:3]
    assert top["lift"] > 2 and top["share"] > 0.5
    if category == "quality_degradation":  # the template and the one feature using it: one row
        assert top["same_as"] and all((a["dimension"], a["value"]) in pinned for a in top["same_as"])
    for c in report["contributors"]:
        assert set(c) >= {"dimension", "value", "lift", "share", "baseline_share"}


@pytest.mark.parametrize("category", CATEGORIES)
def test_timeline_and_lags_are_in_event_time_order(category):
    case, _, report = case_and_report(category)
    marks = report["timeline"]
    times = [parse_ts(m["ts"]) for m in marks]
    assert times == sorted(times)
    kinds = [m["kind"] for m in marks]
    assert kinds.index("first_anomalous_event") < kinds.index("detected")
    first = next(m for m in marks if m["kind"] == "first_anomalous_event")
    detected = next(m for m in marks if m["kind"] == "detected")
    # The first anomalous event is the injection's, not background noise long before it.
    assert case.truth.onset_ts - 2 * 60_000 <= parse_ts(first["ts"]) <= parse_ts(detected["ts"])
    assert report["lags"]["time_to_detect_ms"] == detected["lag_ms"] > 0
    if "resolved" in kinds:
        assert report["lags"]["time_to_resolve_ms"] == next(m for m in marks if m["kind"] == "resolved")["lag_ms"]
    if category != "adversarial":
        assert marks[0]["kind"] == "cause" and marks[0]["ref"] == case.truth.cause_event_id
        assert report["lags"]["cause_to_onset_ms"] > 0


def test_containment_is_on_the_timeline_with_time_to_contain():
    _, records, report = case_and_report("hallucination")
    inc = report["incident"]
    commands = [r for r in records if r["type"] == "containment.command" and r["incident_id"] == inc["incident_id"]]
    assert commands
    contained = [m for m in report["timeline"] if m["kind"] == "contained"]
    assert [m["ref"] for m in contained] == [c["command_id"] for c in commands]
    first = parse_ts(next(m for m in report["timeline"] if m["kind"] == "first_anomalous_event")["ts"])
    assert report["lags"]["time_to_contain_ms"] == parse_ts(commands[0]["ts"]) - first
    assert report["review"]["time_to_contain"] != "not contained by the rule"


def test_series_shows_what_the_engine_judged_at_detection():
    """The chart's point at the opening step has the record's value, baseline and threshold."""
    for category in ("hallucination", "cost"):
        _, _, report = case_and_report(category)
        inc = report["incident"]
        point = next(p for p in report["series"]["points"] if p["ts"] == inc["opened"])
        assert point["value"] == pytest.approx(inc["value"], rel=1e-4)
        assert point["threshold"] == pytest.approx(inc["threshold"], rel=1e-4)
        assert point["baseline"] == pytest.approx(inc["baseline"], rel=1e-4)
        before = [p for p in report["series"]["points"] if parse_ts(p["ts"]) < parse_ts(inc["onset"])]
        assert before and all(
            p["value"] is None or p["threshold"] is None or p["value"] <= p["threshold"] for p in before[-3:]
        )


def test_adversarial_signs_name_the_attackers():
    case, _, report = case_and_report("adversarial")
    adv = report["adversarial"]
    assert adv["suspected"]
    assert {u["value"] for u in adv["top_users"]} <= set(case.truth.users)
    assert adv["top_tenants"][0]["value"] == case.truth.value
    for category in ("hallucination", "cost"):
        assert not case_and_report(category)[2]["adversarial"]["suspected"]


@pytest.mark.parametrize("category", CATEGORIES)
def test_report_is_json_and_markdown_without_raw_text(category):
    _, _, report = case_and_report(category)
    data = orjson.dumps(report)
    assert orjson.loads(data) == report
    text = render_markdown(Report.from_json(report))
    for raw in RAW_PROMPTS + RAW_OUTPUTS:
        assert raw.encode() not in data and raw not in text
    for heading in (
        "## Timeline",
        "## Metric",
        "## Suspected causes",
        "## Contributors",
        "## Adversarial signs",
        "## Evidence",
        "## Review",
        "### Impact",
        "### Time to detect",
        "### Time to contain",
        "### Cause candidates",
        "### Follow-ups",
        "### Suggested monitoring change",
    ):
        assert heading in text
    assert report["incident"]["incident_id"] in text
    assert report["evidence"] and all(isinstance(e, str) for e in report["evidence"])


def test_coarse_detection_suggests_grouping_by_the_top_contributor_and_backtests_it():
    case, _, report = case_and_report("adversarial")  # the rule has no `by`
    suggestion = report["review"]["monitoring_suggestion"]
    assert suggestion is not None and suggestion["why"].startswith("coarse")
    top = report["contributors"][0]
    assert (top["dimension"], top["value"]) == ("tenant", case.truth.value)
    assert "by tenant" in suggestion["rule_text"]
    rules, problems = load_rules({"s.rules": suggestion["rule_text"]})
    assert rules and not problems
    backtest = suggestion["backtest"]
    assert backtest["opened"] is not None and backtest["group"] == {"tenant": case.truth.value}
    assert 1 <= backtest["incidents_in_range"] <= 2 * backtest["rule_incidents_in_range"] + 2
    # Grouped by service while a prompt template carries it, and slow: both, checked by replay.
    case, _, report = case_and_report("quality_degradation")
    suggestion = report["review"]["monitoring_suggestion"]
    assert "coarse" in suggestion["why"] and "slow" in suggestion["why"]
    assert "by service, prompt_template" in suggestion["rule_text"]
    assert suggestion["backtest"]["time_to_detect_ms"] < report["lags"]["time_to_detect_ms"]


def test_a_suggestion_that_cannot_fire_is_not_made():
    """Hallucinations concentrate in the new model version, but a group that new has no
    baseline, so `by model_version` could never fire this relative rule: its replay rejects it."""
    _, _, report = case_and_report("hallucination")
    assert report["contributors"][0]["dimension"] == "model_version"
    suggestion = report["review"]["monitoring_suggestion"]
    assert suggestion is None or "model_version" not in suggestion["rule_text"]
    if suggestion is not None:
        assert suggestion["backtest"]["opened"] is not None
        assert suggestion["backtest"]["time_to_detect_ms"] < report["lags"]["time_to_detect_ms"]


def test_no_suggestion_for_a_rule_grouped_right_whose_window_cannot_shrink():
    """Grouped by the top contributor's dimension already: not coarse; a count threshold
    would only see fewer events in a shorter window: no slow suggestion either."""
    case = build("data_leakage")
    rules, _ = load_rules({"r.rules": "rule leak_by_tenant:\n  count(pii) >= 5 over 5m by tenant -> sev2"})
    records = run_rules(rules, case.events)
    first = next(i for i in list_incidents(records) if i["group"] == {"tenant": case.truth.value})
    report = investigate(rules, case.events, Selection(incident_id=first["incident_id"]), records=records).to_json()
    assert (report["contributors"][0]["dimension"], report["contributors"][0]["value"]) == ("tenant", case.truth.value)
    assert report["lags"]["time_to_detect_ms"] > 150_000  # slow by the clock, but not fixable by a window
    assert report["review"]["monitoring_suggestion"] is None


def test_slow_detection_suggests_a_shorter_window_only_when_the_replay_detects_earlier():
    case = build("hallucination")
    text = "rule slow_halluc:\n  rate(hallucination) > 0.05 over 30m by model min 200 events -> sev2"
    rules, _ = load_rules({"r.rules": text})
    group = {"model": case.truth.value}
    opened = next(r for r in run_rules(rules, case.events) if r["type"] == "incident.opened" and r["group"] == group)
    start = case.truth.onset_ts
    ttd = parse_ts(opened["ts"]) - start
    # No contributors: only the window can change.
    detection = Detection(rules[0], group, ttd, start - 30 * 60_000, start, case.truth.end_ts, incidents=1)
    suggestion = suggest_monitoring(detection, [], case.events, 30_000)
    assert suggestion is not None and suggestion.why.startswith("slow")
    assert "over 15m" in suggestion.rule_text
    assert suggestion.backtest.time_to_detect_ms < ttd
    # Claimed detection no earlier than it was: a shorter window is not worth suggesting.
    early = suggest_monitoring(dataclasses.replace(detection, time_to_detect_ms=1), [], case.events, 30_000)
    assert early is None


def test_selection_by_rule_and_group_and_helpful_errors():
    case, records, report = case_and_report("hallucination")
    again = investigate(case.rules, case.events, Selection(rule="halluc"), records=records).to_json()
    assert again["incident"]["incident_id"] == report["incident"]["incident_id"]
    with pytest.raises(IncidentNotFound, match="(?s)no incident of incident inc_nope.*inc_"):
        investigate(case.rules, case.events, Selection(incident_id="inc_nope"), records=records)
    with pytest.raises(IncidentNotFound, match="no incident of rule halluc with model=nope"):
        investigate(case.rules, case.events, Selection(rule="halluc", group={"model": "nope"}), records=records)


def test_same_input_same_report():
    case, records, report = case_and_report("cost")
    again = investigate(case.rules, case.events, Selection(incident_id=report["incident"]["incident_id"])).to_json()
    assert orjson.dumps(again) == orjson.dumps(report)
    assert format_ts(parse_ts(again["incident"]["opened"])) == again["incident"]["opened"]


def test_a_change_after_which_nothing_happened_loses_half_its_match():
    """A change on the true target an hour before the anomaly names the right model, but the
    model's hallucination rate did not move after it: its shift is ~0, the true cause's high."""
    case = build("hallucination")
    quiet = validate_event(
        {
            "event_id": "quiet-1",
            "ts": format_ts(case.truth.onset_ts - 60 * 60_000),
            "type": "change",
            "kind": "model_update",
            "model": case.truth.value,
            "description": "same weights, new serving image",
        }
    )
    events = sorted([*case.events, quiet], key=lambda e: e.ts)
    records = run_rules(case.rules, events)
    first = next(i for i in list_incidents(records) if parse_ts(i["opened"]) >= case.truth.onset_ts - 600_000)
    report = investigate(case.rules, events, Selection(incident_id=first["incident_id"]), records=records).to_json()
    by_id = {c["event_id"]: c for c in report["suspected_causes"]}
    true, old = by_id[case.truth.cause_event_id], by_id["quiet-1"]
    assert true["rank"] == 1 and true["shift"] > 0.6
    assert old["shift"] < 0.3 and "barely rose" in old["why"]
    assert old["score"] < true["score"] - 0.3


def test_an_attack_elsewhere_at_the_same_time_is_not_the_cause():
    """A prompt-injection wave on one tenant starts 10 minutes into another tenant's PII leak:
    the attack is suspected (signs are there) but carries none of this anomaly; the prompt
    change that caused the leak ranks first."""
    from firebreak.synthetic import MINUTE, Injection, Traffic

    traffic = Traffic(
        3,
        1_767_225_600_000,
        180 * MINUTE,
        6.0,
        [
            Injection("data_leakage", 90 * MINUTE, target="acme"),
            Injection("adversarial", 100 * MINUTE, target="globex"),
        ],
    )
    leak = traffic.truths[0]
    events = [validate_event(e) for e in traffic.events()]
    rules, _ = load_rules({"leak.rules": "rule leak:\n  rate(pii) > 0.005 over 10m by tenant min 300 events -> sev2"})
    records = run_rules(rules, events)
    first = next(i for i in list_incidents(records) if i["group"] == {"tenant": "acme"})
    report = investigate(rules, events, Selection(incident_id=first["incident_id"]), records=records).to_json()
    causes = report["suspected_causes"]
    assert causes[0]["event_id"] == leak.cause_event_id
    attack = next(c for c in causes if c["kind"] == "attack")
    assert attack["match"] == 0 and attack["rank"] > 1
    assert report["adversarial"]["suspected"] and report["adversarial"]["anomaly_share_of_attackers"] == 0
