"""Parser: rule text → AST rows. Spans take no part in equality, so the expected
trees below are written without them; a few tests at the end check spans."""

from __future__ import annotations

import pytest
from firebreak.dsl import ast as a
from firebreak.dsl import parse_rule, parse_rules
from firebreak.dsl.parser import RuleSyntaxError, split_rules

# ---- small builders for expected trees -------------------------------------------


def f(dotted: str) -> a.FieldPath:
    return a.FieldPath(tuple(dotted.split(".")))


def d(amount: int | float, unit: str) -> a.Duration:
    return a.Duration(amount, unit)


def metric(func: str, arg: str | None = None) -> a.Metric:
    return a.Metric(func, f(arg) if arg is not None else None)


def absolute(value: int | float) -> a.AbsoluteThreshold:
    return a.AbsoluteThreshold(value)


def baseline(factor: int | float, span: a.Duration | None = None) -> a.BaselineThreshold:
    return a.BaselineThreshold(factor, "x", span)


def cond(
    m: a.Metric,
    op: str,
    threshold: a.Threshold,
    window: a.Duration,
    *,
    by: tuple[str, ...] = (),
    where: a.Expr | None = None,
    for_: a.Duration | None = None,
    min_events: int | None = None,
) -> a.Condition:
    return a.Condition(
        m,
        op,
        threshold,
        window,
        tuple(f(p) for p in by),
        where,
        for_,
        a.MinEvents(min_events) if min_events is not None else None,
    )


def sev(name: str) -> a.Severity:
    return a.Severity(name)


def contain(action: str, hold: bool = False, for_: a.Duration | None = None, **params: a.Literal) -> a.Contain:
    return a.Contain(action, tuple(a.Param(k, v) for k, v in params.items()), hold, for_)


def outcome(
    severity: str,
    *contains: a.Contain,
    escalations: tuple[a.Escalate, ...] = (),
    category: str | None = None,
    notifies: tuple[str, ...] = (),
) -> a.Outcome:
    return a.Outcome(
        sev(severity),
        contains,
        escalations,
        a.CategoryOverride(category) if category is not None else None,
        tuple(a.Notify(t) for t in notifies),
    )


def rule(condition: a.Condition, out: a.Outcome, name: str | None = None) -> a.Rule:
    return a.Rule(name, condition, out)


def eq(path: str, value: a.Literal) -> a.Compare:
    return a.Compare(f(path), "==", value)


# ---- the issue's examples, accepted exactly as written -----------------------------

ISSUE_EXAMPLES = [
    (
        "rate(hallucination) > 3x baseline over 10m -> sev2 contain fallback",
        rule(cond(metric("rate", "hallucination"), ">", baseline(3), d(10, "m")), outcome("sev2", contain("fallback"))),
    ),
    (
        "count(pii) >= 1 over 1m by tenant -> sev1 contain disable_feature",
        rule(
            cond(metric("count", "pii"), ">=", absolute(1), d(1, "m"), by=("tenant",)),
            outcome("sev1", contain("disable_feature")),
        ),
    ),
    (
        "avg(scores.quality) < 0.8x baseline(6h) over 30m by model -> sev3",
        rule(
            cond(metric("avg", "scores.quality"), "<", baseline(0.8, d(6, "h")), d(30, "m"), by=("model",)),
            outcome("sev3"),
        ),
    ),
    (
        "rate(prompt_injection) > 0.2 over 5m by user -> sev2 contain block_user",
        rule(
            cond(metric("rate", "prompt_injection"), ">", absolute(0.2), d(5, "m"), by=("user",)),
            outcome("sev2", contain("block_user")),
        ),
    ),
    (
        "sum(cost_usd) > 5x baseline over 15m by service -> sev2 contain rate_limit",
        rule(
            cond(metric("sum", "cost_usd"), ">", baseline(5), d(15, "m"), by=("service",)),
            outcome("sev2", contain("rate_limit")),
        ),
    ),
    (
        'p95(latency_ms) > 2000 over 5m where model == "gpt-4o" -> sev3',
        rule(
            cond(metric("p95", "latency_ms"), ">", absolute(2000), d(5, "m"), where=eq("model", "gpt-4o")),
            outcome("sev3"),
        ),
    ),
    (
        "rate(hallucination) > 3x baseline over 10m by model, prompt_template"
        ' where service == "support-bot" and tenant in ["acme", "globex"] for 2m min 50 events'
        ' -> sev2 contain fallback(model="small-safe") notify "#ai-oncall"',
        rule(
            cond(
                metric("rate", "hallucination"),
                ">",
                baseline(3),
                d(10, "m"),
                by=("model", "prompt_template"),
                where=a.And(eq("service", "support-bot"), a.InList(f("tenant"), ("acme", "globex"))),
                for_=d(2, "m"),
                min_events=50,
            ),
            outcome("sev2", contain("fallback", model="small-safe"), notifies=("#ai-oncall",)),
        ),
    ),
    (
        "count() > 10x baseline(24h) over 5m by service -> sev3 contain rate_limit(rps=50)",
        rule(
            cond(metric("count"), ">", baseline(10, d(24, "h")), d(5, "m"), by=("service",)),
            outcome("sev3", contain("rate_limit", rps=50)),
        ),
    ),
]


