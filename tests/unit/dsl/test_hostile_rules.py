"""Issue 31, the rules half: rule text past the documented limits (engine/firebreak/dsl/limits.py,
docs/dsl.md#limits) is refused by the check with a located diagnostic, never a traceback; rule
text within them compiles and runs on both engines."""

from __future__ import annotations

from pathlib import Path

import pytest
from firebreak.core import Engine, validate_event
from firebreak.dsl import limits, load_rules
from firebreak.dsl.diagnostics import render_all
from firebreak.dsl.limits import MAX_NUMBER, MAX_TREE_DEPTH, MAX_WHERE_DEPTH, MAX_WHERE_TERMS
from firebreak.native import NativeEngine
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

N = MAX_NUMBER
T0 = 1_767_225_600_000  # 2026-01-01T00:00:00Z


def chain(terms: int, op: str = "and") -> str:
    return f" {op} ".join(f"f{i} == 1" for i in range(terms))


# (rule text, where the error is: column, what its message says)
REFUSED = [
    ("rate(pii) > 0.1 over 10m -> sev2 contain rate_limit(rps=1) for 3000000d", 64, "longer than the limit, 30d"),
    ("rate(pii) > 0.1 over 10m -> sev2 contain rate_limit(rps=99999999999999999999999)", 53, "out of range"),
    ("count() > 5 over 99999999999d -> sev2", 18, "the window `99999999999d` is longer than the limit, 7d"),
    ("count() > 5 over 8d -> sev2", 18, "the window `8d` is longer than the limit, 7d"),
    ("count() > 3x baseline(99999999999d) over 10m -> sev2", 23, "baseline span `99999999999d` is longer"),
    ("count() > 3x baseline(43d) over 10m -> sev2", 23, "the baseline span `43d` is longer than the limit, 42d"),
    ("count() > 5 over 10m for 8d -> sev2", 26, "the `for` duration `8d` is longer than the limit, 7d"),
    ("rate(pii) > 0.1 over 10m min 99999999999999999999 events -> sev2", 30, "out of range"),
    ("rate(pii) > 0.1 over 10m min 99999999999999999999 flagged -> sev2", 30, "out of range"),
    (f"count() > {'9' * 401} over 10m -> sev2", 11, "a number of more than 64 digits is out of range"),
    (f"count() > {'9' * 5000} over 10m -> sev2", 11, "a number of more than 64 digits is out of range"),
    (f"count() > -{N + 1} over 10m -> sev2", 11, "out of range"),
    (f"count() > {N * 10}.5 over 10m -> sev2", 11, "out of range"),
    (f"count() > {N + 1}x baseline over 10m -> sev2", 11, "out of range"),
    (f"count() > 5 over 10m where latency_ms > {N * 2} -> sev2", 28, "out of range"),
    (f"count() > 5 over 10m where latency_ms in [1, {'7' * 300}.5] -> sev2", 28, "out of range"),
    (f"count() > 5 over 10m -> sev3 escalate sev1 if users > {N * 4}", 30, "out of range"),
    (f"count() > 5 over 10m -> sev3 contain fallback(weight=-{'1' * 30}.0)", 47, "out of range"),
    (f"count() > 5 over {'9' * 80}m -> sev2", 18, "the window of more than 64 digits is longer than the limit"),
    ("count() > 5 over 604799s -> sev2", 18, "hold 1209598 steps of 1s per group (the limit is 100000)"),
    ("count() > 3x baseline(42d) over 10s -> sev2", 33, "hold 3628810 steps of 1s per group"),
    (f"rate(pii) > 0.1 over 10m where {chain(MAX_WHERE_TERMS + 1)} -> sev2", 32, "`where` has 65 tests"),
    (f"rate(pii) > 0.1 over 10m where {'not ' * (MAX_WHERE_DEPTH + 1)}a -> sev2", 32, "`where` is nested 65 deep"),
]
# Refused before the AST is built: the tree (or the brackets) nested past MAX_TREE_DEPTH.
TOO_DEEP = [
    f"rate(pii) > 0.1 over 10m where {chain(490)} -> sev2",
    f"rate(pii) > 0.1 over 10m where {chain(490, 'or')} -> sev2",
    f"count() > 5 over 10m where {'(' * 10_000}a{')' * 10_000} -> sev2",
    f"count() > 5 over 10m where {'(' * 10_000}a -> sev2",
    f"count() > 5 over 10m where {'not ' * 10_000}a -> sev2",
    f"count() > 5 over 10m where {'(a and ' * 5_000}b{')' * 5_000} -> sev2",
    f"count() > 5 over 10m where a in {'[' * 10_000} -> sev2",
]


