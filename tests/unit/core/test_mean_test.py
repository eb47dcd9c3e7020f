"""`avg(FIELD) … with C% confidence`: a window's mean tested by Student's t against the limit,
from the window's own spread (docs/dsl.md, "Significance"). A drop of 2% in a busy group is
evidence; the same drop in a quiet group is noise. Every scenario runs on both engines and
their records must be equal; snapshots carry the squares across engines."""

from __future__ import annotations

import math
import random

import orjson
import pytest
from corekit import MIN, T0, event, of_type, offset, rules, run
from firebreak.core import Engine, run_events
from firebreak.core.significance import SQ_MAX, mean_p_value, student_t_upper
from firebreak.dsl.metrics import SCALE
from firebreak.dsl.plan import rule_plan
from firebreak.native import NativeEngine, available

needs_native = pytest.mark.skipif(not available(), reason="the native engine is not built")


def _sums(values: list[float]) -> tuple[int, int, int]:
    xs = [round(v * SCALE) for v in values]
    return len(xs), sum(xs), sum(x * x for x in xs)


# ---- the test itself ------------------------------------------------------------------------


@pytest.mark.parametrize("t", [-3.0, -0.5, 0.0, 0.7, 2.0, 9.0])
def test_student_t_matches_its_closed_forms(t: float):
    assert student_t_upper(t, 1) == pytest.approx(0.5 - math.atan(t) / math.pi, rel=1e-12, abs=1e-15)
    assert student_t_upper(t, 2) == pytest.approx(0.5 - t / (2 * math.sqrt(t * t + 2)), rel=1e-12, abs=1e-15)
    # many degrees of freedom: the normal distribution
    assert student_t_upper(t, 10**6) == pytest.approx(0.5 * math.erfc(t / math.sqrt(2)), rel=1e-12)
    assert student_t_upper(t, 50_000) == pytest.approx(0.5 * math.erfc(t / math.sqrt(2)), rel=2e-3, abs=1e-12)


def test_student_t_known_values():
    assert student_t_upper(2.0, 10) == pytest.approx(0.036694017385370, rel=1e-9)  # tables
    assert student_t_upper(2.228, 10) == pytest.approx(0.025, rel=1e-3)  # the 97.5% quantile
    assert student_t_upper(float("nan"), 5) == 1.0
    assert student_t_upper(float("inf"), 5) == 0.0 and student_t_upper(float("-inf"), 5) == 1.0


def test_the_mean_test_reads_the_spread_and_the_side():
    low = [0.73, 0.70, 0.75, 0.72, 0.69, 0.71, 0.74, 0.76]
    vn, total, sq = _sums(low)
    p_below = mean_p_value("<", vn, total, sq, 0.8, SCALE)
    mean, sd = sum(low) / vn, math.sqrt(sum((v - sum(low) / vn) ** 2 for v in low) / (vn - 1))
    assert p_below == pytest.approx(student_t_upper((0.8 - mean) / (sd / math.sqrt(vn)), vn - 1), rel=1e-9)
    assert p_below < 1e-4
    assert mean_p_value(">", vn, total, sq, 0.8, SCALE) == pytest.approx(1 - p_below)  # the other side
    # the same mean with ten times the spread is no evidence
    wide = [mean + 10 * (v - mean) for v in low]
    assert mean_p_value("<", *_sums(wide), 0.8, SCALE) > 0.01


def test_what_has_no_spread_to_test():
    assert mean_p_value("<", *_sums([0.1]), 0.8, SCALE) == 1.0  # one value
    assert mean_p_value("<", *_sums([0.1, 0.1, 0.1]), 0.8, SCALE) == 0.0  # all equal, past the limit
    assert mean_p_value("<", *_sums([0.9, 0.9, 0.9]), 0.8, SCALE) == 1.0  # all equal, not past it
    vn, total, _ = _sums([0.1, 0.2, 0.3])
    assert mean_p_value("<", vn, total, SQ_MAX, 0.8, SCALE) == 1.0  # squares saturated: unknown spread


