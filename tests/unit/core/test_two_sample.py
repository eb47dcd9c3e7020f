"""`with C% confidence` against a measured reference: the two-sample test (docs/dsl.md,
"Against a measured reference, a two-sample test").

A baseline measured from the group's own history, or the rest of a population, is a sample
too: the test weighs the window's counts against the reference's (the conditional binomial
test for two Poisson rates), so a short history needs more evidence than a long one. Every
scenario here runs on both engines and their records must be equal.
"""

from __future__ import annotations

import json
import math
from fractions import Fraction
from pathlib import Path

import jsonschema
import pytest
from corekit import MIN, SEC, event, of_type, offset, run
from firebreak.core.significance import binomial_lower, binomial_upper, two_sample_p_value, two_sample_rate_p_value

SCHEMA = json.loads((Path(__file__).parents[3] / "docs" / "schemas" / "record.schema.json").read_text())


def _pmf(i: int, n: int, p: float) -> float:
    return math.comb(n, i) * p**i * (1 - p) ** (n - i)


@pytest.mark.parametrize(
    ("k", "e", "k_ref", "e_ref", "factor"),
    [(21, 100, 15, 300, 2.0), (44, 300, 36, 1800, 3.0), (0, 50, 4, 500, 1.5), (9, 600_000, 6, 3_600_000, 3.0)],
)
def test_the_two_sample_p_value_is_the_conditional_binomial_tail(k, e, k_ref, e_ref, factor):
    share = factor * e / (factor * e + e_ref)
    total = k + k_ref
    upper = sum(_pmf(i, total, share) for i in range(k, total + 1))
    lower = sum(_pmf(i, total, share) for i in range(0, k + 1))
    assert two_sample_p_value(">", k, e, k_ref, e_ref, factor) == pytest.approx(upper, rel=1e-9, abs=1e-15)
    assert two_sample_p_value("<=", k, e, k_ref, e_ref, factor) == pytest.approx(lower, rel=1e-9, abs=1e-15)
    assert two_sample_p_value(">", k, e, k_ref, e_ref, factor) == binomial_upper(k, total, share)
    assert two_sample_p_value("<", k, e, k_ref, e_ref, factor) == binomial_lower(k, total, share)


@pytest.mark.parametrize(
    ("k", "n", "k_ref", "n_ref", "factor"),
    [
        (6, 8, 300, 20_000, 5.0),
        (21, 100, 15, 300, 2.0),
        (44, 300, 36, 1800, 3.0),
        (2, 50, 10, 500, 1.5),
        (3, 40, 2, 30, 0.5),
    ],
)
def test_the_rate_test_is_the_noncentral_hypergeometric_tail(k, n, k_ref, n_ref, factor):
    # Fisher's noncentral hypergeometric distribution of the window's flagged events given
    # both samples' flagged total, at the odds ratio of `factor` times the reference's rate;
    # summed here exactly in fractions
    rate = k_ref / n_ref
    odds = Fraction(factor * rate * (1 - rate) / (rate * (1 - factor * rate)))
    total = k + k_ref
    weights = {
        x: math.comb(n, x) * math.comb(n_ref, total - x) * odds**x
        for x in range(max(0, total - n_ref), min(n, total) + 1)
    }
    whole = sum(weights.values())
    upper = float(sum(w for x, w in weights.items() if x >= k) / whole)
    lower = float(sum(w for x, w in weights.items() if x <= k) / whole)
    assert two_sample_rate_p_value(">", k, n, k_ref, n_ref, factor) == pytest.approx(upper, rel=1e-9, abs=1e-15)
    assert two_sample_rate_p_value("<", k, n, k_ref, n_ref, factor) == pytest.approx(lower, rel=1e-9, abs=1e-15)


