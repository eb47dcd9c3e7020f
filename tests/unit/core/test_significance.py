"""`with C% confidence` and `Kx population`: the tests' arithmetic, and what the core does with them."""

from __future__ import annotations

import json
import math
from pathlib import Path

import jsonschema
import pytest
from corekit import MIN, SEC, driver, event, merged, of_type, offset, restore, rules, run, steady
from firebreak.core.significance import binomial_lower, binomial_upper, poisson_lower, poisson_upper

SCHEMA = json.loads((Path(__file__).parents[3] / "docs" / "schemas" / "record.schema.json").read_text())


def _binomial_pmf(i: int, n: int, p: float) -> float:
    return math.comb(n, i) * p**i * (1 - p) ** (n - i)


@pytest.mark.parametrize(
    ("k", "n", "p"),
    [
        (3, 360, 0.0004),
        (4, 360, 0.0004),
        (0, 5, 0.1),
        (5, 10, 0.5),
        (2, 100, 0.05),
        (10, 100, 0.05),
        (50, 100, 0.3),
        (1, 1, 0.03),
        (7, 7, 0.9),
        (0, 40, 0.2),
        (40, 40, 0.2),
    ],
)
def test_binomial_tails_match_the_sum_of_the_terms(k, n, p):
    upper = sum(_binomial_pmf(i, n, p) for i in range(k, n + 1))
    lower = sum(_binomial_pmf(i, n, p) for i in range(0, k + 1))
    assert binomial_upper(k, n, p) == pytest.approx(upper, rel=1e-9, abs=1e-15)
    assert binomial_lower(k, n, p) == pytest.approx(lower, rel=1e-9, abs=1e-15)


@pytest.mark.parametrize(("k", "mean"), [(3, 0.5), (10, 3.0), (2, 5.0), (40, 30.0), (0, 2.0), (1, 0.001)])
def test_poisson_tails_match_the_sum_of_the_terms(k, mean):
    def pmf(i: int) -> float:
        return math.exp(-mean) * mean**i / math.factorial(i)

    assert poisson_upper(k, mean) == pytest.approx(1 - sum(pmf(i) for i in range(k)), rel=1e-9, abs=1e-15)
    assert poisson_lower(k, mean) == pytest.approx(sum(pmf(i) for i in range(k + 1)), rel=1e-9, abs=1e-15)


def test_tails_of_large_samples_are_cheap_and_sane():
    # 1100 flagged of 100k at a 1% reference: about 3 standard deviations up.
    p = binomial_upper(1100, 100_000, 0.01)
    assert 0.0005 < p < 0.002
    assert binomial_upper(2000, 100_000, 0.01) < 1e-100
    assert binomial_upper(900, 100_000, 0.01) > 0.99


PII_RULE = "rule leak: rate(pii) > 0.0004 with 99.9% confidence over 10m by tenant -> sev1"


def _tenant(name: str, every_ms: int, end_ms: int, leaks: tuple[int, ...] = ()):
    """A tenant's answers, one every ``every_ms``; the ``leaks``-th ones carry PII."""
    for i, at in enumerate(range(0, end_ms, every_ms)):
        yield event(f"{name}{i}", at, tenant=name, user=f"{name}-u{i % 50}", flags={"pii": i in leaks})


@pytest.mark.usefixtures("rule_engine")
def test_a_small_tenant_leaking_three_answers_fires_with_its_evidence():
    # ~360 answers per 10m (one every 1.67 s); three PII answers within 30 s at 20m.
    leaks = (720, 726, 738)  # at 20m00s, 20m10s, 20m30s
    events = list(_tenant("small", 1_667, 40 * MIN, leaks))
    assert sum(1 for e in events if e.data["flags"]["pii"]) == 3
    opened = of_type(run(PII_RULE, events), "incident.opened")
    assert [(r["group"], offset(r)) for r in opened] == [({"tenant": "small"}, 21 * MIN)]
    evidence = opened[0]["significance"]
    assert evidence["test"] == "binomial" and evidence["reference"] == "absolute"
    assert evidence["confidence"] == 0.999
    assert evidence["observed"] == 3 and 355 <= evidence["trials"] <= 365
    assert evidence["expected"] == pytest.approx(evidence["trials"] * 0.0004)
    assert evidence["p_value"] < 0.001
    assert "99.9% confidence (3 of" in opened[0]["why"] and "p = " in opened[0]["why"]
    jsonschema.validate(opened[0], SCHEMA)


