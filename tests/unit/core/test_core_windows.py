"""Aggregations and window edges: what the window holds at each evaluation step."""

from __future__ import annotations

import pytest
from corekit import MIN, SEC, event, of_type, offset, run, steady

# Every test here evaluates rules: on the engine under test (tests/conftest.py).
pytestmark = pytest.mark.usefixtures("rule_engine")

VALUES = [10, 20, 30, 40, 1000]
USERS = ["u1", "u2", "u2", "u3", "u4"]


def five_events():
    for i, (value, user) in enumerate(zip(VALUES, USERS, strict=True)):
        yield event(f"e{i}", i * SEC, latency_ms=value, user=user, flags={"pii": i in (1, 3)})


@pytest.mark.parametrize(
    ("metric", "expected"),
    [
        ("count()", 5),
        ("count(pii)", 2),
        ("rate(pii)", 0.4),
        ("sum(latency_ms)", 1100),
        ("avg(latency_ms)", 220),
        ("min(latency_ms)", 10),
        ("max(latency_ms)", 1000),
        ("distinct(user)", 4),
    ],
)
def test_exact_aggregations(metric, expected):
    records = run(f"{metric} > 0 over 10m min 1 events -> sev3", five_events())
    [opened] = of_type(records, "incident.opened")
    assert opened["value"] == expected
    assert offset(opened) == 1 * MIN  # all five sit in the first step; its boundary is 1m


@pytest.mark.parametrize(("metric", "expected"), [("p50(latency_ms)", 30), ("p99(latency_ms)", 1000)])
def test_percentiles_within_one_percent(metric, expected):
    [opened] = of_type(run(f"{metric} > 0 over 10m min 1 events -> sev3", five_events()), "incident.opened")
    assert opened["value"] == pytest.approx(expected, rel=0.01)


def test_numeric_functions_skip_missing_and_non_numeric_values():
    events = [
        event("a", 0, latency_ms=100),
        event("b", SEC, latency_ms="slow"),
        event("c", 2 * SEC),
        event("d", 3 * SEC, latency_ms=True),
    ]
    [opened] = of_type(run("avg(latency_ms) > 0 over 10m min 1 events -> sev3", events), "incident.opened")
    assert opened["value"] == 100 and opened["sample"] == 1


def test_where_filters_events_before_aggregation():
    events = [event("a", 0, model="x", flags={"pii": True}), event("b", SEC, model="y", flags={"pii": True})]
    records = run('count(pii) >= 2 over 1m where model == "x" -> sev3', events)
    assert of_type(records, "incident.opened") == []


def test_groups_are_separate_and_reported_in_order():
    events = [event(f"e{i}", i * SEC, model=m, flags={"pii": True}) for i, m in enumerate(["b", "a", "b"])]
    opened = of_type(run("count(pii) >= 1 over 1m by model -> sev3", events), "incident.opened")
    assert [r["group"] for r in opened] == [{"model": "a"}, {"model": "b"}]
    assert [r["events"] for r in opened] == [1, 2]


def test_missing_group_field_is_its_own_group():
    events = [event("a", 0, flags={"pii": True}), event("b", SEC, model="m", flags={"pii": True})]
    opened = of_type(run("count(pii) >= 1 over 1m by model -> sev3", events), "incident.opened")
    assert [r["group"] for r in opened] == [{"model": None}, {"model": "m"}]


def trailing(until_ms: int):
    """Unflagged traffic that keeps event time moving."""
    return steady(0, until_ms, MIN, prefix="t", flagged=["pii"])


def test_window_start_is_inclusive_and_end_exclusive():
    # A pii event at exactly 1m belongs to the step [1m, 2m): the boundary at 1m cannot see it.
    events = sorted([event("p", 1 * MIN, flags={"pii": True}), *trailing(40 * MIN)], key=lambda e: e.ts)
    records = run("count(pii) >= 1 over 10m -> sev3", events)
    [opened] = of_type(records, "incident.opened")
    [resolved] = of_type(records, "incident.resolved")
    assert offset(opened) == 2 * MIN
    # Still in the window [2m, 12m) at 12m... no: [T-10m, T) at T=11m holds 1m..11m; at 12m it is gone.
    # False from 12m on; resolved once false for a full window (10m): at 22m.
    assert offset(resolved) == 22 * MIN


