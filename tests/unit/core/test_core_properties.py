"""Determinism, order independence within the lateness, late events, snapshot/restore, sketches.

The engine tests run on the engine under test (the rule_engine fixture); BASE_RECORDS is the
Python core's run, the specification they are compared with (and other test files import)."""

from __future__ import annotations

import random

import orjson
import pytest
from corekit import MIN, SEC, driver, event, of_type, restore, rules, run
from firebreak.core import run_events
from firebreak.core.sketch import DISTINCT_K, DistinctSketch, QuantileSketch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

RULES = rules(
    """
rule spike:
  rate(hallucination) > 3x baseline over 5m by model -> sev3 contain fallback
rule leak:
  count(pii) >= 2 over 1m by tenant -> sev2 contain disable_feature
rule slow:
  p95(latency_ms) > 900 over 2m min 10 events -> sev3
rule spend:
  sum(cost_usd) > 2x baseline(20m) over 2m -> sev3
rule users:
  distinct(user) > 40 over 2m -> sev4
"""
)


def stream(seed: int, minutes: int = 90) -> list:
    rng = random.Random(seed)
    out = []
    for i in range(minutes * 30):  # one event every 2s
        at = i * 2 * SEC
        late_spike = at > minutes * MIN * 0.6
        model = rng.choice(["a", "b"])
        out.append(
            event(
                f"e{i}",
                at,
                model=model,
                tenant=rng.choice(["t1", "t2", "t3"]),
                user=f"u{rng.randrange(60)}",
                latency_ms=rng.uniform(100, 1200 if late_spike else 950),
                cost_usd=round(rng.uniform(0, 0.05 if late_spike else 0.01), 4),
                flags={
                    "hallucination": rng.random() < (0.4 if late_spike and model == "a" else 0.03),
                    "pii": rng.random() < (0.05 if late_spike else 0.002),
                },
            )
        )
    return out


def dump(records) -> bytes:
    return b"\n".join(orjson.dumps(r) for r in records)


BASE = stream(7)
BASE_RECORDS = run_events(RULES, BASE)


def test_the_reference_stream_exercises_every_rule():
    assert {r["rule"] for r in of_type(BASE_RECORDS, "incident.opened")} == {"spike", "leak", "slow", "spend", "users"}


@pytest.mark.usefixtures("rule_engine")
def test_replay_is_byte_identical_run_to_run():
    assert dump(run(RULES, BASE)) == dump(run(RULES, BASE)) == dump(BASE_RECORDS)


# the fixture only names the engine: the same for every example
@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(seed=st.integers(0, 2**32 - 1), lateness_s=st.sampled_from([1, 5, 30]))
def test_shuffling_within_the_lateness_changes_nothing(rule_engine, seed, lateness_s):
    lateness = lateness_s * SEC
    rng = random.Random(seed)
    # Sorting by ts + jitter in [0, lateness) only swaps events less than `lateness` apart.
    shuffled = sorted(BASE, key=lambda e: e.ts + rng.randrange(lateness))
    assert dump(run(RULES, shuffled, lateness_ms=lateness)) == dump(run(RULES, BASE, lateness_ms=lateness))


@pytest.mark.usefixtures("rule_engine")
def test_late_events_are_counted_and_not_aggregated():
    engine = driver(RULES, lateness_ms=30 * SEC)
    fed = engine.feed_events([event("a", 0, tenant="t"), event("b", 10 * MIN, tenant="t")])
    late = engine.feed_events([event(f"p{i}", 5 * MIN, tenant="t", flags={"pii": True}) for i in range(2)])
    records = fed.records + late.records + engine.finish()
    assert (fed.events, late.events, [index for index, _ in late.late]) == (2, 0, [0, 1])
    assert of_type(records, "incident.opened") == []


@pytest.mark.usefixtures("rule_engine")
def test_an_event_within_the_lateness_is_not_late():
    engine = driver(RULES, lateness_ms=30 * SEC)
    engine.feed_events([event("a", 60 * SEC)])
    assert engine.feed_events([event("b", 30 * SEC)]).late == []
    assert [index for index, _ in engine.feed_events([event("c", 30 * SEC - 1)]).late] == [0]


@pytest.mark.usefixtures("rule_engine")
@pytest.mark.parametrize("cut", [0.25, 0.5, 0.8])
def test_snapshot_restore_mid_stream_gives_the_same_records(cut):
    split = int(len(BASE) * cut)
    first = driver(RULES)
    records = first.feed_events(BASE[:split]).records
    saved = orjson.loads(orjson.dumps(first.snapshot()))  # through JSON, as a checkpoint would be
    second = restore(RULES, saved)
    records += second.feed_events(BASE[split:]).records + second.finish()
    assert dump(records) == dump(BASE_RECORDS)


@pytest.mark.usefixtures("rule_engine")
def test_restore_drops_state_of_a_changed_rule():
    engine = driver(RULES)
    engine.feed_events(BASE[:1000])
    changed = rules(
        "rule leak:\n  count(pii) >= 3 over 1m by tenant -> sev2\nrule spike:\n"
        "  rate(hallucination) > 3x baseline over 5m by model -> sev3 contain fallback"
    )
    restored = restore(changed, orjson.loads(orjson.dumps(engine.snapshot())))
    groups = {name: rule["groups"] for name, rule in restored.snapshot()["rules"].items()}
    assert groups["leak"] == [] and groups["spike"] != []


@pytest.mark.usefixtures("rule_engine")
def test_memory_is_bounded_by_the_window_not_the_event_count():
    engine = driver(RULES)
    engine.feed_events(stream(3, minutes=240))
    held = engine.snapshot()["rules"]  # the core's layout, whichever engine holds the state
    for rule in RULES:
        # the memory span, plus the steps ahead of the watermark that early events may fill
        limit = (rule.window_ms + max(rule.baseline_ms, rule.window_ms) + engine.core.lateness_ms) // rule.step_ms + 2
        assert held[rule.name]["groups"]
        for group in held[rule.name]["groups"]:
            assert len(group["buckets"]) <= limit


@settings(max_examples=50, deadline=None)
@given(
    st.lists(st.floats(min_value=0.001, max_value=1e6, allow_nan=False), min_size=1, max_size=300),
    st.sampled_from([0.5, 0.9, 0.95, 0.99]),
)
def test_quantile_sketch_is_within_one_percent_of_nearest_rank(values, q):
    sketch = QuantileSketch()
    for v in values:
        sketch.add(v)
    exact = sorted(values)[max(1, -(-int(q * len(values) * 1e9) // int(1e9))) - 1]
    assert sketch.quantile(q) == pytest.approx(exact, rel=0.0101)


def test_distinct_sketch_is_exact_up_to_k_then_close():
    small = DistinctSketch()
    for i in range(DISTINCT_K - 1):
        small.add(f"user{i}")
        small.add(f"user{i}")
    assert small.estimate() == DISTINCT_K - 1
    big, other = DistinctSketch(), DistinctSketch()
    for i in range(20_000):
        (big if i % 2 else other).add(f"user{i}")
    big.merge(other)
    assert big.estimate() == pytest.approx(20_000, rel=0.25)
    assert len(big.mins) == DISTINCT_K