@pytest.mark.usefixtures("rule_engine")
def test_a_large_tenant_at_the_noise_rate_does_not_fire_where_a_plain_rate_would():
    # 6000 answers per 10m and three PII among them: 0.05%, over the 0.04% limit, but 2.4
    # are expected at the limit — no evidence of anything.
    leaks = (6000, 7000, 8000)
    events = list(_tenant("big", 100, 20 * MIN, leaks))
    assert of_type(run(PII_RULE, events), "incident.opened") == []
    plain = "rule plain: rate(pii) > 0.0004 over 10m by tenant -> sev1"
    assert [r["group"] for r in of_type(run(plain, events), "incident.opened")] == [{"tenant": "big"}]


@pytest.mark.usefixtures("rule_engine")
def test_two_of_two_fires_only_with_enough_confidence():
    # Two answers, both flagged: p = 0.0004² — strong evidence even without `min N events`.
    events = [event("a", 0, tenant="t", flags={"pii": True}), event("b", SEC, tenant="t", flags={"pii": True})]
    assert len(of_type(run(PII_RULE, events), "incident.opened")) == 1
    # Against a 30% reference, two of two (p = 0.09) is not enough at 99%.
    loose = "rate(pii) > 0.3 with 99% confidence over 10m by tenant -> sev1"
    assert of_type(run(loose, events), "incident.opened") == []


ATTACK_RULE = (
    "rule attacker: rate(prompt_injection) > 5x population with 99.9% confidence over 10m by user min 5 events "
    "-> sev2 contain block_user"
)
COUNT_RULE = "rule counted: count() >= 5 over 10m by user where flags.prompt_injection -> sev2"


def _users(end_ms: int, attacker_from: int | None = None):
    """100 light users (a call every ~50 s each) and one heavy account (a call a second),
    all tripping the injection classifier on 0.7% of calls; an attacker from ``attacker_from``."""
    light = steady(0, end_ms, 500, "l", flagged=("prompt_injection",), every_nth=143)
    heavy = steady(250, end_ms, 1_000, "h", flagged=("prompt_injection",), every_nth=143, user="heavy")
    streams = [
        (
            event(e.event_id, e.ts - 1_767_225_600_000, user=f"u{i % 100}", flags=e.data["flags"])
            for i, e in enumerate(light)
        ),
        (event(e.event_id, e.ts - 1_767_225_600_000, user="heavy", flags=e.data["flags"]) for e in heavy),
    ]
    if attacker_from is not None:
        streams.append(
            event(f"m{i}", at, user="mallory", flags={"prompt_injection": i % 3 == 0})
            for i, at in enumerate(range(attacker_from, attacker_from + 5 * MIN, 20 * SEC))
        )
    return merged(*streams)


@pytest.mark.usefixtures("rule_engine")
def test_a_heavy_account_at_noise_does_not_fire_against_its_population():
    events = _users(60 * MIN)
    heavy_flags = sum(1 for e in events if e.data["user"] == "heavy" and e.data["flags"]["prompt_injection"])
    assert heavy_flags >= 20  # 3600 calls, 0.7% flagged
    # The fixed count trips on the heavy account's noise; the population comparison does not.
    assert {r["group"]["user"] for r in of_type(run(COUNT_RULE, events), "incident.opened")} == {"heavy"}
    assert of_type(run(ATTACK_RULE, events), "incident.opened") == []


@pytest.mark.usefixtures("rule_engine")
def test_an_attacker_fires_against_its_population_with_the_population_rate_as_baseline():
    records = run(ATTACK_RULE, _users(40 * MIN, attacker_from=20 * MIN))
    opened = of_type(records, "incident.opened")
    assert [r["group"] for r in opened] == [{"user": "mallory"}]
    r = opened[0]
    # One call in three an injection: 3 of 9 by 23m is p ≈ 0.004 against 5 × 0.7%; 4 of 12 at
    # 24m is p ≈ 0.0007, under 0.001.
    assert offset(r) == 24 * MIN
    assert (r["significance"]["observed"], r["significance"]["trials"]) == (4, 12)
    assert r["baseline"] == pytest.approx(1 / 143, rel=0.25)  # the rest of the population
    assert r["threshold"] == pytest.approx(5 * r["baseline"], abs=1e-5)  # both rounded to 6 places
    assert r["significance"]["reference"] == "population" and r["significance"]["p_value"] < 0.001
    assert "the rest of the population" in r["why"]