@pytest.mark.parametrize(("text", "expected"), ISSUE_EXAMPLES, ids=[t[:40] for t, _ in ISSUE_EXAMPLES])
def test_issue_examples_parse_exactly_as_written(text: str, expected: a.Rule) -> None:
    rule_file, problems = parse_rules(text, "issue.rules")
    assert problems == []
    assert rule_file.rules == (expected,)


def test_issue_examples_together_in_one_file() -> None:
    text = "\n".join(t for t, _ in ISSUE_EXAMPLES) + "\n"
    rule_file, problems = parse_rules(text, "issue.rules")
    assert problems == []
    assert rule_file == a.RuleFile("issue.rules", tuple(r for _, r in ISSUE_EXAMPLES))


# ---- every other construct ------------------------------------------------------------

BASE = "count() > 1 over 1m"

CONSTRUCTS = [
    # metrics and functions
    (
        "min(latency_ms) < 5 over 1m -> sev4",
        rule(cond(metric("min", "latency_ms"), "<", absolute(5), d(1, "m")), outcome("sev4")),
    ),
    (
        "max(tokens_out) >= 4000 over 1h -> sev4",
        rule(cond(metric("max", "tokens_out"), ">=", absolute(4000), d(1, "h")), outcome("sev4")),
    ),
    (
        "distinct(user) > 1000 over 1d -> sev4",
        rule(cond(metric("distinct", "user"), ">", absolute(1000), d(1, "d")), outcome("sev4")),
    ),
    (
        "p99(latency_ms) <= 10 over 30s -> sev4",
        rule(cond(metric("p99", "latency_ms"), "<=", absolute(10), d(30, "s")), outcome("sev4")),
    ),
    # decimal and negative thresholds
    (
        "avg(scores.quality) < 0.75 over 1m -> sev3",
        rule(cond(metric("avg", "scores.quality"), "<", absolute(0.75), d(1, "m")), outcome("sev3")),
    ),
    (
        "min(scores.delta) < -1.5 over 1m -> sev3",
        rule(cond(metric("min", "scores.delta"), "<", absolute(-1.5), d(1, "m")), outcome("sev3")),
    ),
    # deep field paths in the metric and in by
    (
        "avg(a.b.c) > 1 over 1m by x.y, z -> sev4",
        rule(cond(metric("avg", "a.b.c"), ">", absolute(1), d(1, "m"), by=("x.y", "z")), outcome("sev4")),
    ),
    # for / min on their own
    (
        f"{BASE} for 5m -> sev2",
        rule(cond(metric("count"), ">", absolute(1), d(1, "m"), for_=d(5, "m")), outcome("sev2")),
    ),
    (
        f"{BASE} min 100 events -> sev2",
        rule(cond(metric("count"), ">", absolute(1), d(1, "m"), min_events=100), outcome("sev2")),
    ),
    # outcome clauses
    (
        f"{BASE} -> sev2 escalate sev1 if users > 100",
        rule(
            cond(metric("count"), ">", absolute(1), d(1, "m")),
            outcome("sev2", escalations=(a.Escalate(sev("sev1"), "users", ">", 100),)),
        ),
    ),
    (
        f"{BASE} -> sev3 escalate sev2 if events >= 500 escalate sev1 if users > 1000",
        rule(
            cond(metric("count"), ">", absolute(1), d(1, "m")),
            outcome(
                "sev3",
                escalations=(
                    a.Escalate(sev("sev2"), "events", ">=", 500),
                    a.Escalate(sev("sev1"), "users", ">", 1000),
                ),
            ),
        ),
    ),
    (
        f"{BASE} -> sev2 category cost",
        rule(cond(metric("count"), ">", absolute(1), d(1, "m")), outcome("sev2", category="cost")),
    ),
    (
        f"{BASE} -> sev2 contain rollback hold",
        rule(cond(metric("count"), ">", absolute(1), d(1, "m")), outcome("sev2", contain("rollback", hold=True))),
    ),
    (
        f"{BASE} -> sev2 contain circuit_breaker for 15m",
        rule(
            cond(metric("count"), ">", absolute(1), d(1, "m")),
            outcome("sev2", contain("circuit_breaker", for_=d(15, "m"))),
        ),
    ),
    (
        f'{BASE} -> sev2 contain fallback(model="small", temperature=0.2, strict=true, retries=-1) hold for 2h',
        rule(
            cond(metric("count"), ">", absolute(1), d(1, "m")),
            outcome(
                "sev2",
                contain("fallback", hold=True, for_=d(2, "h"), model="small", temperature=0.2, strict=True, retries=-1),
            ),
        ),
    ),
    (
        f"{BASE} -> sev2 contain fallback() ",
        rule(cond(metric("count"), ">", absolute(1), d(1, "m")), outcome("sev2", contain("fallback"))),
    ),
    # outcome clauses in any order land in the same fields, in written order within a kind
    (
        f'{BASE} -> sev2 notify "#a" category cost contain x escalate sev1 if users > 5 notify "b" contain y',
        rule(
            cond(metric("count"), ">", absolute(1), d(1, "m")),
            outcome(
                "sev2",
                contain("x"),
                contain("y"),
                escalations=(a.Escalate(sev("sev1"), "users", ">", 5),),
                category="cost",
                notifies=("#a", "b"),
            ),
        ),
    ),
    # string escapes
    (
        f'{BASE} -> sev2 notify "say \\"hi\\" \\\\ ok\\n\\t"',
        rule(cond(metric("count"), ">", absolute(1), d(1, "m")), outcome("sev2", notifies=('say "hi" \\ ok\n\t',))),
    ),
]


