"""The starter rule pack in rules/: it loads, it is big enough, it is sorted by category."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from firebreak.adapters.rule_files import read_rule_sources
from firebreak.cli import main
from firebreak.dsl import load_rules, parse_rules
from firebreak.dsl.checker import CATEGORIES

RULES = Path(__file__).resolve().parents[3] / "rules"
PACK_CATEGORIES = [c for c in CATEGORIES if c != "other"]
MAX_BASELINE_MS = 24 * 3_600_000
REPORTS_FILE = "reports.rules"


@pytest.fixture(scope="module")
def pack():
    sources = read_rule_sources([str(RULES)])
    rules, problems = load_rules(sources)
    assert problems == []
    return sources, rules


def test_firebreak_check_passes_on_the_pack(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check", str(RULES)]) == 0
    out, err = capsys.readouterr()
    assert re.fullmatch(r"ok: \d+ rules in 6 file\(s\) \(response policy in .*policy.toml\)\n", out)
    assert err == ""


def test_one_file_per_category_and_one_for_user_reports(pack) -> None:
    sources, rules = pack
    expected = [f"{c}.rules" for c in PACK_CATEGORIES] + [REPORTS_FILE]
    assert sorted(Path(p).name for p in sources) == sorted(expected)
    # reports.rules holds the rules over user reports, and only those (categories vary with the label)
    assert {Path(r.path).name == REPORTS_FILE for r in rules if r.source == "report"} == {True}
    assert {r.source for r in rules if Path(r.path).name == REPORTS_FILE} == {"report"}


def test_at_least_twenty_rules_most_of_them_named(pack) -> None:
    sources, rules = pack
    assert len(rules) >= 20
    named = sum(1 for path, text in sources.items() for r in parse_rules(text, path)[0].rules if r.name)
    assert named > len(rules) / 2


@pytest.mark.parametrize("category", PACK_CATEGORIES)
def test_each_file_holds_its_category(pack, category: str) -> None:
    _, rules = pack
    in_file = [r for r in rules if Path(r.path).name == f"{category}.rules"]
    assert len(in_file) >= 3
    assert {r.name: r.category for r in in_file} == {r.name: category for r in in_file}


def test_every_rule_has_a_comment_above_it(pack) -> None:
    sources, rules = pack
    for rule in rules:
        above = sources[rule.path].splitlines()[rule.line - 2]
        assert above.startswith("#"), f"{rule.path}:{rule.line}: {rule.name} has no comment above it"


def test_baselines_are_at_most_a_day(pack) -> None:
    _, rules = pack
    assert all(r.baseline_ms <= MAX_BASELINE_MS for r in rules)


def test_per_user_rules_are_absolute_with_short_windows_or_judge_busy_callers_by_their_own_habits(pack) -> None:
    """A user's own past is short and noisy: per-user rules are absolute over short windows —
    except those that compare a caller with its own habits (issue 30: a batch account's bursts
    are normal for itself), which judge only callers busy enough to have habits: at least 20
    events in the window and the span, over an hour against at least 6 hours; and those that
    compare a user with everybody else (`Kx population`) over longer than 15 minutes (issue 30,
    sixth round: a slow attacker), which do so at 99.9999% confidence with five flagged at least
    and open tickets (sev3), not blocks."""
    _, rules = pack
    per_user = [r for r in rules if ("user",) in r.by]
    assert per_user
    for rule in per_user:
        if rule.relative:
            assert rule.min_events >= 20, rule.name
            assert rule.window_ms >= 3_600_000 and rule.baseline_ms >= 6 * 3_600_000, rule.name
        elif rule.reference_kind == "population" and rule.window_ms > 15 * 60_000:
            assert rule.confidence is not None and rule.confidence >= 0.999999, rule.name
            assert rule.min_flagged >= 5 and rule.severity == 3 and not rule.contains, rule.name
        else:
            assert rule.window_ms <= 15 * 60_000, rule.name
    assert {r.name for r in per_user if r.relative} == {
        "prompt_tokens_per_caller",
        "answer_tokens_per_caller",
        "answer_tokens_per_busy_caller",
    }
