"""Issue 32: a resolved incident must not hide its own recurrence.

After an incident resolves, the baseline span right before the window is made of the
incident's own windows; unless they are kept out of the baseline, every relative rule is
blind to a recurrence for one baseline span. On the engine under test (the rule_engine
fixture), across snapshots; one test compares both engines' records and state (differential).
"""

import orjson
import pytest
from corekit import HOUR, MIN, SEC, T0, driver, event, of_type, offset, restore, rules, run
from firebreak.core import Engine
from firebreak.core.events import format_ts
from firebreak.native import NativeEngine

# the design's own rule (README, docs/dsl.md)
CANONICAL = 'rate(hallucination) > 3x baseline over 10m by model -> sev2 contain fallback(model="small-safe")'

# One call every 2s (300 per window). A healthy model flags every 50th answer (2%); during
# a spike every 5th (20%). The first spike is over at 11:11, so its incident resolves at
# 11:29 (the window is back under the limit from 11:19, and resolution waits one window);
# it comes back at 11:35, six minutes later (a fallback released, the bad model serving
# again); the same spike once more four hours after the first.
FIRST, RECURRENCE, LATER = (
    (10 * HOUR + 28 * MIN, 11 * HOUR + 11 * MIN),
    (11 * HOUR + 35 * MIN, 12 * HOUR + 5 * MIN),
    (14 * HOUR + 28 * MIN, 14 * HOUR + 59 * MIN),
)
SPIKES = (FIRST, RECURRENCE, LATER)


def traffic(end: int = 15 * HOUR + 30 * MIN, model: str = "gpt-4o") -> list:
    out = []
    for i, at in enumerate(range(8 * HOUR, end, 2 * SEC)):
        spike = any(a <= at < b for a, b in SPIKES)
        hit = i % 5 == 0 if spike else i % 50 == 0
        out.append(event(f"{model}-{i}", at, model=model, user=f"u{i % 97}", flags={"hallucination": hit}))
    return out


def fed(compiled, events) -> tuple:
    """The engine under test fed ``events`` (no end of input), and its records."""
    target = driver(compiled)
    return target, target.feed_events(events).records


def openings(records) -> list[dict]:
    """Incidents opened, or reopened: a recurrence within the rule's cool-down of the resolve
    reopens the same incident (flapping, docs/response.md) — paged again either way."""
    return [r for r in records if r["type"] in ("incident.opened", "incident.reopened")]


def opened(records) -> list[int]:
    return [offset(r) for r in openings(records)]


@pytest.mark.usefixtures("rule_engine")
def test_the_recurrence_after_a_resolve_opens_an_incident_as_fast_as_the_first():
    records = run(CANONICAL, traffic())
    resolved = [offset(r) for r in of_type(records, "incident.resolved")]
    assert resolved[0] == 11 * HOUR + 29 * MIN  # six minutes before the recurrence
    starts = opened(records)
    assert len(starts) == 3, [format_ts(T0 + s) for s in starts]
    ttd = [at - spike[0] for at, spike in zip(starts, SPIKES, strict=True)]
    assert ttd == [3 * MIN] * 3
    # the recurrence is judged against the baseline of before the first spike
    second = openings(records)[1]
    assert second["baseline"] == 0.02 and second["threshold"] == 0.06


@pytest.mark.usefixtures("rule_engine")
def test_the_starter_rule_catches_the_recurrence():
    from pathlib import Path

    text = (Path(__file__).resolve().parents[3] / "rules" / "hallucination.rules").read_text()
    pack = tuple(r for r in rules(text) if r.name == "hallucination_spike_by_model")
    records = run(pack, traffic())
    starts = opened(records)
    assert len(starts) == 3, [format_ts(T0 + s) for s in starts]
    ttd = [at - spike[0] for at, spike in zip(starts, SPIKES, strict=True)]
    assert ttd[1] == ttd[0] and ttd[2] == ttd[0]
    # the significance test's reference is K × the baseline: the first spike's, as the first had
    first, second, _ = (r["significance"] for r in openings(records))
    assert second["reference"] == "baseline" and second["expected"] == first["expected"] == 18


