"""Flapping: an incident of the same rule and group that would open again within the cool-down
of its resolution reopens (incident.reopened, same id, containment issued again), in both
engines alike and across snapshots."""

from __future__ import annotations

import dataclasses

import orjson
import pytest
from corekit import MIN, SEC, driver, event, of_type, offset, rules, run
from firebreak.core import Engine
from firebreak.native import NativeEngine, available

# Every test here evaluates rules: on the engine under test (tests/conftest.py).
pytestmark = pytest.mark.usefixtures("rule_engine")

RULE = "rule leak: count(pii) >= 3 over 5m by tenant -> sev2 contain disable_feature contain audit hold for 2h"


def bursts(*starts_min: int, tenant: str = "acme"):
    """Four PII answers a minute apart from each start, and quiet traffic every 30 s to 3h."""
    out = [event(f"q{i}", i * 30 * SEC, tenant=tenant, flags={"pii": False}) for i in range(360)]
    for start in starts_min:
        out += [event(f"p{start}-{i}", (start + i) * MIN + 1, tenant=tenant, flags={"pii": True}) for i in range(4)]
    return sorted(out, key=lambda e: (e.ts, e.event_id))


def dump(records) -> bytes:
    return b"\n".join(orjson.dumps(r) for r in records)


def test_an_incident_that_fires_again_within_the_cool_down_reopens():
    # Fires at ~12m, resolves ~10m after its last PII answer, fires again at 40m: 15 minutes later.
    records = run(RULE, bursts(10, 40))
    [opened] = of_type(records, "incident.opened")
    [reopened] = of_type(records, "incident.reopened")
    resolved = of_type(records, "incident.resolved")
    assert len(resolved) == 2
    assert {r["incident_id"] for r in (reopened, *resolved)} == {opened["incident_id"]}
    assert offset(resolved[0]) < offset(reopened) < offset(resolved[1])
    assert reopened["resolved_at"] == resolved[0]["ts"] and reopened["opened_at"] == opened["ts"]
    assert reopened["response"]["page"] is True and "the same incident reopens" in reopened["why"]
    # Containment: the released command is issued again under a new id; the held one, still in
    # force (2h), is neither released nor issued twice.
    commands = of_type(records, "containment.command")
    assert [c["action"] for c in commands] == ["disable_feature", "audit", "disable_feature"]
    assert commands[2]["command_id"] != commands[0]["command_id"] and commands[2]["ts"] == reopened["ts"]
    released = of_type(records, "containment.release")
    assert [r["command_id"] for r in released] == [commands[0]["command_id"], commands[2]["command_id"]]
    # The resolution after the reopening spans the whole incident.
    assert resolved[1]["opened_at"] == opened["ts"]


def test_after_the_cool_down_a_new_incident_opens():
    records = run(RULE, bursts(10, 100))  # resolved at ~23m, fires again ~77 minutes later
    opened = of_type(records, "incident.opened")
    assert len(opened) == 2 and opened[0]["incident_id"] != opened[1]["incident_id"]
    assert of_type(records, "incident.reopened") == []


def test_the_cool_down_comes_from_the_policy_and_zero_turns_it_off():
    short = rules(RULE, policy='[grouping]\nreopen_within = "10m"\n')
    assert short[0].reopen_within_ms == 10 * MIN
    assert len(of_type(run(short, bursts(10, 40)), "incident.opened")) == 2  # 15 minutes: past 10m
    off = (dataclasses.replace(rules(RULE)[0], reopen_within_ms=0),)
    assert len(of_type(run(off, bursts(10, 20)), "incident.opened")) == 2


def test_groups_and_rules_do_not_reopen_each_others_incidents():
    two = rules(RULE + "\nrule leak2: count(pii) >= 3 over 5m by tenant -> sev3")
    events = sorted(bursts(10) + bursts(40, tenant="globex"), key=lambda e: (e.ts, e.event_id))
    records = run(two, events)
    assert of_type(records, "incident.reopened") == []
    assert len(of_type(records, "incident.opened")) == 4  # two rules × two tenants


def test_the_engine_forgets_after_the_cool_down():
    engine = driver(rules(RULE))
    engine.feed_events(bursts(10, 100))
    engine.finish()
    # resolved at ~23m and ~113m: the first one's hour had passed when the second resolved
    held = engine.snapshot()  # the core's layout, whichever engine holds the state
    [kept] = held["cooldowns"]
    [group] = [g for g in held["rules"]["leak"]["groups"] if g["key"] == ["acme"]]
    assert 110 * MIN < kept[2] - group["first_seen"] < 120 * MIN


@pytest.mark.skipif(not available(), reason="the native engine is not built")
def test_both_engines_reopen_alike_and_carry_the_cool_down_across_snapshots():
    """Differential: both engines, whatever the engine under test, and each restores the
    other's snapshot."""
    compiled = rules(RULE)
    events = bursts(10, 40, 60)
    expected = run(compiled, events)
    assert len(of_type(expected, "incident.reopened")) == 2
    assert dump(run(compiled, events, engine="native")) == dump(expected)
    # Cut after the first resolution, before the reopening: the cool-down is in the snapshot.
    cut = next(i for i, e in enumerate(events) if e.ts - events[0].ts > 30 * MIN)
    python, native = Engine(compiled), NativeEngine(compiled)
    head = [r for e in events[:cut] for r in python.process(e)]
    assert dump(native.feed_events(events[:cut]).records) == dump(head)
    assert of_type(head, "incident.resolved") and not of_type(head, "incident.reopened")
    snap_python, snap_native = python.snapshot(), native.snapshot()
    assert snap_python["cooldowns"] and orjson.loads(orjson.dumps(snap_native)) == snap_python
    assert orjson.loads(native.snapshot_json()) == snap_python
    for restored in (NativeEngine.restore(compiled, snap_python), NativeEngine.restore(compiled, snap_native)):
        tail = restored.feed_events(events[cut:]).records + restored.finish()
        assert dump(head + tail) == dump(expected)
    back = Engine.restore(compiled, orjson.loads(native.snapshot_json()))
    tail = [r for e in events[cut:] for r in back.process(e)] + back.finish()
    assert dump(head + tail) == dump(expected)


def test_a_rule_or_its_category_may_have_its_own_cool_down():
    # [rule.R] reopen_within, else [category.C], else [grouping]: a budget ticket that fires on a
    # batch account's every burst reopens for a day instead of opening one ticket per burst
    policy = '[grouping]\nreopen_within = "10m"\n\n[rule.leak]\nreopen_within = "1d"\n'
    (own,) = rules(RULE, policy=policy)
    assert own.reopen_within_ms == 24 * 60 * MIN
    records = run((own,), bursts(10, 100))  # ~77 minutes apart: past 1h and 10m, within a day
    assert len(of_type(records, "incident.opened")) == 1 and len(of_type(records, "incident.reopened")) == 1
    by_category = '[grouping]\nreopen_within = "10m"\n\n[category.data_leakage]\nreopen_within = "3h"\n'
    (cat,) = rules(RULE + " category data_leakage", policy=by_category)
    assert cat.reopen_within_ms == 3 * 60 * MIN
    both = by_category + '\n[rule.leak]\nreopen_within = "0s"\n'  # the rule's own wins, 0: never
    (zero,) = rules(RULE + " category data_leakage", policy=both)
    assert zero.reopen_within_ms == 0
    assert len(of_type(run((zero,), bursts(10, 20)), "incident.opened")) == 2
