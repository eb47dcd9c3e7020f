"""Incident lifecycle: open, for, min events, hysteresis, sustained spikes, escalation, containment."""

from __future__ import annotations

import pytest
from corekit import HOUR, MIN, SEC, event, merged, of_type, offset, run, steady

# Every test here evaluates rules: on the engine under test (tests/conftest.py).
pytestmark = pytest.mark.usefixtures("rule_engine")

HALLUCINATION_SPIKE = 'rate(hallucination) > 3x baseline over 10m by model -> sev3 contain fallback(model="safe")'


def traffic(start, end, every, nth, prefix, model="m1", users=None):
    for e in steady(start, end, every, prefix=prefix, flagged=["hallucination"], every_nth=nth, model=model):
        if users:
            e.data["user"] = f"u{int(e.event_id[len(prefix) :]) % users}"
        yield e


def test_sustained_spike_is_one_incident_judged_against_the_baseline_before_it():
    """A 3h spike, three times longer than the 1h baseline span: without freezing the
    baseline at onset the spike would become its own baseline and resolve mid-spike."""
    base = traffic(0, 6 * HOUR, 5 * SEC, 50, "b")  # 2%
    spike = traffic(2 * HOUR, 5 * HOUR, 5 * SEC, 3, "s")  # +33% on doubled traffic
    records = run(HALLUCINATION_SPIKE, merged(base, spike))
    opened = of_type(records, "incident.opened")
    resolved = of_type(records, "incident.resolved")
    assert len(opened) == 1 and len(resolved) == 1
    assert 2 * HOUR < offset(opened[0]) <= 2 * HOUR + 5 * MIN
    # Resolves only after the spike: window clears (10m) + hysteresis (10m) after 5h.
    assert 5 * HOUR + 10 * MIN <= offset(resolved[0]) <= 5 * HOUR + 25 * MIN
    assert resolved[0]["baseline"] == opened[0]["baseline"]  # judged against the pre-onset baseline


def test_flapping_input_stays_one_incident():
    # pii every 90s: true for a minute, false for 30s, again and again.
    pii = [event(f"p{i}", i * 90 * SEC, flags={"pii": True}) for i in range(20)]
    tail = steady(0, 45 * MIN, 10 * SEC, prefix="t", flagged=["pii"])
    records = run("count(pii) >= 1 over 1m -> sev2", merged(pii, tail))
    assert len(of_type(records, "incident.opened")) == 1
    [resolved] = of_type(records, "incident.resolved")
    # Last pii at 28m30s, out of the window at 29m35s; resolved a full window (1m) later.
    assert offset(resolved) == 30 * MIN + 35 * SEC


def test_for_delays_opening_until_the_condition_has_held():
    pii = [event(f"p{i}", i * 10 * SEC, flags={"pii": True}) for i in range(30)]  # 0..4m50s
    records = run("count(pii) >= 1 over 1m for 2m -> sev2", merged(pii, steady(0, 10 * MIN, MIN, prefix="t")))
    [opened] = of_type(records, "incident.opened")
    assert offset(opened) == 5 * SEC + 2 * MIN  # condition first true at 5s


def test_for_ignores_a_blip_shorter_than_it():
    pii = [event(f"p{i}", i * 10 * SEC, flags={"pii": True}) for i in range(3)]  # 0..20s
    records = run("count(pii) >= 1 over 1m for 2m -> sev2", merged(pii, steady(0, 10 * MIN, MIN, prefix="t")))
    assert records == []


def test_min_events_gates_rates():
    def stream(n):
        return [event(f"e{i}", i * SEC, flags={"jailbreak": True}) for i in range(n)]

    rule = "rate(jailbreak) > 0.5 over 10m min 50 events -> sev2"
    assert of_type(run(rule, stream(40)), "incident.opened") == []
    assert len(of_type(run(rule, stream(60)), "incident.opened")) == 1


def test_default_min_events_is_20():
    rule = "rate(jailbreak) > 0.5 over 10m -> sev2"
    assert run(rule, [event(f"e{i}", i * SEC, flags={"jailbreak": True}) for i in range(19)]) == []
    assert run(rule, [event(f"e{i}", i * SEC, flags={"jailbreak": True}) for i in range(20)]) != []