@pytest.mark.usefixtures("rule_engine")
def test_population_state_survives_a_snapshot():
    compiled = rules(ATTACK_RULE)
    events = _users(40 * MIN, attacker_from=20 * MIN)
    whole = run(ATTACK_RULE, events)
    cut = len(events) // 2 + 7
    first = driver(compiled)
    records = first.feed_events(events[:cut]).records
    second = restore(compiled, json.loads(json.dumps(first.snapshot())))
    records += second.feed_events(events[cut:]).records + second.finish()
    assert records == whole


@pytest.mark.usefixtures("rule_engine")
def test_count_with_confidence_is_a_poisson_test():
    # `count() > 2 with 99% confidence`: more than 2 a window on average. Six in a window
    # is p ≈ 0.017 at a mean of 2 — not enough; eight is p ≈ 0.0011 — not enough at 99.9%,
    # enough at 99%.
    six = [event(f"a{i}", i * SEC, tenant="t") for i in range(6)]
    eight = [event(f"b{i}", i * SEC, tenant="t") for i in range(8)]
    rule99 = "count() > 2 with 99% confidence over 10m by tenant -> sev3"
    rule999 = "count() > 2 with 99.9% confidence over 10m by tenant -> sev3"
    assert of_type(run(rule99, six), "incident.opened") == []
    assert len(of_type(run(rule99, eight), "incident.opened")) == 1
    assert of_type(run(rule999, eight), "incident.opened") == []
    record = of_type(run(rule99, eight), "incident.opened")[0]
    assert record["significance"]["test"] == "poisson" and record["significance"]["trials"] is None
    assert record["significance"]["expected"] == 2


@pytest.mark.usefixtures("rule_engine")
def test_min_flagged_asks_for_that_many_flagged_events_whatever_the_p_value():
    # Two PII answers of two are p = 0.0012² against 0.0012: significant, but `min 3 flagged`
    # asks for three — noise pairs in a quiet tenant are common enough over a day.
    two = [event(f"a{i}", i * SEC, tenant="t", flags={"pii": True}) for i in range(2)]
    three = [event(f"a{i}", i * SEC, tenant="t", flags={"pii": True}) for i in range(3)]
    plain = "rate(pii) > 0.0012 with 99.99% confidence over 1m by tenant -> sev1"
    floored = "rate(pii) > 0.0012 with 99.99% confidence over 1m by tenant min 3 flagged -> sev1"
    assert len(of_type(run(plain, two), "incident.opened")) == 1
    assert of_type(run(floored, two), "incident.opened") == []
    opened = of_type(run(floored, three), "incident.opened")
    assert len(opened) == 1 and opened[0]["significance"]["observed"] == 3
    assert rules(floored)[0].min_events == 1 and rules(floored)[0].min_flagged == 3


@pytest.mark.usefixtures("rule_engine")
def test_rules_without_significance_keep_their_records():
    events = [event(f"a{i}", i * SEC, tenant="t", flags={"pii": True}) for i in range(3)]
    opened = of_type(run("count(pii) >= 1 over 1m by tenant -> sev1", events), "incident.opened")
    assert "significance" not in opened[0]


def test_an_investigation_states_the_significance_of_its_incident():
    from firebreak.investigate.markdown import _metric
    from firebreak.investigate.model import Report

    incident = {
        "rule_text": PII_RULE,
        "metric": "rate(pii)",
        "window_ms": 10 * MIN,
        "value": 0.0083,
        "baseline": None,
        "threshold": 0.0004,
        "peak": 0.0083,
        "significance": {
            "test": "binomial",
            "confidence": 0.999,
            "reference": "absolute",
            "observed": 3,
            "trials": 360,
            "expected": 0.144,
            "p_value": 0.000444,
        },
    }
    report = {"incident": incident, "series": {"points": []}, "anomaly": {"means": "PII answers"}}
    text = "\n".join(_metric(Report.from_json(report)))
    assert "Significance: 3 of 360 observed where 0.144 are expected at the threshold — p = 0.000444" in text
    assert "under 1 − 99.9%" in text
    incident["significance"] = None
    assert "Significance" not in "\n".join(_metric(Report.from_json(report)))
