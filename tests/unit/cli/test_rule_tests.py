"""The `firebreak test` runner (engine/firebreak/adapters/rule_tests.py): passing and failing files,
the failure report, bad test files, and the traffic generator."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from firebreak.adapters.rule_tests import (
    INPUT_KEYS,
    TOP_KEYS,
    SpecError,
    generate_events,
    parse_offset,
    run_test_file,
)
from firebreak.cli import main
from firebreak.core import parse_ts

# Step 5s (1m window). The third error of a group opens an incident.
RULES = """\
rule errors_by_model:
  count(error) >= 3 over 1m by model -> sev2 contain fallback(model="small") notify "#oncall"
"""

# model-a: one call a second for 5m; from 2m, five errors two seconds apart (2m00s … 2m08s).
# The third error (2m04s) lies in the step [2m00s, 2m05s): the incident opens at 2m05s.
TRAFFIC = """\
rules = ["errors.rules"]
start = "2026-01-05T00:00:00Z"

[[input]]
from = "0m"
until = "5m"
every = "1s"
event = { model = "model-a" }

[[input]]
from = "2m"
until = "2m10s"
every = "2s"
event = { model = "model-a" }
flags = { error = 1.0 }

[[input]]
from = "0m"
until = "5m"
every = "1s"
event = { model = "model-b" }
"""

PASSING = (
    TRAFFIC
    + """
[[expect]]
type = "incident.opened"
rule = "errors_by_model"
group = { model = "model-a" }
severity = "sev2"
at = "2m5s"

[[expect]]  # containment records carry the group as `target`; `group` matches it
type = "containment.command"
group = { model = "model-a" }
action = "fallback"
params = { model = "small" }
between = ["2m", "2m10s"]

[[expect]]
type = "incident.opened"
group = { model = "model-b" }
absent = true
"""
)


def write(tmp_path: Path, test: str, name: str = "errors.test.toml") -> Path:
    (tmp_path / "errors.rules").write_text(RULES)
    path = tmp_path / name
    path.write_text(test)
    return path


def run(path: Path, capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    code = main(["test", str(path)])
    out, err = capsys.readouterr()
    return code, out + err


# ---- passing and failing files ---------------------------------------------------------


@pytest.mark.usefixtures("rule_engine")
def test_a_passing_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write(tmp_path, PASSING)
    code, out = run(path, capsys)
    assert code == 0, out
    assert f"PASS {path} (3 expectations)" in out
    assert "1 passed, 0 failed (3 expectations in 1 files)" in out


@pytest.mark.usefixtures("rule_engine")
def test_a_directory_runs_every_test_file_in_it(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    write(tmp_path, PASSING, "a.test.toml")
    write(tmp_path, PASSING, "b.test.toml")
    (tmp_path / "notes.toml").write_text("not a test")
    code, out = run(tmp_path, capsys)
    assert code == 0, out
    assert "2 passed, 0 failed (6 expectations in 2 files)" in out


@pytest.mark.usefixtures("rule_engine")
def test_a_missing_expectation_lists_the_records_of_that_rule(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write(
        tmp_path,
        TRAFFIC
        + """
[[expect]]
type = "incident.opened"
rule = "errors_by_model"
group = { model = "model-a" }
between = ["3m", "4m"]
""",
    )
    code, out = run(path, capsys)
    assert code == 1
    assert f"FAIL {path}" in out
    assert (
        "  missing: type=incident.opened rule=errors_by_model group={model=model-a} between 3m and 4m\n"
        "    records of that rule:\n"
        "      +2m5s incident.opened rule=errors_by_model sev2 {model=model-a} value=3 threshold=3\n"
        "      +2m5s containment.command rule=errors_by_model {model=model-a} action=fallback\n"
    ) in out
    assert "0 passed, 1 failed" in out


@pytest.mark.usefixtures("rule_engine")
def test_a_missing_expectation_of_a_silent_rule_says_so(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    text = TRAFFIC.replace('start = "', 'only_expected = false\nstart = "')
    path = write(tmp_path, text + '\n[[expect]]\ntype = "incident.opened"\nrule = "no_such_rule"\n')
    code, out = run(path, capsys)
    assert code == 1
    assert "missing: type=incident.opened rule=no_such_rule\n" in out
    assert "no records of that rule; incident.opened records:\n" in out
    assert "+2m5s incident.opened rule=errors_by_model sev2 {model=model-a}" in out


@pytest.mark.usefixtures("rule_engine")
def test_an_unexpected_incident_fails(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write(tmp_path, TRAFFIC)
    code, out = run(path, capsys)
    assert code == 1
    assert "  unexpected incidents:\n      +2m5s incident.opened rule=errors_by_model sev2 {model=model-a}" in out


@pytest.mark.usefixtures("rule_engine")
def test_only_expected_false_allows_unexpected_incidents(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write(tmp_path, TRAFFIC.replace('start = "', 'only_expected = false\nstart = "'))
    code, out = run(path, capsys)
    assert code == 0, out


@pytest.mark.usefixtures("rule_engine")
def test_a_violated_absent_expectation_shows_what_came(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write(
        tmp_path,
        TRAFFIC
        + """
