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
