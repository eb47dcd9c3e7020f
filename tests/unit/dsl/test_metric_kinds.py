"""engine/firebreak/dsl/metrics.py: the one table of metric functions and the kinds rules compile to."""

from __future__ import annotations

import pytest
from firebreak.core.window import Summary
from firebreak.dsl import load_rules
from firebreak.dsl.metrics import (
    AVG,
    COUNT,
    COUNT_FLAGGED,
    DISTINCT,
    FUNCTIONS,
    MAX,
    RATE,
    SUM,
    Accumulates,
    Argument,
    SignificanceTest,
    kind_of,
)


def compiled(condition: str):
    rules, problems = load_rules({"t.rules": f"rule r: {condition} -> sev3"})
    assert not problems, problems
    return rules[0]


@pytest.mark.parametrize(
    ("condition", "kind", "text"),
    [
        ("rate(pii) > 0.1 over 10m", RATE, "rate(pii)"),
        ("count(pii) > 3 over 10m", COUNT_FLAGGED, "count(pii)"),
        ("count() > 3 over 10m", COUNT, "count()"),
        ("reports(wrong) > 3 over 10m", COUNT, "reports(wrong)"),
        ("sum(cost_usd) > 3 over 10m", SUM, "sum(cost_usd)"),
        ("avg(scores.quality) < 0.5 over 10m", AVG, "avg(scores.quality)"),
        ("max(latency_ms) > 9000 over 10m", MAX, "max(latency_ms)"),
        ("distinct(user) > 50 over 10m", DISTINCT, "distinct(user)"),
    ],
)
def test_each_rule_compiles_to_its_kind_and_prints_its_metric(condition, kind, text):
    rule = compiled(condition)
    assert rule.metric is kind
    assert rule.metric_text == text


def test_every_function_has_a_kind_and_percentiles_keep_their_quantile():
    for name, function in FUNCTIONS.items():
        kind = kind_of(name, flagged=function.argument.flag)
        assert kind.func == ("count" if name == "reports" else name)
    assert kind_of("p95", flagged=False).quantile == 0.95
    assert kind_of("p95", flagged=False).accumulates is Accumulates.VALUES
    assert FUNCTIONS["rate"].argument is Argument.FLAG and FUNCTIONS["rate"].rates
    assert [n for n, f in FUNCTIONS.items() if f.counts] == ["rate", "count", "reports"]
    assert FUNCTIONS["sum"].numeric and not FUNCTIONS["distinct"].numeric


def test_values_samples_and_impact_read_from_a_window():
    w = Summary(n=10, hits=3, vn=4, total=6_000_000, lo=0.5, hi=2.5)
    assert RATE.value(w) == 0.3 and RATE.sample_size(w) == 10 and RATE.impact_events(w) == 3
    assert COUNT.value(w) == 10.0 and COUNT.impact_events(w) == 10
    assert COUNT_FLAGGED.value(w) == 3.0 and COUNT_FLAGGED.impact_events(w) == 3
    assert SUM.value(w) == 6.0 and SUM.sample_size(w) == 4
    assert AVG.value(w) == 1.5 and AVG.impact_events(w) == 4
    assert MAX.value(w) == 2.5
    assert RATE.value(Summary()) is None and AVG.value(Summary()) is None


def test_baselines_scale_to_the_window_with_their_floors():
    # a 60-minute span read for a 10-minute window: scale 1/6
    assert SUM.scale_baseline(60.0, 100, 1 / 6) == pytest.approx(10.0)
    assert COUNT.scale_baseline(3.0, 3, 1 / 6) == 1.0  # at least one event per window
    assert COUNT_FLAGGED.scale_baseline(0.0, 300, 1 / 6) == 1.0
    assert RATE.scale_baseline(0.0, 600, 1 / 6) == pytest.approx(0.01)  # one flagged per window's 100
    assert AVG.scale_baseline(0.7, 600, 1 / 6) == 0.7  # not a volume: unscaled
    assert DISTINCT.slices_baseline and not SUM.slices_baseline


def test_significance_weighs_counts_with_the_test_of_the_kind():
    w = Summary(n=250, hits=4)
    assert RATE.test is SignificanceTest.BINOMIAL and RATE.significance_counts(w) == (4, 250)
    assert COUNT.test is SignificanceTest.POISSON and COUNT.significance_counts(w) == (250, 250)
    assert COUNT_FLAGGED.significance_counts(w) == (4, 250)
    assert RATE.reference(1.7) == 1.0 and COUNT.reference(1.7) == 1.7
    assert RATE.expected(0.01, 250) == 2.5 and COUNT.expected(4.0, 250) == 4.0


def test_the_gate_of_min_events_follows_whether_the_metric_grows_with_the_window():
    assert not compiled("count() > 3 over 10m").needs_sample
    assert not compiled("distinct(user) > 3 over 10m").needs_sample
    assert compiled("p95(latency_ms) > 3 over 10m").needs_sample
    assert compiled("count() > 3x baseline over 10m").needs_sample


def test_a_kind_the_native_engine_lacks_is_refused_there_and_runs_on_the_python_core():
    """Both engines by name, in every pass: what each does with a kind only one has."""
    import dataclasses

    import pytest
    from firebreak.core import Engine
    from firebreak.errors import EngineError
    from firebreak.native import NativeEngine, available
    from firebreak.native.plan import unsupported
    from firebreak.testing import event

    assert available()
    (native_rule,) = load_rules({"t.rules": "rule r: rate(pii) > 0.2 over 1m by tenant -> sev3"})[0]
    python_only = dataclasses.replace(native_rule, metric=dataclasses.replace(RATE, native=False))
    assert unsupported(native_rule) is None and "rate() is not native" in unsupported(python_only)
    events = [event(f"e{i}", i * 1000, tenant="acme", flags={"pii": 30 <= i < 60}) for i in range(180)]
    python = Engine([python_only])
    expected = [r for e in events for r in python.process(e)] + python.finish()
    assert [r["type"] for r in expected] == ["incident.opened", "incident.escalated", "incident.resolved"]
    engine = NativeEngine([native_rule])
    assert engine.feed_events(events).records + engine.finish() == expected
    with pytest.raises(EngineError, match=r"^rule r cannot run on the native engine \(metric function rate\(\) is not"):
        NativeEngine([python_only])