[[expect]]
type = "incident.opened"
rule = "errors_by_model"
between = ["2m", "3m"]
absent = true
""",
    )
    code, out = run(path, capsys)
    assert code == 1
    assert (
        "  expected no type=incident.opened rule=errors_by_model between 2m and 3m\n"
        "    but got:\n"
        "      +2m5s incident.opened rule=errors_by_model sev2 {model=model-a} value=3 threshold=3"
    ) in out


@pytest.mark.usefixtures("rule_engine")
def test_at_is_exact_and_between_inclusive(tmp_path: Path) -> None:
    def outcome(when: str):
        return run_test_file(write(tmp_path, TRAFFIC + f'\n[[expect]]\ntype = "incident.opened"\n{when}\n'))

    assert outcome('at = "2m5s"').passed
    assert not outcome('at = "2m"').passed
    assert not outcome('at = "2m10s"').passed
    assert outcome('between = ["2m5s", "2m5s"]').passed
    assert outcome('between = ["1m", "2m5s"]').passed
    assert not outcome('between = ["2m6s", "3m"]').passed


@pytest.mark.usefixtures("rule_engine")
def test_group_is_a_subset_match(tmp_path: Path) -> None:
    rules = "rule two: count(error) >= 3 over 1m by model, region -> sev2\n"
    (tmp_path / "errors.rules").write_text(rules)
    (tmp_path / "vocabulary.toml").write_text('fields = ["region"]\n')  # not a standard field: declared
    path = tmp_path / "t.test.toml"
    traffic = TRAFFIC.replace('event = { model = "model-a" }', 'event = { model = "model-a", region = "eu" }')
    path.write_text(traffic + '\n[[expect]]\ntype = "incident.opened"\ngroup = { model = "model-a" }\nat = "2m5s"\n')
    assert run_test_file(path).passed
    path.write_text(traffic + '\n[[expect]]\ntype = "incident.opened"\ngroup = { region = "us" }\nat = "2m5s"\n')
    assert not run_test_file(path).passed


# ---- bad test files: one clear line, no traceback ----------------------------------------


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('rules = ["errors.rules"]\nstart = "2026-01-05T00:00:00Z"\n[[input]\n', "not valid TOML: "),
        ('rules = ["errors.rules"]\n[[input]]\nevery = "1s"\nuntil = "1m"\n', "error: `start` is required"),
        (
            TRAFFIC.replace('every = "2s"', 'every = "2 seconds"'),
            "error: input 2.every: `2 seconds` is not a duration; use e.g. 90s, 10m, 1h30m, 250ms",
        ),
        (TRAFFIC.replace('until = "5m"', 'until = "300"', 1), "error: input 1.until: `300` needs a unit"),
        (TRAFFIC.replace('until = "5m"', "until = 300", 1), 'error: input 1.until: expected a duration like "1h30m"'),
        (TRAFFIC.replace("errors.rules", "missing.rules"), "missing.rules: no such file or directory"),
        (TRAFFIC.replace('"2026-01-05T00:00:00Z"', '"2026-01-05 noon"'), "error: start: `2026-01-05 noon` is not"),
        (TRAFFIC.replace('"2026-01-05T00:00:00Z"', "2026-01-05T00:00:00"), "error: start: 2026-01-05T00:00:00 has no"),
        (TRAFFIC.replace('"2026-01-05T00:00:00Z"', "2026-01-05"), "error: start: expected an RFC 3339 time"),
        (TRAFFIC.replace("flags = {", "flag = {"), "error: input 2: unknown key `flag`; expected at, event, every"),
        (TRAFFIC.replace("rules = [", "rule = ["), "error: unknown key `rule`; expected expect, input"),
        (TRAFFIC.replace('["errors.rules"]', "5"), "error: `rules` must be a list of rule files"),
        (TRAFFIC.replace("error = 1.0", "error = 2"), "error: input 2: flags.error must be a fraction"),
        (TRAFFIC.replace('every = "2s"', 'every = "2s"\nusers = "all"'), "error: input 2: `users` must be a whole"),
        ('rules = ["errors.rules"]\nstart = "2026-01-05T00:00:00Z"\n[input]\n', "error: `input` must be a list"),
        (
            TRAFFIC.replace('every = "2s"', 'every = "2s"\ntype = "reports"'),
            "error: input 2: `type` 'reports' is not one of inference, change, heartbeat, report",
        ),
        (TRAFFIC + '[[expect]]\nrule = "x"\n', "error: expect 1: `type` is required"),
        (TRAFFIC + '[[expect]]\ntype = "incident.opened"\nbetween = ["1m"]\n', 'between: expected ["FROM", "UNTIL"]'),
    ],
)
def test_bad_test_files_give_one_clear_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], text: str, message: str
) -> None:
    path = write(tmp_path, text)
    code, out = run(path, capsys)
    assert code == 1
    assert f"FAIL {path}\n  error: " in out
    assert message in out
    assert "Traceback" not in out


def test_invalid_toml_names_the_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write(tmp_path, 'rules = ["errors.rules"]\nstart = "2026-01-05T00:00:00Z"\nevery = 1s\n')
    code, out = run(path, capsys)
    assert code == 1
    assert "not valid TOML" in out and "line 3" in out


def test_rules_that_do_not_compile_are_reported_with_their_position(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write(tmp_path, TRAFFIC)
    (tmp_path / "errors.rules").write_text("rule broken: count(error) >= 3 over 1m by model sev2\n")
    code, out = run(path, capsys)
    assert code == 1
    assert "error: rules do not compile:" in out
    assert "errors.rules:1:" in out and "missing `->` before `sev2`" in out


def test_a_path_that_does_not_exist(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out = run(tmp_path / "nope", capsys)
    assert code == 1
    assert out == f"firebreak test: {tmp_path / 'nope'}: no such file or directory\n"


def test_a_directory_without_test_files(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out = run(tmp_path, capsys)
    assert code == 1
    assert "no *.test.toml files under" in out


# ---- durations and the traffic generator --------------------------------------------------


@pytest.mark.parametrize(
    ("text", "ms"),
    [("0m", 0), ("90s", 90_000), ("1h30m", 5_400_000), ("1d", 86_400_000), ("250ms", 250), ("1m30s500ms", 90_500)],
)
def test_parse_offset(text: str, ms: int) -> None:
    assert parse_offset(text, "x") == ms


@pytest.mark.parametrize("text", ["", "90", "1.5m", "5 m", "m", "10x", "1h 30m", "-5s", 5, None])
def test_parse_offset_rejects(text: object) -> None:
    with pytest.raises(SpecError, match="^x: "):
        parse_offset(text, "x")


def test_generated_traffic() -> None:
    origin = parse_ts("2026-01-05T00:00:00Z")
    spec = {
        "input": [
            {
                "from": "0s",
                "until": "10s",
                "every": "500ms",
                "event": {"model": "a", "flags": {"seen": True}},
                "users": 3,
                "flags": {"error": 0.25},
            },
            {"from": "5s", "until": "10s", "every": "1s", "users": 2, "user_prefix": "bot-"},
            {"at": "7s", "type": "change", "event": {"kind": "deploy"}},
        ]
    }
    events = generate_events(spec, origin)
    first = [e for e in events if e.event_id.startswith("1-")]
    assert len(first) == 20
    assert [e.ts - origin for e in first[:3]] == [0, 500, 1000]
    assert [e.data["user"] for e in first[:4]] == ["u0", "u1", "u2", "u0"]
    assert [e.data["flags"]["error"] for e in first[:8]] == [False, False, False, True] * 2  # evenly spread
    assert all(e.data["flags"]["seen"] is True for e in first)  # fixed flags are kept
    assert [e.data["user"] for e in events if e.event_id.startswith("2-")] == ["bot-0", "bot-1"] * 2 + ["bot-0"]
    (change,) = [e for e in events if e.type == "change"]
    assert change.ts - origin == 7000 and change.data["kind"] == "deploy"
    assert [e.ts for e in events] == sorted(e.ts for e in events)


@pytest.mark.usefixtures("rule_engine")
def test_an_unquoted_toml_start_with_a_zone_is_accepted(tmp_path: Path) -> None:
    path = write(tmp_path, PASSING.replace('"2026-01-05T00:00:00Z"', "2026-01-05T00:00:00Z"))
    assert run_test_file(path).passed


# ---- docs/rule-tests.md stays true ---------------------------------------------------------

DOC = (Path(__file__).resolve().parents[3] / "docs" / "rule-tests.md").read_text(encoding="utf-8")


@pytest.mark.usefixtures("rule_engine")
def test_the_first_example_in_the_docs_passes(tmp_path: Path) -> None:
    section = DOC[DOC.index("## A first test") : DOC.index("## File names")]
    rules, test = re.findall(r"```(?:toml)?\n(.*?)```", section, re.S)
    (tmp_path / "errors.rules").write_text(rules)
    (tmp_path / "errors.test.toml").write_text(test)
    outcome = run_test_file(tmp_path / "errors.test.toml")
    assert outcome.passed, outcome.failures or outcome.error
    assert outcome.expectations == 2


def test_the_docs_list_every_key() -> None:
    documented = set(re.findall(r"^\| `([a-z_]+)` \|", DOC, re.M))
    assert TOP_KEYS - {"input", "expect"} <= documented
    assert INPUT_KEYS <= documented
    assert {"type", "rule", "group", "at", "between", "absent"} <= documented