@pytest.mark.parametrize(("text", "column", "message"), REFUSED)
def test_a_rule_past_a_limit_is_refused_where_it_says_so(text: str, column: int, message: str) -> None:
    rules, problems = load_rules({"r.rules": text + "\n"})
    assert rules == ()
    assert [(p.line, p.column) for p in problems] == [(1, column)], [p.headline() for p in problems]
    assert message in problems[0].message
    rendered = render_all(problems, {"r.rules": text})
    assert rendered.startswith(f"r.rules:1:{column}: error: ") and "^" in rendered


@pytest.mark.parametrize("text", TOO_DEEP, ids=lambda t: t[27:40])
def test_a_rule_nested_too_deeply_is_one_diagnostic(text: str) -> None:
    rules, problems = load_rules({"deep.rules": f"rule ok: count() > 5 over 10m -> sev2\n{text}\n"})
    assert rules == ()
    assert len(problems) == 1 and problems[0].line == 2
    assert f"nested more than {MAX_TREE_DEPTH} deep" in problems[0].message
    assert "docs/dsl.md#limits" in problems[0].message


def test_deep_companion_toml_is_a_diagnostic() -> None:
    deep = "x = " + "[" * 5000 + "]" * 5000 + "\n"
    for name in ("vocabulary.toml", "policy.toml"):
        rules, problems = load_rules({"r.rules": "count() > 5 over 10m -> sev2\n"}, {name: deep})
        assert rules == ()
        assert [p.headline() for p in problems] == [
            f"{name}:1:1: error: not readable TOML: tables or arrays nested too deeply"
        ]


AT_THE_LIMITS = [
    f"count() > 5 over 7d -> sev2 contain rate_limit(rps={N}) for 30d",
    f"count() > {N} over 7d for 7d min {N} events -> sev2",
    "count() > 3x baseline(42d) over 7d -> sev2",
    "count() > 3x baseline(1d) over 10s -> sev2",
    f"count() > -{N} over 10m min 1 events -> sev3 escalate sev1 if users > {N}",
    f"rate(pii) > 0.1 over 10m min {N} flagged -> sev2",
    f"rate(pii) > 0.1 over 10m where {chain(MAX_WHERE_TERMS)} -> sev2",
    f"rate(pii) > 0.1 over 10m where {chain(MAX_WHERE_TERMS, 'or')} -> sev2",
    f"rate(pii) > 0.1 over 10m where {'not ' * (MAX_WHERE_DEPTH - 1)}a -> sev2",
    f"rate(pii) > 0.1 over 10m where {'(' * (MAX_TREE_DEPTH - 10)}a{')' * (MAX_TREE_DEPTH - 10)} -> sev2",
    f'rate(pii) > 0.1 over 10m where f0 in [{N}, -{N}, 1.5, "x"] and f1 < -{N} -> sev2',
    f"sum(cost_usd) > {N}.0 over 10m -> sev1 contain block_user(x=-{N}.0) hold for 30d",
]


def run_both(rules, events: int = 40) -> None:
    """Both engines take the rules and a few events without an exception (differential: both,
    in every pass)."""
    data = [
        {
            "event_id": f"e{i}",
            "ts": T0 + i * 30_000,
            "user": f"u{i % 3}",
            "flags": {"pii": i % 2 == 0},
            "f0": N,
            "f1": -N,
            "a": True,
            "cost_usd": 2.5,
            "latency_ms": i,
        }
        for i in range(events)
    ]
    native, python = NativeEngine(rules), Engine(rules)
    assert set(native.placement().values()) == {"native"}
    native.feed_events([validate_event(d) for d in data])
    native.finish()
    for d in data:
        python.process(validate_event(d))
    python.finish()


@pytest.mark.parametrize("text", AT_THE_LIMITS, ids=lambda t: t[:40])
def test_a_rule_at_the_limits_runs_on_both_engines(text: str) -> None:
    rules, problems = load_rules({"r.rules": text + "\n"})
    assert problems == []
    run_both(rules)


# ---- any rule text: a clean diagnostic or a rule both engines run --------------------------------

