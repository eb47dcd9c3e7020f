"""The starter pack's own rule tests (rules/*.test.toml): they pass, and every rule of the
pack has at least one scenario in which it is expected to fire — so a new rule without a
test fails here."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest
from firebreak.adapters.rule_files import read_rule_sources
from firebreak.adapters.rule_tests import TEST_SUFFIX
from firebreak.cli import main
from firebreak.dsl import load_rules

RULES = Path(__file__).resolve().parents[3] / "rules"


def rule_test_files() -> list[Path]:
    return sorted(RULES.glob(f"*{TEST_SUFFIX}"))


def rule_names_by_file() -> dict[str, set[str]]:
    rules, problems = load_rules(read_rule_sources([str(RULES)]))
    assert problems == []
    names: dict[str, set[str]] = {}
    for rule in rules:
        names.setdefault(Path(rule.path).name, set()).add(rule.name)
    return names


def expected_to_fire(path: Path) -> set[str]:
    """Rules that a test file expects an ``incident.opened`` for."""
    spec = tomllib.loads(path.read_text(encoding="utf-8"))
    return {
        e["rule"]
        for e in spec.get("expect", [])
        if e.get("type") == "incident.opened" and "rule" in e and not e.get("absent", False)
    }


def test_every_rule_is_expected_to_fire_in_some_test() -> None:
    fired = set().union(*(expected_to_fire(p) for p in rule_test_files()))
    defined = set().union(*rule_names_by_file().values())
    untested = sorted(defined - fired)
    assert not untested, f"rules without a scenario that expects them to fire: {', '.join(untested)}"


def test_test_files_name_existing_rules_of_their_own_files() -> None:
    names = rule_names_by_file()
    for path in rule_test_files():
        spec = tomllib.loads(path.read_text(encoding="utf-8"))
        assert spec.get("rules"), f"{path.name}: say which rule files it tests"
        in_scope = set().union(*(names[Path(f).name] for f in spec["rules"]))
        unknown = {e["rule"] for e in spec.get("expect", []) if "rule" in e} - in_scope
        assert not unknown, f"{path.name}: expectations name rules it does not load: {unknown}"


def test_every_rule_file_has_tests() -> None:
    tested = {Path(f).name for p in rule_test_files() for f in tomllib.loads(p.read_text(encoding="utf-8"))["rules"]}
    assert set(rule_names_by_file()) <= tested


@pytest.mark.usefixtures("rule_engine")
def test_firebreak_test_passes_on_the_starter_pack(capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["test", str(RULES)])
    out, err = capsys.readouterr()
    assert code == 0, out + err
    assert f"{len(rule_test_files())} passed, 0 failed" in out
