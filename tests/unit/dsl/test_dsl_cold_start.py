"""`Kx baseline(S, warmup D, population, prior P)`: parsed, printed back, checked with
path:line:col, compiled into the plan (docs/dsl.md#thresholds, docs/detection.md#cold-start-
the-reference-fallback-chain)."""

from __future__ import annotations

import pytest
from firebreak.dsl import load_rules
from firebreak.dsl.parser import parse_rule
from firebreak.dsl.printer import print_rule


def compiled(condition: str):
    rules, problems = load_rules({"t.rules": f"rule r:\n  {condition} -> sev3\n"})
    assert problems == [], [p.message for p in problems]
    return rules[0]


def problems_of(condition: str) -> list[str]:
    _, problems = load_rules({"t.rules": f"rule r:\n  {condition} -> sev3\n"})
    return [f"{p.line}:{p.column} {p.message}" for p in problems]


@pytest.mark.parametrize(
    ("written", "printed"),
    [
        ("3x baseline(6h, warmup 1h)", "3x baseline(6h, warmup 1h)"),
        ("3x baseline(6h, prior 0.02)", "3x baseline(6h, prior 0.02)"),
        # the options in any order; printed in the order they apply
        ("3x baseline(6h, prior 0.02, population, warmup 60m)", "3x baseline(6h, warmup 60m, population, prior 0.02)"),
        ("3x baseline(6h)", "3x baseline(6h)"),
    ],
)
def test_the_options_print_back_in_the_order_they_apply(written: str, printed: str):
    text = f"rate(hallucination) > {written} over 10m by model -> sev2"
    canonical = print_rule(parse_rule(text))
    assert printed in canonical
    assert print_rule(parse_rule(canonical)) == canonical


def test_the_plan_carries_the_chain():
    rule = compiled("rate(hallucination) > 3x baseline(6h, warmup 90m, population, prior 0.02) over 10m by model")
    plan = rule.plan()
    assert plan["window"]["warmup_ms"] == 90 * 60_000
    assert plan["condition"]["population_fallback"] is True and plan["condition"]["prior"] == 0.02
    plain = compiled("rate(hallucination) > 3x baseline(6h) over 10m by model").plan()
    assert plain["window"]["warmup_ms"] == 0
    assert plain["condition"]["population_fallback"] is False and plain["condition"]["prior"] is None


def test_a_warm_up_is_whole_steps():
    rule = compiled("count() > 3x baseline(6h, warmup 61m) over 30m by model")
    assert rule.warmup_ms % rule.step_ms == 0 and rule.warmup_ms >= 61 * 60_000


@pytest.mark.parametrize(
    ("condition", "at", "message"),
    [
        (
            "rate(x) > 3x baseline(6h, warmup 5m) over 10m by model",
            "5m",
            "the warm-up must be at least as long as the window",
        ),
        (
            "rate(x) > 3x baseline(6h, warmup 6h) over 10m by model",
            "6h)",
            "the warm-up must be shorter than the baseline span (a full span needs none)",
        ),
        (
            "rate(x) > 3x baseline(6h, warmup 5x) over 10m by model",
            "5x",
            "`5x` is not a duration; use 10s, 10m, 10h, 10d",
        ),
        (
            "rate(x) > 3x baseline(6h, prior 2) over 10m by model",
            "2)",
            "a rate's prior is a fraction between 0 and 1, not `2`",
        ),
        ("count() > 3x baseline(6h, prior 0) over 10m by model", "0)", "the prior must be greater than 0, not `0`"),
        (
            "count() > 3x baseline(6h, prior 5m) over 10m by model",
            "5m)",
            "the prior `5m` is not a number; write the reference itself, e.g. `prior 0.02`",
        ),
        (
            "avg(latency_ms) > 3x baseline(6h, population) over 10m by model",
            "population",
            "`population` is a rate's reference: a cold group of another metric falls back to `prior`",
        ),
        (
            "rate(x) > 3x baseline(6h, population) over 10m",
            "population",
            "`population` compares a group with the rest of the rule's groups; add `by`, e.g. `by model`",
        ),
        (
            "rate(x) > 3x baseline(6h, warmup 1h, warmup 2h) over 10m by model",
            "2h",
            "`warmup` is given twice in `baseline(...)`",
        ),
    ],
)
def test_mistakes_are_reported_where_they_are(condition: str, at: str, message: str):
    column = 3 + condition.index(at)  # the rule's line is indented by two
    assert f"2:{column} {message}" in problems_of(condition)


def test_an_unknown_option_names_the_ones_there_are():
    (problem,) = problems_of("rate(x) > 3x baseline(6h, priro 0.02) over 10m by model")
    assert "`prior`" in problem and "`warmup`" in problem and "`population`" in problem


