"""Diagnostics: golden files of rendered output, and the Diagnostic values themselves.

Each case under tests/golden/diagnostics/ is either NAME.rules or a folder NAME/
of *.rules files checked together (with the folder's vocabulary.toml, if any,
also for unknown names); NAME.expected holds the exact output of
`render_all(problems, sources)`, with paths relative to the repository root.

    UPDATE_GOLDEN=1 .venv/bin/pytest tests/unit/dsl/test_dsl_diagnostics.py

rewrites the .expected files from the current output (review the diff!).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from firebreak.dsl import Diagnostic, load_rules, parse_rules
from firebreak.dsl.diagnostics import did_you_mean, has_errors, render_all
from firebreak.dsl.parser import CLAUSE_ORDER

ROOT = Path(__file__).resolve().parents[3]
GOLDEN = ROOT / "tests" / "golden" / "diagnostics"
UPDATE = os.environ.get("UPDATE_GOLDEN") == "1"


def golden_cases() -> list[Path]:
    files = sorted(GOLDEN.glob("*.rules"))
    folders = sorted(p for p in GOLDEN.iterdir() if p.is_dir())
    return sorted(files + folders)


def sources_of(case: Path) -> dict[str, str]:
    paths = sorted(case.glob("*.rules")) if case.is_dir() else [case]
    return {p.relative_to(ROOT).as_posix(): p.read_text(encoding="utf-8") for p in paths}


def vocabularies_of(case: Path) -> dict[str, str] | None:
    """A folder case with a vocabulary.toml is checked for names too (engine/firebreak/dsl/vocabulary.py)."""
    vocabulary = case / "vocabulary.toml"
    if not vocabulary.is_file():
        return None
    return {vocabulary.relative_to(ROOT).as_posix(): vocabulary.read_text(encoding="utf-8")}


def expected_path(case: Path) -> Path:
    return case.with_suffix(".expected") if case.is_file() else case.parent / f"{case.name}.expected"


@pytest.mark.parametrize("case", golden_cases(), ids=lambda p: p.stem)
def test_golden_diagnostics(case: Path) -> None:
    sources, vocabularies = sources_of(case), vocabularies_of(case)
    rules, problems = load_rules(sources, vocabularies)
    assert problems, "a golden case must contain at least one mistake"
    assert rules == (), "any error means no rules are loaded"
    rendered = render_all(problems, sources | (vocabularies or {})) + "\n"
    golden = expected_path(case)
    if UPDATE:
        golden.write_text(rendered, encoding="utf-8")
    assert golden.is_file(), f"{golden.name} is missing: run with UPDATE_GOLDEN=1 to create it"
    assert rendered == golden.read_text(encoding="utf-8")


def test_every_expected_file_has_a_case() -> None:
    cases = {expected_path(c) for c in golden_cases()}
    assert set(GOLDEN.glob("*.expected")) == cases


def test_goldens_cover_each_class_of_mistake() -> None:
    """The golden set keeps the classes of mistake the issue asks for."""
    wanted = {
        "unknown_function",
        "unknown_severity",
        "multiple_as_duration",
        "zero_duration",
        "nonpositive_multiple",
        "empty_by",
        "unterminated_string",
        "missing_arrow",
        "missing_threshold",
        "duplicate_names",
        "duplicate_across_files",
        "wrong_quotes",
        "clause_order",
        "rate_out_of_range",
        "escalate_not_above",
        "unknown_category",
        "several_broken",
    }
    assert wanted <= {c.stem for c in golden_cases()}


def test_several_broken_rules_give_one_problem_each() -> None:
    case = GOLDEN / "several_broken.rules"
    sources = sources_of(case)
    _, problems = load_rules(sources)
    (path,) = sources
    text = sources[path]
    rule_file, syntax = parse_rules(text, path)
    # two good named rules and the good unnamed one survive parsing; syntax errors drop the others
    assert [r.name for r in rule_file.rules] == [
        "good_one",
        "typo_in_function",
        "bad_severity",
        "bad_window",
        None,
        "good_two",
    ]
    broken = ["typo_in_function", "bad_severity", "bad_window", "missing_arrow", "bad_quotes"]
    assert len(problems) == len(broken)
    header_lines = [n for n, line in enumerate(text.splitlines(), 1) for b in broken if line == f"rule {b}:"]
    # each problem sits in the body of a different broken rule, in file order
    assert [p.line for p in problems] == [h + 1 for h in header_lines]
    assert len(syntax) == 2


# ---- Diagnostic values ---------------------------------------------------------------------


def problems_of(text: str, path: str = "x.rules") -> list[Diagnostic]:
    _, problems = load_rules({path: text})
    return problems


def test_unknown_function_value() -> None:
    assert problems_of("rat(hallucination) > 3x baseline over 10m -> sev2") == [
        Diagnostic("x.rules", 1, 1, "unknown function `rat` — did you mean `rate`?", end_column=4)
    ]


def test_unknown_severity_value() -> None:
    assert problems_of("rule r:\n  count(pii) >= 1 over 1m\n  -> sev9") == [
        Diagnostic("x.rules", 3, 6, "unknown severity `sev9`; expected sev1..sev4", end_column=10)
    ]


def test_missing_arrow_at_end_points_just_past_the_rule() -> None:
    assert problems_of("rate(hallucination) > 0.1 over 10m   # no outcome") == [
        Diagnostic("x.rules", 1, 35, "missing `->` and a severity: a rule ends `-> sev1..sev4 [contain ACTION]`")
    ]


def test_unterminated_string_value() -> None:
    assert problems_of('count() > 1 over 1m -> sev2 notify "#ops') == [
        Diagnostic("x.rules", 1, 36, 'unterminated string: add the closing `"` on the same line')
    ]


def test_rate_threshold_value() -> None:
    assert problems_of("rate(hallucination) > 3 over 10m -> sev2") == [
        Diagnostic("x.rules", 1, 23, "a rate is a fraction between 0 and 1; `3` can never be crossed", end_column=24)
    ]


def test_rate_threshold_bounds_are_inclusive() -> None:
    assert problems_of("rate(a) >= 0 over 1m -> sev2\nrate(b) < 1 over 1m -> sev2") == []
    assert [p.line for p in problems_of("rate(a) > -0.01 over 1m -> sev2\nrate(b) > 1.01 over 1m -> sev2")] == [1, 2]


def test_several_problems_in_one_rule_are_all_reported() -> None:
    assert problems_of("rat(x) > 0x baseline over 0m -> sev9 category nope") == [
        Diagnostic("x.rules", 1, 1, "unknown function `rat` — did you mean `rate`?", end_column=4),
        Diagnostic("x.rules", 1, 10, "the multiple must be greater than 0, not `0x`", end_column=21),
        Diagnostic("x.rules", 1, 27, "the window must be longer than zero, not `0m`", end_column=29),
        Diagnostic("x.rules", 1, 33, "unknown severity `sev9`; expected sev1..sev4", end_column=37),
        Diagnostic(
            "x.rules",
            1,
            47,
            "unknown category `nope`; expected hallucination, data_leakage, quality_degradation, adversarial, cost,"
            " other",
            end_column=51,
        ),
    ]


def test_duplicate_names_across_files_value() -> None:
    _, problems = load_rules(
        {
            "a.rules": "rule spike:\n  count() > 1 over 1m -> sev2\n",
            "b.rules": "# b\nrule spike: count() > 2 over 1m -> sev2\n",
        }
    )
    assert problems == [
        Diagnostic("b.rules", 2, 6, "duplicate rule name `spike` (first defined at a.rules:1:6)", end_column=11)
    ]


def test_problems_are_sorted_by_path_then_position() -> None:
    _, problems = load_rules(
        {
            "z.rules": "count() > 1 over 1m -> sev9\nrat(x) > 1 over 1m -> sev2",
            "a.rules": "count() > 1 over 0m -> sev2",
        }
    )
    assert [(p.path, p.line, p.column) for p in problems] == [("a.rules", 1, 18), ("z.rules", 1, 24), ("z.rules", 2, 1)]


def test_errors_mean_no_rules_at_all() -> None:
    rules, problems = load_rules({"ok.rules": "count() > 1 over 1m -> sev2", "bad.rules": "count() > 1 over 1m"})
    assert rules == ()
    assert has_errors(problems)


# ---- rendering -------------------------------------------------------------------------------


def test_render_headline_source_line_and_caret() -> None:
    problem = Diagnostic("r/x.rules", 2, 3, "unknown function `rat` — did you mean `rate`?", end_column=6)
    assert problem.render("# c\n  rat(x) > 1 over 1m -> sev2\n") == (
        "r/x.rules:2:3: error: unknown function `rat` — did you mean `rate`?\n"
        "      rat(x) > 1 over 1m -> sev2\n"
        "      ^^^"
    )


def test_render_single_caret_and_caret_past_the_end() -> None:
    assert Diagnostic("x", 1, 5, "m").render("abcd") == "x:1:5: error: m\n    abcd\n        ^"
    assert Diagnostic("x", 1, 2, "m", end_column=99).render("abcd") == "x:1:2: error: m\n    abcd\n     ^^^"


def test_render_without_the_source_line() -> None:
    assert Diagnostic("x", 7, 1, "m", level="warning").render("one line") == "x:7:1: warning: m"


def test_did_you_mean() -> None:
    assert did_you_mean("rat", ["rate", "count"]) == " — did you mean `rate`?"
    assert did_you_mean("zzz", ["rate", "count"]) == ""


# ---- syntax messages that once said the wrong thing ------------------------------------------

OUTCOME = "count() > 1 over 1m -> sev2"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        # a missing number in `escalate` is not a "missing threshold" (the rule's threshold is fine)
        (
            f"{OUTCOME} escalate sev1 if users > lots",
            Diagnostic("x.rules", 1, 54, "unexpected `lots`; expected a number", end_column=58),
        ),
        (f"{OUTCOME} escalate sev1 if users >", Diagnostic("x.rules", 1, 53, "rule ends early; expected a number")),
        # `=` is right in action arguments: no advice to write `==`, and `=` is named as such
        (
            f'{OUTCOME} contain fallback(model: "x")',
            Diagnostic("x.rules", 1, 51, "unexpected `:`; expected `=`", end_column=52),
        ),
        (
            f'{OUTCOME} contain fallback(model=="x")',
            Diagnostic(
                "x.rules", 1, 52, 'unexpected `=`; expected `false`, `true`, a "string" or a number', end_column=53
            ),
        ),
        # `by` directly followed by another clause's keyword (which the lexer then takes for a field)
        (
            "count() > 1 over 1m by min 5 events -> sev2",
            Diagnostic("x.rules", 1, 24, "`by` needs at least one field, e.g. `by model`", end_column=27),
        ),
        (
            "count() > 1 over 1m by for 2m -> sev2",
            Diagnostic("x.rules", 1, 24, "`by` needs at least one field, e.g. `by model`", end_column=27),
        ),
        # a clause keyword before `over` is out of place, too
        (
            'count() > 1 where model == "x" over 1m -> sev2',
            Diagnostic("x.rules", 1, 13, f"`where` is out of place: clauses go {CLAUSE_ORDER}", end_column=18),
        ),
    ],
)
def test_syntax_messages(text: str, expected: Diagnostic) -> None:
    assert problems_of(text) == [expected]


def test_missing_threshold_still_reported_in_the_condition() -> None:
    assert problems_of("count() > over 1m -> sev2 escalate sev1 if users > 5") == [
        Diagnostic("x.rules", 1, 11, "missing threshold after `>`: a number, or `Kx baseline`", end_column=15)
    ]