@pytest.mark.parametrize(("text", "expected"), CONSTRUCTS, ids=[t for t, _ in CONSTRUCTS])
def test_constructs(text: str, expected: a.Rule) -> None:
    assert parse_rule(text) == expected


def test_second_category_is_kept_for_the_checker() -> None:
    parsed = parse_rule(f"{BASE} -> sev2 category cost category adversarial")
    assert parsed.outcome.category == a.CategoryOverride("cost")
    assert parsed.outcome.extra_categories == (a.CategoryOverride("adversarial"),)


def test_units_are_recorded_not_judged() -> None:
    """`10x` where a duration belongs is a Duration with unit x; the checker says what is wrong."""
    parsed = parse_rule("count() > 3 over 10x -> sev9")
    assert parsed.condition.window == d(10, "x")
    assert parsed.condition.threshold == absolute(3)
    assert parsed.outcome.severity == sev("sev9")
    assert parse_rule("count() > 3y over 1m -> sev2").condition.threshold == a.AbsoluteThreshold(3, "y")
    assert parse_rule("count() > 3 baseline over 1m -> sev2").condition.threshold == a.BaselineThreshold(3, "")


# ---- where expressions: precedence not > and > or ----------------------------------------

X, Y, Z, W = (a.Truthy(f(n)) for n in "xyzw")