@pytest.mark.usefixtures("rule_engine")
def test_both_engines_give_the_same_records_and_state_across_snapshots():
    """Differential: both engines, whatever the engine under test, byte for byte, and each
    restores the other's snapshot."""
    compiled = rules(CANONICAL)
    events = traffic() + traffic(model="claude")
    events.sort(key=lambda e: (e.ts, e.event_id))
    expected = run(compiled, events)
    # cut just after the first resolve, while the incident's span is kept out of the baseline
    cut = next(i for i, e in enumerate(events) if e.ts >= T0 + 11 * HOUR + 31 * MIN)
    python, native = Engine(compiled), NativeEngine(compiled)
    head = [r for e in events[:cut] for r in python.process(e)]
    assert native.feed_events(events[:cut]).records == head
    snap_python, snap_native = python.snapshot(), native.snapshot()
    assert orjson.loads(orjson.dumps(snap_native)) == orjson.loads(orjson.dumps(snap_python))
    group = next(g for g in snap_python["rules"][compiled[0].name]["groups"] if g["key"] == ["gpt-4o"])
    assert group["excluded"] == [[T0 + 10 * HOUR + 21 * MIN, T0 + 11 * HOUR + 29 * MIN, 0.02]]
    for restored in (NativeEngine.restore(compiled, snap_python), NativeEngine.restore(compiled, snap_native)):
        assert head + restored.feed_events(events[cut:]).records + restored.finish() == expected
    back = Engine.restore(compiled, orjson.loads(orjson.dumps(snap_native)))
    assert head + [r for e in events[cut:] for r in back.process(e)] + back.finish() == expected


@pytest.mark.usefixtures("rule_engine")
def test_a_span_the_baseline_can_no_longer_see_is_dropped():
    compiled = rules(CANONICAL)
    events = traffic(end=13 * HOUR + 40 * MIN)  # the last incident resolves by 12:2x
    target, _ = fed(compiled, events)
    (group,) = target.snapshot()["rules"][compiled[0].name]["groups"]
    assert "excluded" not in group  # 13:39 − 70m is past the end of every span kept out


@pytest.mark.usefixtures("rule_engine")
def test_a_snapshot_of_version_1_restores_with_nothing_kept_out():
    compiled = rules(CANONICAL)
    events = traffic(end=11 * HOUR + 31 * MIN)
    engine, _ = fed(compiled, events)
    snap = orjson.loads(orjson.dumps(engine.snapshot()))
    assert "excluded" in snap["rules"][compiled[0].name]["groups"][0]
    snap["version"] = 1
    for group in snap["rules"][compiled[0].name]["groups"]:
        group.pop("excluded", None)
    assert "excluded" not in restore(compiled, snap).snapshot()["rules"][compiled[0].name]["groups"][0]
    with pytest.raises(ValueError, match="unsupported snapshot version 99"):
        restore(compiled, {**snap, "version": 99})


@pytest.mark.usefixtures("rule_engine")
def test_a_population_reference_is_not_inflated_by_the_groups_own_incident():
    # The reference is the rest of the population in the same window: the group's own events
    # are taken out, so nothing of its incident stays in it after the resolve.
    compiled = rules("rate(prompt_injection) > 5x population over 10m by user min 5 events -> sev2")
    events = []
    for user in ("attacker", "u1", "u2", "u3"):
        for i, at in enumerate(range(8 * HOUR, 13 * HOUR, 10 * SEC)):
            spike = user == "attacker" and any(a <= at < b for a, b in SPIKES)
            hit = i % 3 == 0 if spike else i % 50 == 0
            events.append(event(f"{user}-{i}", at, user=user, flags={"prompt_injection": hit}))
    events.sort(key=lambda e: (e.ts, e.event_id))
    records = run(compiled, events)
    starts = opened(records)
    assert [r["group"] for r in openings(records)] == [{"user": "attacker"}] * 2
    assert starts[1] - RECURRENCE[0] == starts[0] - FIRST[0]
    assert offset(of_type(records, "incident.resolved")[0]) < RECURRENCE[0]