def test_data_leakage_is_never_below_sev2():
    records = run("count(pii) >= 1 over 1m -> sev4", [event("p", 0, flags={"pii": True})])
    opened, escalated = of_type(records, "incident.opened"), of_type(records, "incident.escalated")
    assert opened[0]["severity"] == "sev4" and opened[0]["category"] == "data_leakage"
    summary = [(r["severity"], r["previous_severity"], r["reason"]) for r in escalated]
    assert summary == [("sev2", "sev4", "sensitivity")]
    assert "never below sev2" in escalated[0]["why"]


def test_impact_escalation_by_users():
    rule = "count(hallucination) > 5 over 10m -> sev3 escalate sev1 if users > 50"
    few = [event(f"e{i}", i * SEC, user=f"u{i % 10}", flags={"hallucination": True}) for i in range(60)]
    many = [event(f"e{i}", i * SEC, user=f"u{i}", flags={"hallucination": True}) for i in range(60)]
    assert of_type(run(rule, few), "incident.escalated") == []
    [escalated] = of_type(run(rule, many), "incident.escalated")
    assert escalated["severity"] == "sev1" and escalated["reason"] == "impact"
    assert escalated["users_affected"] == 60 and "60 users affected > 50" in escalated["why"]


def test_default_impact_escalation_is_one_level_over_100_users():
    rule = "count(hallucination) > 5 over 10m -> sev3"
    events = [event(f"e{i}", i * SEC, user=f"u{i}", flags={"hallucination": True}) for i in range(150)]
    [escalated] = of_type(run(rule, events), "incident.escalated")
    assert (escalated["previous_severity"], escalated["severity"]) == ("sev3", "sev2")


def test_urgency_escalates_a_worsening_incident_once():
    rule = "rate(hallucination) > 0.05 over 10m -> sev3"
    ramp = []
    for minute in range(90):  # flagged share climbs from 6% to ~96%
        share = 0.06 + minute * 0.01
        for j in range(20):
            ramp.append(event(f"r{minute}-{j}", minute * MIN + j * 3 * SEC, flags={"hallucination": j < share * 20}))
    escalated = of_type(run(rule, ramp), "incident.escalated")
    assert [r["reason"] for r in escalated] == ["urgency"]
    assert "still worsening" in escalated[0]["why"]


def test_a_plateau_is_not_urgent():
    rule = "rate(hallucination) > 0.05 over 10m -> sev3"
    events = traffic(0, 3 * HOUR, 5 * SEC, 3, "s")  # a steady 33%
    records = run(rule, events)
    assert len(of_type(records, "incident.opened")) == 1
    assert of_type(records, "incident.escalated") == []


def test_containment_command_renewal_and_release():
    base = traffic(0, 6 * HOUR, 5 * SEC, 50, "b")
    spike = traffic(2 * HOUR, 5 * HOUR, 5 * SEC, 3, "s")
    records = run(HALLUCINATION_SPIKE, merged(base, spike))
    [command] = of_type(records, "containment.command")
    [opened] = of_type(records, "incident.opened")
    assert command["incident_id"] == opened["incident_id"]
    assert command["action"] == "fallback" and command["params"] == {"model": "safe"}
    assert command["target"] == {"model": "m1"} and command["ts"] == opened["ts"]
    renewed = of_type(records, "containment.renewed")
    assert renewed and all(r["command_id"] == command["command_id"] for r in renewed)
    [release] = of_type(records, "containment.release")
    assert release["command_id"] == command["command_id"]
    assert release["ts"] == of_type(records, "incident.resolved")[0]["ts"]


def test_held_containment_is_not_released_and_for_sets_its_expiry():
    rule = "count(pii) >= 1 over 1m -> sev2 contain disable_feature hold contain rate_limit(rps=5) for 10m"
    records = run(rule, merged([event("p", 0, flags={"pii": True})], steady(0, 10 * MIN, MIN, prefix="t")))
    commands = {r["action"]: r for r in of_type(records, "containment.command")}
    assert commands["disable_feature"]["hold"] is True and commands["disable_feature"]["expires_at"] is None
    assert commands["rate_limit"]["expires_at"] == "2026-01-01T00:10:05Z"  # opened at 5s, + 10m
    [release] = of_type(records, "containment.release")
    assert release["action"] == "rate_limit"
    [resolved] = of_type(records, "incident.resolved")
    assert resolved["held_commands"] == [commands["disable_feature"]["command_id"]]