# ---- rules, on both engines --------------------------------------------------------------------

# per 10-minute window: a busy model (300 answers) and a quiet one (25); quality ~ N(0.80, 0.08);
# from 3h on both drop by 0.024 (3%)
TESTED = "rule dip: avg(scores.quality) < 0.99x baseline(2h) with 99.9% confidence over 10m by model -> sev3"
PLAIN = "rule dip: avg(scores.quality) < 0.99x baseline(2h) over 10m by model -> sev3"


def _quality_traffic(seed: int, drop_from: int = 18, drop: float = 0.024, windows: int = 24) -> list:
    rng = random.Random(seed)
    out = []
    for w in range(windows):
        for model, n in (("busy", 300), ("quiet", 25)):
            for i in range(n):
                at = w * 10 * MIN + (i * 10 * MIN) // n + (1 if model == "quiet" else 0)
                q = rng.gauss(0.80, 0.08) - (drop if w >= drop_from else 0.0)
                out.append(
                    event(f"{model}-{w}-{i}", at, model=model, user=f"u{i % 11}", scores={"quality": round(q, 3)})
                )
    out.sort(key=lambda e: (e.ts, e.event_id))
    return out


def _both(rule: str, events: list) -> list[dict]:
    python = run(rule, events, engine="python")
    if available():
        assert run(rule, events, engine="native") == python
    return python


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_a_small_drop_is_evidence_in_a_busy_group_and_noise_in_a_quiet_one(seed: int):
    records = _both(TESTED, _quality_traffic(seed))
    opened = of_type(records, "incident.opened")
    assert [o["group"]["model"] for o in opened] == ["busy"]
    sig = opened[0]["significance"]
    assert sig["test"] == "t" and sig["confidence"] == 0.999 and sig["reference"] == "baseline"
    assert sig["trials"] >= 300 and 0.06 < sig["sd"] < 0.1 and sig["p_value"] <= 0.001
    assert sig["observed"] < sig["expected"] and sig["against"] is None
    assert "t-test of" in opened[0]["why"] and "99.9% confidence" in opened[0]["why"]


def test_without_the_test_the_quiet_group_opens_on_its_noise():
    # the same ratio, no test: a quiet group's mean wanders past 0.99x of its baseline
    quiet = 0
    for seed in (1, 2, 3):
        opened = of_type(_both(PLAIN, _quality_traffic(seed, drop_from=99)), "incident.opened")
        quiet += sum(o["group"]["model"] == "quiet" for o in opened)
    assert quiet >= 3
    for seed in (1, 2, 3):  # the tested rule on the same traffic without a drop: nothing
        assert of_type(_both(TESTED, _quality_traffic(seed, drop_from=99)), "incident.opened") == []


def test_crafted_extremes_saturate_the_squares_and_open_nothing():
    # a field of the service's own (no domain: any number up to 1e15, the largest a metric
    # reads) doubling with confidence; a window of values near 1e15: their squares pass an
    # i128, the spread is unknown, the test never passes
    rule = "rule slow: avg(load) > 2x baseline(1h) with 99% confidence over 10m -> sev2"
    rng = random.Random(7)
    events = [event(f"a{i}", i * 6_000, load=800 + rng.randint(0, 400), validate=True) for i in range(1200)]
    events += [event(f"x{i}", 7_200_000 + i * 1000, load=1e15 - i, validate=True) for i in range(40)]
    assert of_type(_both(rule, events), "incident.opened") == []
    plain = "rule slow: avg(load) > 2x baseline(1h) over 10m -> sev2"
    assert len(of_type(_both(plain, events), "incident.opened")) == 1  # the plain average is moved


