"""Differential. Robust and seasonal references (`Kx baseline(S, median | trimmed P% |
seasonal D)`): the native engine against the Python core, byte for byte — on Hypothesis
streams, on groups that arrive one after another and spike (so past incidents are left out of
the slices), and across snapshots at random points (either engine's snapshot into either)."""

from __future__ import annotations

import random

import orjson
from corekit import MIN, rules
from firebreak.core import run_events
from firebreak.native.plan import unsupported
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_native_cold_start import arrivals
from test_native_differential import dump, native_run, restores_across_engines, same_on_both, streams

SLICED_RULES = rules(
    """
rule rate_median:
  rate(pii) > 2x baseline(8m, median) over 1m by tenant min 2 events -> sev2
rule rate_trimmed_tested:
  rate(jailbreak) > 2x baseline(8m, trimmed 20%, warmup 3m, population) with 90% confidence over 1m by user -> sev3
rule count_seasonal:
  count() > 2x baseline(8m, seasonal 2m, prior 3) over 1m by tenant min 1 events -> sev4
rule spread_median:
  distinct(region) > 1.5x baseline(6m, median, warmup 3m) over 1m by tenant min 1 events -> sev4
rule slow_seasonal_median:
  p50(latency_ms) > 1.5x baseline(6m, seasonal 2m, median) over 1m by tenant for 20s min 2 events -> sev3
rule drop_trimmed:
  max(tokens_out) < 0.5x baseline(5m, trimmed 10%) over 1m by user min 1 events -> sev4
rule sum_median:
  sum(tokens_out) > 2x baseline(5m, median) over 1m min 1 events -> sev4
"""
)


def test_the_sliced_rules_run_natively():
    # a rule the crate cannot run would run on the Python core beside it: no comparison at all
    assert [unsupported(rule) for rule in SLICED_RULES] == [None] * len(SLICED_RULES)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(streams(), st.sampled_from([0, 5 * 1000, 30 * 1000]))
def test_hypothesis_streams_give_the_same_records(events, lateness):
    same_on_both(SLICED_RULES, events, lateness)


def test_spiking_groups_fire_on_both_engines_alike():
    fired: set[str] = set()
    for seed in (7, 8, 9):
        events = arrivals(seed)
        expected = dump(run_events(SLICED_RULES, events))
        assert dump(native_run(SLICED_RULES, events)) == expected
        records = [orjson.loads(line) for line in expected.split(b"\n") if line]
        fired |= {r["rule"] for r in records if r["type"] == "incident.opened"}
    # the comparison means something only if the sliced references are read and crossed
    assert {"rate_median", "count_seasonal", "slow_seasonal_median"} <= fired, fired


def test_snapshots_restore_across_engines_at_random_points():
    for seed in (1, 2, 3):
        events = arrivals(seed)
        restores_across_engines(SLICED_RULES, events, random.Random(seed).randrange(1, len(events)))


def test_the_plan_says_how_the_reference_is_read():
    by_name = {rule.name: rule.plan() for rule in SLICED_RULES}
    assert by_name["rate_median"]["window"]["slices_every_ms"] == MIN  # window-length slices
    assert by_name["rate_median"]["condition"]["trim"] == 0.5
    assert by_name["count_seasonal"]["window"]["slices_every_ms"] == 2 * MIN
    assert by_name["count_seasonal"]["condition"]["trim"] == 0.0  # the seasons' plain mean
    assert by_name["rate_trimmed_tested"]["condition"]["trim"] == 0.2
