"""docs/dsl.md stays true: its examples load, its tables match the code."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from firebreak.dsl import load_rules
from firebreak.dsl.checker import CATEGORIES, SEVERITIES
from firebreak.dsl.compiler import _CATEGORY_WORDS, STEPS_MS, pick_step
from firebreak.dsl.metrics import FUNCTIONS

DOC = (Path(__file__).resolve().parents[3] / "docs" / "dsl.md").read_text(encoding="utf-8")
UNITS = {"s": 1_000, "m": 60_000, "h": 3_600_000, "d": 86_400_000}


def fenced_blocks() -> list[str]:
    return re.findall(r"```\n(.*?)```", DOC, re.S)


def test_rule_examples_load() -> None:
    placeholders = re.compile(r"\b(METRIC|SEVERITY|ACTION|PATH|DURATION|EXPR)\b")
    examples = [b for b in fenced_blocks() if "->" in b and not placeholders.search(b)]
    assert len(examples) >= 2
    for block in examples:
        text = "\n".join(line for line in block.splitlines() if not line.startswith("firebreak "))
        rules, problems = load_rules({"doc.rules": text})
        assert problems == [], block
        assert rules


@pytest.mark.parametrize(("rule", "name"), re.findall(r"^\| `([^`|]+ -> sev\d)` \| `([a-z_]+_[0-9a-f]{8})`", DOC, re.M))
def test_derived_names_table(rule: str, name: str) -> None:
    rules, problems = load_rules({"doc.rules": rule})
    assert problems == []
    assert rules[0].name == name


def test_derived_names_table_is_there() -> None:
    assert len(re.findall(r"^\| `[^`|]+ -> sev\d` \| `[a-z_]+_[0-9a-f]{8}`", DOC, re.M)) == 3


def test_category_words_table() -> None:
    rows = dict(re.findall(r"^\| `([a-z_]+)` \| (`[a-z_]+`(?:, `[a-z_]+`)*) \|$", DOC, re.M))
    assert {c: tuple(re.findall(r"`([a-z_]+)`", words)) for c, words in rows.items()} == dict(_CATEGORY_WORDS)
    assert list(rows) == [c for c, _ in _CATEGORY_WORDS]  # the order matters: first match wins


def test_step_table() -> None:
    section = DOC.split("## The evaluation step", 1)[1].split("\n## ", 1)[0]
    pairs = re.findall(r"\| ([0-9smhd, ]+) \| (\d+[smhd]) \|", section)
    assert len(pairs) >= 8
    for windows, step in pairs:
        for window in windows.split(", "):
            assert pick_step(int(window[:-1]) * UNITS[window[-1]]) == int(step[:-1]) * UNITS[step[-1]], window
    listed = re.search(r"the largest of (.*?) that divides", section, re.S).group(1)
    assert [int(x[:-1]) * UNITS[x[-1]] for x in re.findall(r"\d+[smh]", listed)] == list(STEPS_MS)


def test_lists_of_names() -> None:
    for func in FUNCTIONS:
        assert f"`{func}(" in DOC, func
    for category in CATEGORIES:
        assert f"`{category}`" in DOC, category
    assert "`sev1`, `sev2`, `sev3` or `sev4`" in DOC and SEVERITIES == ("sev1", "sev2", "sev3", "sev4")