def test_min_events_defaults_to_twenty_for_a_mean():
    (rule,) = rules(TESTED)
    assert rule.min_events == 20 and rule.keeps_squares
    assert rule_plan(rule)["options"]["keeps_squares"] is True
    (count,) = rules("rule c: count() > 5 with 99% confidence over 10m -> sev3")
    assert count.min_events == 1 and not count.keeps_squares
    (plain,) = rules("rule p: avg(latency_ms) > 100 over 10m -> sev3")
    assert plain.min_events == 20 and not plain.keeps_squares


# ---- snapshots ------------------------------------------------------------------------------------


@needs_native
@pytest.mark.parametrize("cut", [1500, 4000, 6500])
def test_snapshots_carry_the_squares_across_engines(cut: int):
    compiled = rules(TESTED.replace("scores.quality", "latency_ms").replace("<", ">").replace("0.99x", "1.02x"))
    rng = random.Random(cut)
    events = [
        event(f"e{i}", i * 2_000, model="m", latency_ms=rng.randint(2_000_000, 4_000_000) * (2 if i > 6000 else 1))
        for i in range(8000)
    ]  # squares of millionths past 64 bits
    expected = run_events(compiled, events)
    assert of_type(expected, "incident.opened")
    python, native = Engine(compiled), NativeEngine(compiled)
    head = [r for e in events[:cut] for r in python.process(e)]
    assert native.feed_events(events[:cut]).records == head
    snap_python, snap_native = python.snapshot(), native.snapshot()
    assert orjson.loads(orjson.dumps(snap_native)) == orjson.loads(orjson.dumps(snap_python))
    saved = next(iter(snap_python["rules"].values()))["groups"][0]["buckets"][-1][1]
    assert len(saved) == 11 and int(saved[10]) > 2**64
    for restored in (NativeEngine.restore(compiled, snap_python), NativeEngine.restore(compiled, snap_native)):
        assert head + restored.feed_events(events[cut:]).records + restored.finish() == expected
    back = Engine.restore(compiled, orjson.loads(orjson.dumps(snap_native)))
    assert head + [r for e in events[cut:] for r in back.process(e)] + back.finish() == expected


@needs_native
def test_a_bucket_saved_without_its_squares_has_no_known_spread():
    compiled = rules(TESTED)
    events = _quality_traffic(1)
    cut = len(events) * 3 // 4
    python = Engine(compiled)
    for e in events[:cut]:
        python.process(e)
    snap = python.snapshot()
    for item in snap["rules"]["dip"]["groups"]:
        for _, bucket in item["buckets"]:
            del bucket[10:]  # as if written without them
    for restored in (Engine.restore(compiled, snap), NativeEngine.restore(compiled, snap)):
        if isinstance(restored, Engine):
            tail = [r for e in events[cut:] for r in restored.process(e)] + restored.finish()
        else:
            tail = restored.feed_events(events[cut:]).records + restored.finish()
        # the windows that hold a restored bucket are never significant; later ones are again
        opened = of_type(tail, "incident.opened")
        assert opened and all(offset(o) >= events[cut].ts - T0 + 10 * MIN for o in opened)


def test_an_investigation_states_a_mean_test():
    from firebreak.investigate.markdown import _metric
    from firebreak.investigate.model import Report

    (opened,) = of_type(_both(TESTED, _quality_traffic(1)), "incident.opened")
    incident = {
        "rule_text": TESTED,
        "metric": "avg(scores.quality)",
        "window_ms": 10 * MIN,
        "value": opened["value"],
        "baseline": opened["baseline"],
        "threshold": opened["threshold"],
        "peak": opened["value"],
        "significance": opened["significance"],
    }
    report = {"incident": incident, "series": {"points": []}, "anomaly": {"means": "answer quality"}}
    text = "\n".join(_metric(Report.from_json(report)))
    sig = opened["significance"]
    assert f"Significance: a mean of {sig['observed']:.4g} over {sig['trials']} values (sd {sig['sd']:.4g})" in text
    assert "Student's t test against the baseline limit" in text and "under 1 − 99.9%" in text