def test_check_states_the_chain_in_the_reference_line():
    from firebreak.adapters.calibration import reference_text

    chain = compiled("rate(hallucination) > 3x baseline(6h, warmup 1h, population, prior 0.02) over 10m by model")
    assert reference_text(chain) == (
        "the group's own past 6h (`Kx baseline`); before that its own history once it covers 1h "
        "(seen for 1h10m) with at least 20 events; else the rest of its groups in the same window "
        "(as `Kx population`); else the prior 0.02, from its first step"
    )
    warm = compiled("rate(hallucination) > 3x baseline(6h, warmup 1h) over 10m by model")
    assert reference_text(warm).endswith("with at least 20 events; else it is not judged")
    tested = compiled("rate(hallucination) > 3x baseline(6h, warmup 1h) with 99.9% confidence over 10m by model")
    assert reference_text(tested).endswith(
        "with at least 1 event, tested two-sample against its counts (a short history needs more evidence); "
        "else it is not judged"
    )
    # what `--false-per-day` counts as the rule's warm-up: the span, the warm-up, or nothing more
    plain = compiled("rate(hallucination) > 3x baseline(6h) over 10m by model")
    assert (plain.reference_wait_ms, warm.reference_wait_ms, chain.reference_wait_ms) == (6 * 3_600_000, 3_600_000, 0)


# ---- robust and seasonal references: `baseline(S, median | trimmed P% | seasonal D)` ----------


@pytest.mark.parametrize(
    ("written", "printed"),
    [
        ("3x baseline(6h, median)", "3x baseline(6h, median)"),
        ("3x baseline(6h, trimmed 10%)", "3x baseline(6h, trimmed 10%)"),
        ("3x baseline(7d, median, seasonal 1d, warmup 1d)", "3x baseline(7d, warmup 1d, seasonal 1d, median)"),
    ],
)
def test_slice_options_print_back_in_one_order(written: str, printed: str):
    rule = parse_rule(f"rate(x) > {written} over 10m by model -> sev3")
    assert printed in print_rule(rule)


@pytest.mark.parametrize(
    ("condition", "at", "message"),
    [
        (
            "rate(x) > 3x baseline(6h, median, trimmed 10%) over 10m",
            "10%",
            "`median` is `trimmed 50%`: give one of them",
        ),
        (
            "rate(x) > 3x baseline(6h, trimmed 10) over 10m",
            "10)",
            "`trimmed` takes the percentage cut from each end, e.g. `trimmed 10%`, not `10`",
        ),
        (
            "rate(x) > 3x baseline(6h, trimmed 60%) over 10m",
            "60%",
            "`trimmed` cuts more than 0% and at most 50% from each end, not `60%`",
        ),
        (
            "rate(x) > 3x baseline(6h, trimmed 0%) over 10m",
            "0%",
            "`trimmed` cuts more than 0% and at most 50% from each end, not `0%`",
        ),
        (
            "rate(x) > 3x baseline(20m, median) over 10m",
            "median",
            "a median or trimmed mean needs at least three windows in the baseline span",
        ),
        (
            "rate(x) > 3x baseline(6h, seasonal 5m) over 10m",
            "5m",
            "the season must be at least as long as the window (the same hour yesterday: `seasonal 1d`)",
        ),
        (
            "rate(x) > 3x baseline(6h, seasonal 1d) over 10m",
            "1d",
            "the baseline span must hold at least one season, e.g. `baseline(7d, seasonal 1d)`",
        ),
        (
            "rate(x) > 3x baseline(2d, seasonal 1d, warmup 2h) over 10m",
            "2h",
            "a warm-up shorter than the season holds no season to compare with",
        ),
        (
            "rate(x) > 3x baseline(7d, seasonal 99999d) over 10m",
            "99999d",
            "the season `99999d` is longer than the limit, 42d",
        ),
    ],
)
def test_slice_mistakes_are_reported_where_they_are(condition: str, at: str, message: str):
    column = 3 + condition.index(at)
    assert f"2:{column} {message}" in problems_of(condition)


def test_an_unknown_option_names_the_slice_options_too():
    (problem,) = problems_of("rate(x) > 3x baseline(6h, medain) over 10m by model")
    assert "`median`" in problem and "`trimmed`" in problem and "`seasonal`" in problem


def test_check_says_how_the_reference_is_read():
    from firebreak.adapters.calibration import reference_text

    median = compiled("rate(hallucination) > 3x baseline(6h, median) over 10m by model")
    assert reference_text(median).startswith(
        "the group's own past 6h, the median of its 10m windows (`Kx baseline`): a group is not judged"
    )
    # a median's warm-up is tested as known: not "two-sample"
    tested = compiled("rate(hallucination) > 3x baseline(6h, median, warmup 1h) with 99% confidence over 10m by model")
    assert reference_text(tested).endswith("covers 1h (seen for 1h10m) with at least 1 event; else it is not judged")
    trimmed = compiled("rate(hallucination) > 3x baseline(6h, trimmed 10%) over 10m by model")
    assert ", the mean, the highest and lowest 10% cut, of its 10m windows" in reference_text(trimmed)
    seasonal = compiled("count() > 3x baseline(7d, seasonal 1d, warmup 1d) over 1h by model")
    assert reference_text(seasonal).startswith(
        "the group's own past 168h, the mean of the same 1h every 24h back (`Kx baseline`); before that"
    )