WHERE = [
    ("x", X),
    ("flags.pii", a.Truthy(f("flags.pii"))),
    ("not x", a.Not(X)),
    ("not not x", a.Not(a.Not(X))),
    ("x and y", a.And(X, Y)),
    ("x or y", a.Or(X, Y)),
    ("x or y and z", a.Or(X, a.And(Y, Z))),
    ("x and y or z", a.Or(a.And(X, Y), Z)),
    ("not x and y", a.And(a.Not(X), Y)),
    ("not x or y", a.Or(a.Not(X), Y)),
    ("not (x or y)", a.Not(a.Or(X, Y))),
    ("(x or y) and z", a.And(a.Or(X, Y), Z)),
    ("x and (y or z)", a.And(X, a.Or(Y, Z))),
    ("x or y or z", a.Or(a.Or(X, Y), Z)),  # left-associative
    ("x and y and z", a.And(a.And(X, Y), Z)),
    ("x or y and not z or w", a.Or(a.Or(X, a.And(Y, a.Not(Z))), W)),
    ("((x))", X),
    ('model == "gpt-4o"', eq("model", "gpt-4o")),
    ("latency_ms >= 100", a.Compare(f("latency_ms"), ">=", 100)),
    ("scores.quality < 0.5", a.Compare(f("scores.quality"), "<", 0.5)),
    ("retries != -2", a.Compare(f("retries"), "!=", -2)),
    ("flags.pii == true", eq("flags.pii", True)),
    ("flags.pii != false", a.Compare(f("flags.pii"), "!=", False)),
    ('tenant in ["acme", "globex"]', a.InList(f("tenant"), ("acme", "globex"))),
    ('tenant not in ["acme"]', a.InList(f("tenant"), ("acme",), negated=True)),
    ('x in [1, 2.5, "s", true, false]', a.InList(f("x"), (1, 2.5, "s", True, False))),
    ("x in []", a.InList(f("x"), ())),
    ('not tenant in ["a"]', a.Not(a.InList(f("tenant"), ("a",)))),
    ('not tenant not in ["a"]', a.Not(a.InList(f("tenant"), ("a",), negated=True))),
    (
        'a == 1 and b not in ["x"] or not c',
        a.Or(a.And(eq("a", 1), a.InList(f("b"), ("x",), negated=True)), a.Not(a.Truthy(f("c")))),
    ),
]


@pytest.mark.parametrize(("expr", "expected"), WHERE, ids=[e for e, _ in WHERE])
def test_where_expressions(expr: str, expected: a.Expr) -> None:
    assert parse_rule(f"{BASE} where {expr} -> sev2").condition.where == expected


# ---- file layout: named blocks, comments, blank lines ----------------------------------------

FILE = """\
# Firebreak starter rules
# (comments and blank lines belong to no rule)

rule hallucination_spike:
  # what it catches
  rate(hallucination) > 3x baseline over 10m
    by model, prompt_template   # trailing comment
    where service == "support-bot"

  -> sev2
     contain fallback(model="small-safe")
     notify "#ai-oncall"

count(pii) >= 1 over 1m by tenant -> sev1 contain disable_feature
rule one_liner: p95(latency_ms) > 2000 over 5m -> sev3
rule
  split_header:
  sum(cost_usd) > 5x baseline over 15m -> sev2
"""


def test_named_blocks_comments_and_blank_lines() -> None:
    rule_file, problems = parse_rules(FILE, "starter.rules")
    assert problems == []
    assert rule_file == a.RuleFile(
        "starter.rules",
        (
            rule(
                cond(
                    metric("rate", "hallucination"),
                    ">",
                    baseline(3),
                    d(10, "m"),
                    by=("model", "prompt_template"),
                    where=eq("service", "support-bot"),
                ),
                outcome("sev2", contain("fallback", model="small-safe"), notifies=("#ai-oncall",)),
                name="hallucination_spike",
            ),
            rule(
                cond(metric("count", "pii"), ">=", absolute(1), d(1, "m"), by=("tenant",)),
                outcome("sev1", contain("disable_feature")),
            ),
            rule(cond(metric("p95", "latency_ms"), ">", absolute(2000), d(5, "m")), outcome("sev3"), "one_liner"),
            rule(cond(metric("sum", "cost_usd"), ">", baseline(5), d(15, "m")), outcome("sev2"), "split_header"),
        ),
    )


def test_split_rules_keeps_line_numbers() -> None:
    chunks = split_rules("# c\n\nrule a:\n  x\n\n  y\nz\n  # c\n   w\n")
    assert chunks == [(3, "\n\nrule a:\n  x\n\n  y"), (7, "\n" * 6 + "z\n\n   w")]