_DIGITS = st.integers(min_value=1, max_value=450).map(lambda n: "9" * n)
# Sane values drawn as often as extreme ones, so that many rules pass the check and run.
_SANE_NUMBERS = st.sampled_from(["0.5", "1", "0", "3", "0.001", str(N), f"-{N}", "2"])
NUMBERS = st.one_of(
    _SANE_NUMBERS,
    _SANE_NUMBERS,
    _SANE_NUMBERS,
    st.integers(min_value=-(10**25), max_value=10**25).map(str),
    st.floats(min_value=-1e300, max_value=1e300, allow_nan=False).map(lambda x: f"{x:.3f}"),
    _DIGITS,
)
UNITS = st.sampled_from(["s", "m", "h", "d", "ms", "x", ""])
_SANE_DURATIONS = st.sampled_from(["10m", "1h", "1d", "7d", "30s", "42d", "30d", "5m", "10s"])
DURATIONS = st.one_of(
    _SANE_DURATIONS,
    _SANE_DURATIONS,
    _SANE_DURATIONS,
    st.tuples(st.integers(min_value=-3, max_value=10**22).map(str), UNITS).map("".join),
    st.tuples(st.sampled_from(["7", "42", "30", "8", "43", "31", "604799", "1", "10"]), UNITS).map("".join),
    st.tuples(_DIGITS, UNITS).map("".join),
)
METRICS = st.sampled_from(["count()", "rate(pii)", "sum(cost_usd)", "p95(latency_ms)", "distinct(user)", "avg(f0)"])


@st.composite
def wheres(draw) -> str:
    depth = draw(st.one_of(st.integers(min_value=0, max_value=8), st.integers(min_value=0, max_value=150)))
    kind = draw(st.sampled_from(["not", "chain", "parens", "in", "compare"]))
    number = draw(NUMBERS)
    if kind == "not":
        return f" where {'not ' * depth}a"
    if kind == "chain":
        op = draw(st.sampled_from(["and", "or"]))
        return " where " + f" {op} ".join(f"f{i} > {number}" for i in range(depth + 1))
    if kind == "parens":
        return f" where {'(' * depth}a == {number}{')' * draw(st.integers(0, depth))}"
    if kind == "in":
        return f" where f0 in [{', '.join([number] * (depth % 20 + 1))}]"
    return f" where f0 <= {number}"


@st.composite
def rule_texts(draw) -> str:
    metric, op = draw(METRICS), draw(st.sampled_from([">", ">=", "<", "<="]))
    threshold = draw(
        st.one_of(
            NUMBERS,
            NUMBERS.map(lambda n: f"{n}x baseline"),
            st.tuples(NUMBERS, DURATIONS).map(lambda t: f"{t[0]}x baseline({t[1]})"),
            NUMBERS.map(lambda n: f"{n}x population"),
        )
    )
    clauses = [f"{metric} {op} {threshold}"]
    if draw(st.booleans()):
        clauses.append(f"with {draw(NUMBERS)}% confidence")
    clauses.append(f"over {draw(DURATIONS)}")
    if draw(st.booleans()):
        clauses.append("by user")
    if draw(st.booleans()):
        clauses.append(draw(wheres()).strip())
    if draw(st.booleans()):
        clauses.append(f"for {draw(DURATIONS)}")
    if draw(st.booleans()):
        clauses.append(f"min {draw(NUMBERS)} {draw(st.sampled_from(['events', 'flagged']))}")
    clauses.append("-> sev3")
    if draw(st.booleans()):
        clauses.append(f"contain rate_limit(rps={draw(NUMBERS)}) for {draw(DURATIONS)}")
    if draw(st.booleans()):
        clauses.append(f"escalate sev1 if users > {draw(NUMBERS)}")
    return " ".join(clauses)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(rule_texts())
def test_any_rule_text_is_diagnosed_or_runs_on_both_engines(text: str) -> None:
    rules, problems = load_rules({"h.rules": text + "\n"})
    if problems:
        assert rules == ()
        assert all(p.line == 1 and 1 <= p.column <= len(text) + 1 for p in problems), text
        render_all(problems, {"h.rules": text})
    else:
        run_both(rules, events=8)


def test_the_limits_table_in_the_docs_is_the_code() -> None:
    doc = (Path(__file__).resolve().parents[3] / "docs" / "dsl.md").read_text(encoding="utf-8")
    section = doc.split("\n## Limits\n", 1)[1].split("\n## ", 1)[0]
    at_most = [row.split(" | ")[1] for row in section.splitlines() if row.startswith("| ") and "---" not in row][1:]
    day = limits.DAY_MS
    assert at_most == [
        f"{limits.MAX_WINDOW_MS // day}d",
        f"{limits.MAX_BASELINE_MS // day}d",
        f"{limits.MAX_FOR_MS // day}d",
        f"{limits.MAX_CONTAIN_MS // day}d",
        f"{limits.MAX_STEPS:,}",
        "2⁵³ = 9007199254740992 either side of 0",
        str(limits.MAX_WHERE_TERMS),
        str(limits.MAX_WHERE_DEPTH),
        f"{limits.MAX_TREE_DEPTH} deep",
    ]
    assert limits.MAX_NUMBER == 9007199254740992