def test_a_shorter_reference_needs_more_evidence():
    # the same window (21 of 100 flagged) against a 5% reference of 300, 3,000 and 30,000 events
    p = [two_sample_rate_p_value(">", 21, 100, n // 20, n, 2.0) for n in (300, 3_000, 30_000)]
    assert p[0] > p[1] > p[2]
    assert p[0] > 0.01
    # a reference that long is as good as known: the binomial tail at 2 × 5%
    assert p[2] == pytest.approx(binomial_upper(21, 100, 0.1), rel=0.1)
    # a small group's strong rate is not understated: 6 of 8 against 5 × 1.5% of a large rest
    assert two_sample_rate_p_value(">", 6, 8, 300, 20_000, 5.0) < 1e-5
    assert two_sample_p_value(">", 5, 0, 3, 100, 2.0) == 1.0  # no exposure: no evidence
    # a reference with none flagged (callers floor it first) is tested as the known limit
    assert two_sample_rate_p_value(">", 3, 100, 0, 600, 2.0) == binomial_upper(3, 100, 0.0)
    # more flagged events than an exact sum is for: the limit as known, never blind (15%
    # of 200,000 against 1.2 x 10%)
    huge = two_sample_rate_p_value(">", 30_000, 200_000, 100_000, 1_000_000, 1.2)
    assert huge == binomial_upper(30_000, 200_000, 0.12) and huge < 1e-100


WARMUP = "rule spike: rate(hallucination) > 2x baseline(6h, warmup 30m) with 99.9% confidence over 10m by model -> sev2"


def _model(spike_from: int, spike_every: int, end: int = 60 * MIN, spike_until: int | None = None) -> list:
    """An answer every 6 s (100 per 10m), 5% flagged (every 20th); from ``spike_from`` (until
    ``spike_until``) every ``spike_every``-th answer is flagged instead."""
    out = []
    for i, at in enumerate(range(0, end, 6 * SEC)):
        every = spike_every if spike_from <= at < (spike_until or end) else 20
        out.append(event(f"m{i}", at, model="m", user=f"u{i % 30}", flags={"hallucination": i % every == 0}))
    return out


def _both(rule: str, events: list) -> list[dict]:
    python, native = run(rule, events, engine="python"), run(rule, events, engine="native")
    assert python == native
    return python


def test_a_rise_a_short_history_cannot_vouch_for_opens_nothing():
    # From 40m, one answer in 5 flagged (20%, 4x the 5%): against 2x a point estimate of 5%
    # the 10m window's 20 of 100 are p ~ 0.002 at the first full window and below 0.001
    # with one more; against the 40 minutes of history it is measured from (400 answers,
    # 20 flagged) the window's share of 40 flagged is not unusual enough at 99.9%.
    events = _model(40 * MIN, 5)
    records = _both(WARMUP, events)
    assert of_type(records, "incident.opened") == []
    assert two_sample_rate_p_value(">", 21, 100, 20, 400, 2.0) > 0.005
    assert binomial_upper(21, 100, 0.1) < 0.001  # what a known 5% rate would have made of it


def test_a_rise_the_history_cannot_explain_opens_with_both_samples_in_its_record():
    events = _model(40 * MIN, 2)  # half the answers flagged: 10x
    records = _both(WARMUP, events)
    opened = of_type(records, "incident.opened")
    assert len(opened) == 1
    record = opened[0]
    jsonschema.validate(record, SCHEMA)
    at = offset(record)
    sig = record["significance"]
    history = [e for e in events if e.ts - events[0].ts < at - 10 * MIN]
    window = [e for e in events if at - 10 * MIN <= e.ts - events[0].ts < at]
    k_ref = sum(e.data["flags"]["hallucination"] for e in history)
    k = sum(e.data["flags"]["hallucination"] for e in window)
    least = math.ceil((at - 10 * MIN) / (10 * MIN))
    assert sig["test"] == "two_sample" and sig["reference"] == "baseline"
    assert sig["observed"] == k and sig["trials"] == len(window)
    assert sig["against"] == {"observed": k_ref, "least": least, "trials": len(history), "span_ms": None}
    p = two_sample_rate_p_value(">", k, len(window), max(k_ref, least), len(history), 2.0)
    assert p <= 0.001 and sig["p_value"] == float(f"{p:.3g}")
    assert sig["expected"] == pytest.approx(len(window) * 2.0 * max(k_ref, least) / len(history), rel=1e-6)
    assert f"{k} of {len(window)} observed against {k_ref} of {len(history)} in the reference" in record["why"]


def _window_and_history(events: list, at: int, window: int = 10 * MIN) -> tuple[list, list]:
    t0 = events[0].ts
    return (
        [e for e in events if at - window <= e.ts - t0 < at],
        [e for e in events if e.ts - t0 < at - window],
    )


def test_a_count_is_weighed_against_the_length_of_its_reference():
    rule = "rule many: count(hallucination) > 3x baseline(6h, warmup 1h) with 99% confidence over 10m -> sev3"
    events = _model(70 * MIN, 2, end=90 * MIN)  # 5 flagged per 10m, then 50
    records = _both(rule, events)
    opened = of_type(records, "incident.opened")
    assert len(opened) == 1
    sig, at = opened[0]["significance"], offset(opened[0])
    window, history = _window_and_history(events, at)
    k = sum(e.data["flags"]["hallucination"] for e in window)
    k_ref = sum(e.data["flags"]["hallucination"] for e in history)
    span = at - 10 * MIN  # the warm-up's history: from the first event to the window
    assert sig["test"] == "two_sample" and sig["trials"] is None and sig["observed"] == k
    assert sig["against"] == {"observed": k_ref, "least": math.ceil(span / (10 * MIN)), "trials": None, "span_ms": span}
    p = two_sample_p_value(">", k, 10 * MIN, k_ref, span, 3.0)
    assert sig["p_value"] == float(f"{p:.3g}") and p <= 0.01
    assert f"against {k_ref} in " in opened[0]["why"]


def test_an_empty_history_is_taken_as_one_event_per_window():
    # no flagged answer in the warm-up's history: the reference is taken as one flagged per
    # 10m of it, as the baseline's value is floored, not as a rate of zero that any flag exceeds
    rule = "rule spike: rate(hallucination) > 2x baseline(6h, warmup 1h) with 99.9% confidence over 10m -> sev2"
    events = [
        event(f"e{i}", at, model="m", flags={"hallucination": at >= 70 * MIN and i % 5 == 0})
        for i, at in enumerate(range(0, 90 * MIN, 6 * SEC))
    ]
    opened = of_type(_both(rule, events), "incident.opened")
    assert len(opened) == 1
    sig, at = opened[0]["significance"], offset(opened[0])
    window, history = _window_and_history(events, at)
    least = math.ceil((at - 10 * MIN) / (10 * MIN))
    assert sig["against"] == {"observed": 0, "least": least, "trials": len(history), "span_ms": None}
    p = two_sample_rate_p_value(">", sig["observed"], len(window), least, len(history), 2.0)
    assert sig["p_value"] == float(f"{p:.3g}") and p <= 0.001
    # five flagged answers of 100 are 5x a 1% floor, but not evidence against seven of 700
    assert two_sample_rate_p_value(">", 5, 100, 7, 700, 2.0) > 0.1
    assert sig["observed"] > 5


def test_a_prior_is_tested_as_a_known_rate():
    rule = (
        "rule spike: rate(hallucination) > 2x baseline(6h, prior 0.05) with 99.9% confidence over 10m by model -> sev2"
    )
    events = _model(20 * MIN, 2, end=40 * MIN)
    opened = of_type(_both(rule, events), "incident.opened")
    assert len(opened) == 1
    assert opened[0]["significance"]["test"] == "binomial" and opened[0]["significance"]["against"] is None


def test_a_whole_span_is_tested_as_known():
    # Once the group has been seen for window + span, the span (as long as the rule asks)
    # is the reference and its value is tested as known: the same rule, two-sample against
    # its first 40 minutes, one-sample against its whole hour.
    rule = "rule spike: rate(hallucination) > 2x baseline(1h, warmup 20m) with 99.9% confidence over 10m -> sev2"
    early = _model(40 * MIN, 2, end=60 * MIN, spike_until=50 * MIN)
    late = _model(150 * MIN, 2, end=170 * MIN)
    opened = [of_type(_both(rule, events), "incident.opened") for events in (early, late)]
    assert [len(o) for o in opened] == [1, 1]
    assert opened[0][0]["significance"]["test"] == "two_sample"
    assert opened[1][0]["significance"]["test"] == "binomial" and opened[1][0]["significance"]["against"] is None


def test_the_population_is_tested_as_known():
    rule = "rule odd: rate(prompt_injection) > 5x population with 99.9% confidence over 10m by user -> sev2"
    events = []
    for i, at in enumerate(range(0, 30 * MIN, 2 * SEC)):
        user = f"u{i % 20}"
        hit = (at >= 10 * MIN) if user == "u3" else i % 200 == 0
        events.append(event(f"p{i}", at, user=user, flags={"prompt_injection": hit}))
    opened = of_type(_both(rule, events), "incident.opened")
    assert [r["group"] for r in opened] == [{"user": "u3"}]
    assert opened[0]["significance"]["test"] == "binomial" and opened[0]["significance"]["against"] is None


def test_an_open_incident_is_judged_against_its_frozen_baseline():
    events = _model(40 * MIN, 2, end=90 * MIN, spike_until=60 * MIN)
    records = _both(WARMUP, events)
    assert of_type(records, "incident.opened")[0]["significance"]["test"] == "two_sample"
    later = [r for r in records if r["type"].startswith("incident.") and r["type"] != "incident.opened"]
    assert [r["type"] for r in later][-1:] == ["incident.resolved"]
    assert all(r["significance"]["against"] is None for r in later)


def test_a_recurrence_is_tested_against_the_history_without_its_incident():
    # A spike at 40-50m opens and resolves; it comes back at 100m, still within the warm-up
    # (the 6h span does not exist yet). The history it is tested against leaves the first
    # incident's span out (as a baseline does): its counts are those of the 5% answers only.
    events = []
    for i, at in enumerate(range(0, 130 * MIN, 6 * SEC)):
        spike = 40 * MIN <= at < 50 * MIN or at >= 100 * MIN
        events.append(
            event(f"m{i}", at, model="m", user=f"u{i % 30}", flags={"hallucination": i % (2 if spike else 20) == 0})
        )
    records = _both(WARMUP, events)
    pages = [r for r in records if r["type"] in ("incident.opened", "incident.reopened")]
    assert [r["type"] for r in pages] == ["incident.opened", "incident.reopened"]
    first, second = (r["significance"] for r in pages)
    assert first["test"] == second["test"] == "two_sample"
    history = [e for e in events if e.ts - events[0].ts < offset(pages[1]) - 10 * MIN]
    assert second["against"]["trials"] < len(history)  # the first incident's span left out
    assert second["against"]["observed"] / second["against"]["trials"] == pytest.approx(0.05, abs=0.005)