@pytest.mark.usefixtures("rule_engine")
def test_the_investigation_chart_draws_the_baseline_the_engine_used_after_a_resolve(monkeypatch):
    from firebreak.core import engine as core_engine
    from firebreak.core.events import parse_ts
    from firebreak.investigate import Selection, investigate

    compiled = rules(CANONICAL)
    events = traffic(end=12 * HOUR + 30 * MIN)
    used: dict[int, float | None] = {}  # step → the baseline the engine judged gpt-4o against
    baseline = core_engine.Engine._baseline

    def spy(self, state, group, at, *rest):
        reference = baseline(self, state, group, at, *rest)
        used[at] = reference[0]  # (value, counts)
        return reference

    monkeypatch.setattr(core_engine.Engine, "_baseline", spy)
    # deliberately the Python core, in either pass: the spy reads its baselines
    records = run(compiled, events, engine="python")
    monkeypatch.undo()
    first = of_type(records, "incident.opened")[0]["incident_id"]
    report = investigate(compiled, events, Selection(incident_id=first), records=records).to_json()
    resolved = T0 + 11 * HOUR + 29 * MIN
    after = [p for p in report["series"]["points"] if parse_ts(p["ts"]) > resolved]
    assert after, "the chart ends at the resolve"
    checked = 0
    for point in after:
        at = parse_ts(point["ts"])
        if at in used:
            assert point["baseline"] == pytest.approx(used[at], rel=1e-5), point
            checked += 1
    assert checked >= 5
    assert all(p["baseline"] == 0.02 for p in after)  # the baseline of before the incident


@pytest.mark.usefixtures("rule_engine")
def test_an_incident_opening_within_a_window_of_the_last_one_joins_its_span():
    compiled = rules(CANONICAL)
    events = traffic(end=12 * HOUR + 40 * MIN)
    target, records = fed(compiled, events)
    resolved = [T0 + offset(r) for r in of_type(records, "incident.resolved")]
    assert len(resolved) == 2
    (group,) = target.snapshot()["rules"][compiled[0].name]["groups"]
    # the recurrence's span [11:28, ...) starts before the first one's end (11:29): one span,
    # with the baseline of before the first spike
    assert group["excluded"] == [[T0 + 10 * HOUR + 21 * MIN, resolved[1], 0.02]]


FOR_RULE = "rate(hallucination) > 3x baseline over 10m by model for 15m -> sev2"


@pytest.mark.usefixtures("rule_engine")
def test_a_pending_condition_that_lapses_keeps_its_windows_out_of_the_baseline_too():
    compiled = rules(FOR_RULE)
    events = []
    for i, at in enumerate(range(8 * HOUR, 10 * HOUR + 45 * MIN, 2 * SEC)):  # a 4-minute blip at 10:28
        hit = i % 5 == 0 if 10 * HOUR + 28 * MIN <= at < 10 * HOUR + 32 * MIN else i % 50 == 0
        events.append(event(f"e{i}", at, model="gpt-4o", flags={"hallucination": hit}))
    target, records = fed(compiled, events)
    assert records == []  # the blip holds for less than 15m: pending, never open
    (group,) = target.snapshot()["rules"][compiled[0].name]["groups"]
    (span,) = group["excluded"]
    assert span[0] == T0 + 10 * HOUR + 21 * MIN  # onset 10:31 − the window
    assert T0 + 10 * HOUR + 32 * MIN <= span[1] <= T0 + 10 * HOUR + 45 * MIN and span[2] == 0.02
