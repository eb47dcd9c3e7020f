"""Issue 30: the reference fallback chain of `Kx baseline(S, warmup D, prior P)`.

A group seen for less than its span has no baseline today: a new model under `baseline(6h)`
is silent for 6h10m. With `warmup D` its own shorter history serves once it covers D; with
`prior P` the stated reference serves before that (docs/detection.md#cold-start-the-reference-
fallback-chain). Without either, the records are those of today. On the engine under test
(the rule_engine fixture: each pass of scripts/test runs one engine).
"""

import pytest
from corekit import HOUR, MIN, SEC, T0, event, merged, of_type, offset, rules, run
from firebreak.core.engine import span_baseline
from firebreak.core.window import Bucket

START = 8 * HOUR  # the model's first call


def traffic(spike: tuple[int, int], end: int, model: str = "new-model", begin: int = START) -> list:
    """One call every 2s from ``begin``; 2% hallucinations, 20% during ``spike``."""
    out = []
    for i, at in enumerate(range(begin, end, 2 * SEC)):
        hit = i % 5 == 0 if spike[0] <= at < spike[1] else i % 50 == 0
        out.append(event(f"{model}-{i}", at, model=model, user=f"u{i % 97}", flags={"hallucination": hit}))
    return out


def rule(baseline: str) -> str:
    return f"rate(hallucination) > 3x {baseline} over 10m by model -> sev2"


def opened(records) -> list[int]:
    return [offset(r) - START for r in of_type(records, "incident.opened")]


LATE_SPIKE = (START + 90 * MIN, START + 2 * HOUR)  # 1h30m after the model's first call
EARLY_SPIKE = (START + 20 * MIN, START + 40 * MIN)  # 20 minutes after it


@pytest.mark.usefixtures("rule_engine")
def test_without_fallbacks_a_new_model_is_silent_for_its_span():
    records = run(rule("baseline(6h)"), traffic(LATE_SPIKE, START + 3 * HOUR))
    assert opened(records) == []


@pytest.mark.usefixtures("rule_engine")
def test_a_warm_up_judges_a_new_model_against_its_own_shorter_history():
    records = run(rule("baseline(6h, warmup 1h)"), traffic(LATE_SPIKE, START + 3 * HOUR))
    assert opened(records) == [93 * MIN]  # three minutes into the spike, as with a full span
    first = of_type(records, "incident.opened")[0]
    # its own first 83 minutes (the window ends at 9h23): 50 of 2,490 calls, not a span of 6h
    assert first["baseline"] == pytest.approx(50 / 2490, abs=1e-5)


@pytest.mark.usefixtures("rule_engine")
def test_before_the_warm_up_there_is_no_reference_without_a_prior():
    records = run(rule("baseline(6h, warmup 1h)"), traffic(EARLY_SPIKE, START + HOUR))
    assert opened(records) == []


@pytest.mark.usefixtures("rule_engine")
def test_a_prior_judges_a_group_from_its_first_steps():
    records = run(rule("baseline(6h, warmup 1h, prior 0.02)"), traffic(EARLY_SPIKE, START + HOUR))
    assert opened(records) == [23 * MIN]
    first = of_type(records, "incident.opened")[0]
    assert first["baseline"] == 0.02 and first["threshold"] == 0.06
    # frozen at the onset: it resolves once the window is back under 3 × the prior
    assert [offset(r) - START for r in of_type(records, "incident.resolved")] == [58 * MIN]


@pytest.mark.usefixtures("rule_engine")
def test_a_prior_alone_serves_until_the_whole_span():
    # no warm-up: the prior until the model has been seen for window + span (1h10m here)
    spike = (START + 50 * MIN, START + 65 * MIN)
    records = run(rule("baseline(1h, prior 0.02)"), traffic(spike, START + 2 * HOUR))
    assert opened(records) == [53 * MIN]


@pytest.mark.usefixtures("rule_engine")
def test_rules_without_fallbacks_give_todays_records_on_a_full_span():
    events = traffic((START + 7 * HOUR, START + 7 * HOUR + 30 * MIN), START + 8 * HOUR)
    plain = run(rule("baseline(6h)"), events)
    chained = run(rule("baseline(6h, warmup 1h)"), events)
    assert opened(plain) == opened(chained) == [7 * HOUR + 3 * MIN]


@pytest.mark.usefixtures("rule_engine")
def test_a_model_introduced_mid_world_is_judged_against_the_models_serving():
    # an old model serving since START; a new one from 3h, spiking 20 minutes in
    begin = START + 3 * HOUR
    spike = (begin + 20 * MIN, begin + 40 * MIN)
    events = merged(
        traffic((0, 0), begin + HOUR, model="old-model"),
        traffic(spike, begin + HOUR, model="new-model", begin=begin),
    )
    records = run(rule("baseline(6h, warmup 1h, population)"), events)
    (first,) = of_type(records, "incident.opened")
    assert first["group"] == {"model": "new-model"} and offset(first) == begin + 23 * MIN
    assert first["baseline"] == 0.02  # the old model's rate in the same window: 6 of its 300 calls
    # without the population the new model has no reference for its first hour
    assert of_type(run(rule("baseline(6h, warmup 1h)"), events), "incident.opened") == []


def test_the_warm_up_history_is_scaled_by_its_own_length():
    # count() over 10m against 30 minutes of history holding 90 events: 30 a window
    (compiled,) = rules("count() > 2x baseline(6h, warmup 30m) over 10m by model -> sev3")
    buckets = {}
    for k in range(30):
        b = Bucket(compiled)
        b.n = 3
        buckets[T0 + k * MIN] = b
    at = T0 + 40 * MIN  # the window [30m, 40m), the history [0, 30m)
    assert span_baseline(compiled, buckets, T0, at) == 30.0
    assert span_baseline(compiled, buckets, T0, at - MIN) is None  # 29 minutes of history: not yet