def test_incident_record_contract():
    events = [
        event(
            f"e{i}",
            i * 500,
            user=f"u{i % 3}",
            model="m",
            prompt="SECRET PROMPT",
            output="SECRET OUT",
            flags={"pii": i % 2 == 0},
        )
        for i in range(10)
    ]
    records = run('count(pii) >= 1 over 1m by model -> sev2 notify "#oncall"', events)
    opened = of_type(records, "incident.opened")[0]
    assert list(opened) == [
        "type",
        "incident_id",
        "rule",
        "category",
        "severity",
        "group",
        "ts",
        "onset",
        "window",
        "value",
        "baseline",
        "threshold",
        "events",
        "sample",
        "users_affected",
        "evidence",
        "notify",
        "why",
        "response",
        "evidence_scope",  # its group (model) lacks its category's case dimensions (tenant, service)
    ]
    assert opened["evidence_scope"] == {}  # the events name no tenant or service
    assert opened["response"] == {"team": "on-call", "page": True, "update_every_ms": 3_600_000}  # sev2's default
    assert opened["incident_id"].startswith("inc_") and opened["group"] == {"model": "m"}
    assert opened["ts"] == "2026-01-01T00:00:05Z"  # the first 5s step boundary of a 1m window
    assert opened["window"] == {"start": "2025-12-31T23:59:05Z", "end": "2026-01-01T00:00:05Z"}
    assert opened["evidence"] == ["e0", "e2", "e4", "e6", "e8"]
    assert opened["notify"] == ["#oncall"] and opened["baseline"] is None
    assert opened["users_affected"] == 3 and opened["events"] == 5 and opened["sample"] == 10
    assert "count(pii) was 5 over the last 1m for model=m" in opened["why"]
    assert "SECRET" not in repr(records)


def test_repeats_update_the_open_incident_instead_of_opening_new_ones():
    pii = [event(f"p{i}", i * 5 * SEC, flags={"pii": True}) for i in range(100)]
    records = run("count(pii) >= 1 over 1m -> sev2", pii)
    assert len(of_type(records, "incident.opened")) == 1


def test_change_events_are_not_inference_traffic():
    changes = [event(f"c{i}", i * SEC, type="change", kind="deploy", flags={"pii": True}) for i in range(5)]
    assert run("count() >= 1 over 1m -> sev3", changes) == []


def test_reload_keeps_unchanged_rules_and_closes_incidents_of_removed_ones():
    from corekit import driver, restore, rules
    from firebreak.core import Engine
    from firebreak.core.engine import reload

    old = rules(
        "rule leak:\n  count(pii) >= 1 over 1m -> sev2 contain disable_feature\n"
        "rule loud:\n  count() >= 1 over 1m -> sev3"
    )
    new = rules("rule loud:\n  count() >= 1 over 1m -> sev3")
    engine = driver(old, lateness_ms=0)
    records = engine.feed_events([event(f"p{i}", i * SEC, flags={"pii": True}) for i in range(30)]).records
    assert {r["rule"] for r in of_type(records, "incident.opened")} == {"leak", "loud"}
    # as the worker's shard reloads (live/shard.py set_rules): the closing records are the
    # Python core's, from the engine's snapshot; the engine goes on from the reloaded state
    reloaded, closing = reload(Engine.restore(old, engine.snapshot()), new)
    fresh = restore(new, reloaded.snapshot())
    assert [(r["type"], r["rule"]) for r in closing] == [("incident.resolved", "leak"), ("containment.release", "leak")]
    assert "was removed by a rules reload" in closing[0]["why"]
    assert [i["rule"] for i in fresh.open_incidents()] == ["loud"]  # kept, not reopened
    more = fresh.feed_events([event(f"q{i}", 30 * SEC + i * SEC) for i in range(5)]).records
    assert of_type(more, "incident.opened") == []