def test_empty_and_comment_only_files_have_no_rules() -> None:
    for text in ("", "\n\n", "# only a comment\n   # indented comment\n"):
        assert parse_rules(text, "e.rules") == (a.RuleFile("e.rules", ()), [])


def test_crlf_line_endings() -> None:
    text = "rule a:\r\n  count() > 1 over 1m\r\n  -> sev2\r\n"
    rule_file, problems = parse_rules(text)
    assert problems == []
    assert rule_file.rules == (rule(cond(metric("count"), ">", absolute(1), d(1, "m")), outcome("sev2"), "a"),)


def test_parse_rule_wants_exactly_one_rule() -> None:
    with pytest.raises(RuleSyntaxError, match="expected one rule, found 2"):
        parse_rule(f"{BASE} -> sev2\n{BASE} -> sev3")
    with pytest.raises(RuleSyntaxError, match="expected one rule, found 0"):
        parse_rule("# nothing")
    with pytest.raises(RuleSyntaxError) as caught:
        parse_rule("count() > 1 over 1m")
    assert [(p.line, p.column) for p in caught.value.diagnostics] == [(1, 20)]


# ---- spans ---------------------------------------------------------------------------------

MULTI = """\
# header

rule first:
  rate(hallucination) > 3x baseline(1h) over 10m
    by model
  -> sev2 contain fallback(model="small")

count(pii) >= 1 over 1m -> sev1
rule second: p95(latency_ms) > 2000 over 5m where model == "gpt-4o" -> sev3
"""


def span(line: int, column: int, end_line: int, end_column: int) -> a.Span:
    return a.Span(line, column, end_line, end_column)


def test_spans_in_a_multi_rule_file() -> None:
    rule_file, problems = parse_rules(MULTI, "m.rules")
    assert problems == []
    first, unnamed, second = rule_file.rules
    assert first.name_span == span(3, 6, 3, 11)
    assert first.span == span(3, 1, 6, 42)
    c = first.condition
    assert c.span == span(4, 3, 5, 13)
    assert c.metric.span == span(4, 3, 4, 22)
    assert c.metric.arg.span == span(4, 8, 4, 21)
    assert c.threshold.span == span(4, 25, 4, 40)
    assert c.threshold.span_of_baseline.span == span(4, 37, 4, 39)
    assert c.window.span == span(4, 46, 4, 49)
    assert c.by[0].span == span(5, 8, 5, 13)
    assert first.outcome.span == span(6, 6, 6, 42)
    assert first.outcome.severity.span == span(6, 6, 6, 10)
    assert first.outcome.contains[0].span == span(6, 11, 6, 42)
    assert first.outcome.contains[0].params[0].span == span(6, 28, 6, 41)

    assert unnamed.name is None
    assert unnamed.span == span(8, 1, 8, 32)
    assert unnamed.outcome.severity.span == span(8, 28, 8, 32)

    assert second.name_span == span(9, 6, 9, 12)
    assert second.span == span(9, 1, 9, 76)
    where = second.condition.where
    assert where.span == span(9, 51, 9, 68)
    assert where.path.span == span(9, 51, 9, 56)


def text_at(text: str, s: a.Span) -> str:
    assert s.line == s.end_line
    return text.splitlines()[s.line - 1][s.column - 1 : s.end_column - 1]


def test_spans_cover_the_text_they_came_from() -> None:
    rule_file, _ = parse_rules(MULTI)
    first, unnamed, second = rule_file.rules
    assert text_at(MULTI, first.condition.threshold.span) == "3x baseline(1h)"
    assert text_at(MULTI, first.condition.window.span) == "10m"
    assert text_at(MULTI, first.outcome.span) == 'sev2 contain fallback(model="small")'
    assert text_at(MULTI, unnamed.span) == "count(pii) >= 1 over 1m -> sev1"
    assert text_at(MULTI, second.condition.where.span) == 'model == "gpt-4o"'


def test_spans_of_where_operators() -> None:
    where = parse_rule("count() > 1 over 1m where not (a or b) and c -> sev2").condition.where
    assert isinstance(where, a.And)
    assert where.span == span(1, 27, 1, 45)
    assert where.left.span == span(1, 27, 1, 39)
    assert where.left.operand.span == span(1, 32, 1, 38)
    assert where.right.span == span(1, 44, 1, 45)
