"""Differential. Cold-start groups (`Kx baseline(S, warmup D, population, prior P)`): the native engine against
the Python core, byte for byte — on Hypothesis streams where groups arrive at random times,
on groups arriving one after another, and across snapshots at random points (either engine's
snapshot into either)."""

from __future__ import annotations

import random

import orjson
from corekit import MIN, SEC, event, rules
from firebreak.core import run_events
from firebreak.native.plan import unsupported
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_native_differential import dump, native_run, restores_across_engines, same_on_both, streams

COLD_RULES = rules(
    """
rule rate_chain:
  rate(pii) > 2x baseline(8m, warmup 2m, population, prior 0.1) over 1m by tenant min 2 events -> sev2
rule rate_tested:
  rate(jailbreak) > 2x baseline(8m, warmup 3m, population) with 90% confidence over 1m by user -> sev3
rule count_prior:
  count() > 2x baseline(6m, warmup 2m, prior 3) over 1m by tenant min 1 events -> sev4
rule spread_warm:
  distinct(region) > 1.5x baseline(6m, warmup 2m) over 1m by tenant min 1 events -> sev4
rule slow_prior:
  avg(latency_ms) > 1.5x baseline(5m, prior 600) over 1m by tenant for 20s min 2 events -> sev3
rule drop_warm:
  max(tokens_out) < 0.5x baseline(5m, warmup 2m) over 1m by user min 1 events -> sev4
rule plain:
  rate(pii) > 2x baseline(8m) over 1m by tenant min 2 events -> sev2
"""
)


def test_the_cold_start_rules_run_natively():
    # a rule the crate cannot run would run on the Python core beside it: no comparison at all
    assert [unsupported(rule) for rule in COLD_RULES] == [None] * len(COLD_RULES)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(streams(), st.sampled_from([0, 5 * SEC, 30 * SEC]))
def test_hypothesis_streams_of_cold_groups_give_the_same_records(events, lateness):
    same_on_both(COLD_RULES, events, lateness)


def arrivals(seed: int) -> list:
    """Tenants and users that arrive one after another, some spiking early in their life."""
    rng = random.Random(seed)
    out = []
    for g in range(6):
        begin = g * 3 * MIN + rng.randrange(0, 60) * SEC
        spike = begin + rng.randrange(1, 8) * MIN
        for i in range(rng.randrange(60, 200)):
            at = begin + i * rng.randrange(2, 8) * SEC
            hot = spike <= at < spike + 2 * MIN
            out.append(
                event(
                    f"g{g}-{i}",
                    at,
                    tenant=f"t{g % 4}",
                    user=f"u{g}",
                    region=rng.choice(["eu", "us", "ap"]) if not hot else f"r{i % 9}",
                    latency_ms=rng.randrange(100, 400) * (4 if hot else 1),
                    tokens_out=rng.randrange(200, 400) // (10 if hot else 1),
                    flags={
                        "pii": rng.random() < (0.5 if hot else 0.03),
                        "jailbreak": rng.random() < (0.6 if hot else 0.05),
                    },
                )
            )
    return sorted(out, key=lambda e: (e.ts, e.event_id))


def test_cold_groups_fire_on_both_engines_alike():
    events = arrivals(7)
    expected = dump(run_events(COLD_RULES, events))
    assert dump(native_run(COLD_RULES, events)) == expected
    records = [orjson.loads(line) for line in expected.split(b"\n")]
    opened = {r["rule"] for r in records if r["type"] == "incident.opened"}
    # every fallback is exercised: these rules can only fire on groups younger than their span
    assert {"rate_chain", "count_prior", "slow_prior"} <= opened, opened


def test_snapshots_of_cold_groups_restore_across_engines_at_random_points():
    for seed in (1, 2, 3):
        events = arrivals(seed)
        restores_across_engines(COLD_RULES, events, random.Random(seed).randrange(1, len(events)))