def test_empty_windows_produce_nothing():
    assert run("count() > 0 over 1m -> sev3", []) == []
    records = run("count(pii) >= 1 over 1m -> sev3", trailing(30 * MIN))
    assert records == []


def test_zero_baseline_needs_more_than_k_events_per_window():
    """With no flagged events before, a zero baseline counts as one per window's worth of events:
    3x of that is exceeded by 4 flagged events in the window, not by 3."""
    rule = "rate(hallucination) > 3x baseline over 10m -> sev2"

    def stream(flagged_in_window: int):
        base = list(steady(0, 90 * MIN, 10 * SEC, flagged=["hallucination"]))  # 0 flagged; 60 per 10m
        spike = [event(f"s{i}", 80 * MIN + i * MIN, flags={"hallucination": True}) for i in range(flagged_in_window)]
        return sorted(base + spike, key=lambda e: e.ts)

    assert of_type(run(rule, stream(3)), "incident.opened") == []
    [opened] = of_type(run(rule, stream(5)), "incident.opened")
    assert opened["baseline"] == pytest.approx(1 / 60, rel=1e-4)


def test_baseline_waits_for_a_full_span():
    # A spike in the first hour: the default baseline span (6 x 10m) is not yet covered.
    rule = "rate(hallucination) > 3x baseline over 10m -> sev2"
    base = steady(0, 65 * MIN, 10 * SEC, flagged=["hallucination"], every_nth=50)
    spike = steady(5 * MIN, 30 * MIN, 5 * SEC, prefix="s", flagged=["hallucination"], every_nth=2)
    events = sorted([*base, *spike], key=lambda e: e.ts)
    assert of_type(run(rule, events), "incident.opened") == []


def test_count_baseline_is_scaled_to_the_window():
    # 1 event / 10s for 2h: 60 per 10m window, 360 per 1h baseline span → baseline 60 per window.
    rule = "count() > 2x baseline over 10m -> sev3"
    base = steady(0, 120 * MIN, 10 * SEC)
    burst = steady(110 * MIN, 115 * MIN, 2 * SEC, prefix="b")  # +150 in the window
    [opened] = of_type(run(rule, sorted([*base, *burst], key=lambda e: e.ts)), "incident.opened")
    assert opened["baseline"] == pytest.approx(60, rel=0.02)
    assert opened["value"] > 120


def test_distinct_baseline_is_the_mean_over_window_slices():
    # The same 10 users return every 5 minutes: in any 10m window there are 10 distinct users,
    # and the baseline (mean over the 10m slices of the 1h span) is 10 too — not 10 x 10/60.
    rule = "distinct(user) > 3x baseline over 10m min 5 events -> sev3"
    events = [event(f"e{i}", i * 30 * SEC, user=f"u{i % 10}") for i in range(2 * 60 * 2)]
    assert of_type(run(rule, events), "incident.opened") == []
    burst = [event(f"b{i}", 100 * MIN + i * SEC, user=f"new{i}") for i in range(40)]
    [opened] = of_type(run(rule, sorted(events + burst, key=lambda e: e.ts)), "incident.opened")
    assert opened["baseline"] == 10


def test_true_and_1_are_different_groups():
    events = [
        event("a", 0, tier=True, flags={"pii": True}),
        event("b", SEC, tier=1, flags={"pii": True}),
        event("c", 2 * SEC, tier=True, flags={"pii": True}),
    ]
    opened = of_type(run("count(pii) >= 1 over 1m by tier -> sev3", events), "incident.opened")
    assert [(r["group"], r["events"]) for r in opened] == [({"tier": True}, 2), ({"tier": 1}, 1)]
