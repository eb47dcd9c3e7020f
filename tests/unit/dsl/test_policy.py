"""The response policy (issue 15): who responds and how often they update, by severity,
from a policy.toml next to the rules; checked like rules; carried by incident records."""

from __future__ import annotations

from pathlib import Path

import pytest
from corekit import MIN, SEC, event, of_type
from corekit import run as run_rules
from firebreak.adapters.rule_files import collect_rule_paths, read_companion_sources
from firebreak.cli import main
from firebreak.dsl import load_rules
from firebreak.dsl.policy import DEFAULT_RESPONSES, Response

RULES = """
rule leak:
  count(pii) >= 1 over 1m by tenant -> sev2 category data_leakage escalate sev1 if users > 2
rule slow:
  p95(latency_ms) > 2000 over 1m min 1 events -> sev3
"""

POLICY = """
[sev1]
team = "ai-oncall"
update_every = "15m"

[sev2]
team = "ai-oncall"
page = true
update_every = "1h"

[sev3]
team = "ai-platform"
page = false
update_every = "1d"

[category.data_leakage]
team = "security-oncall"

[rule.slow.sev3]
update_every = "4h"
"""


def compiled(policy: str = POLICY, rules: str = RULES):
    found, problems = load_rules({"r.rules": rules}, {"policy.toml": policy})
    return found, [f"{d.line}:{d.column}: {d.message}" for d in problems]


def test_layers_merge_key_by_key_the_most_specific_winning():
    (leak, slow), problems = compiled()
    assert problems == []
    assert leak.response(1) == Response("security-oncall", True, 15 * MIN)  # sev1 page: the default's
    assert leak.response(2) == Response("security-oncall", True, 60 * MIN)
    assert slow.response(3) == Response("ai-platform", False, 240 * MIN)
    assert slow.response(4) == DEFAULT_RESPONSES[3]


def test_without_a_policy_the_defaults_apply():
    rules, _ = load_rules({"r.rules": RULES})
    assert rules[0].responses == DEFAULT_RESPONSES
    assert [r.page for r in DEFAULT_RESPONSES] == [True, True, False, False]


@pytest.mark.usefixtures("rule_engine")
def test_opened_and_escalated_records_carry_the_response_of_their_severity():
    rules, _ = compiled()
    events = [event(f"e{i}", i * 5 * SEC, tenant="acme", user=f"u{i}", flags={"pii": True}) for i in range(6)]
    records = run_rules(rules, events)
    (opened,) = of_type(records, "incident.opened")
    assert opened["response"] == {"team": "security-oncall", "page": True, "update_every_ms": 3_600_000}
    (escalated,) = of_type(records, "incident.escalated")
    assert escalated["severity"] == "sev1"
    assert escalated["response"] == {"team": "security-oncall", "page": True, "update_every_ms": 900_000}


@pytest.mark.parametrize(
    "policy, expected",
    [
        ('[sev1]\npage = "yes"\n', "2:1: `page` must be true or false"),
        ('[sev1]\nupdate_evry = "1h"\n', "2:1: unknown key `update_evry` — did you mean `update_every`?"),
        ('[sev2]\nupdate_every = "90"\n', '2:1: `update_every` must be a duration such as "30m", "1h" or "1d"'),
        ('[sev2]\nupdate_every = "0m"\n', '2:1: `update_every` must be a duration such as "30m", "1h" or "1d"'),
        ('[sev3]\nteam = ""\n', '2:1: `team` must be a name, e.g. team = "ai-oncall"'),
        ('[sev5]\nteam = "x"\n', "1:2: unknown key `sev5` — did you mean `sev4`?"),
        ('[category.data_leak]\nteam = "s"\n', "1:11: unknown category `data_leak` — did you mean `data_leakage`?"),
        ('[rule.lek.sev2]\nteam = "s"\n', "1:7: unknown rule `lek` — did you mean `leak`?"),
        ('[rule.slow]\nteem = "s"\n', "2:1: unknown key `teem` — did you mean `team`?"),
        ("[sev1\n", "1:6: not valid TOML: Expected ']' at the end of a table declaration"),
    ],
)
def test_mistakes_are_located_with_a_hint(policy: str, expected: str):
    rules, problems = compiled(policy)
    assert rules == () and problems == [expected]


def test_check_renders_policy_problems_with_the_line_and_a_caret(tmp_path: Path, capsys):
    (tmp_path / "a.rules").write_text(RULES)
    (tmp_path / "policy.toml").write_text('[sev1]\nteam = "x"\npage = 1\n')
    assert main(["check", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert f"{tmp_path / 'policy.toml'}:3:1: error: `page` must be true or false\n    page = 1\n    ^^^^" in err
    (tmp_path / "policy.toml").write_text('[sev1]\nteam = "x"\npage = true\n')
    assert main(["check", str(tmp_path)]) == 0
    assert f"(response policy in {tmp_path / 'policy.toml'})" in capsys.readouterr().out


def test_the_policy_file_is_found_beside_rules_and_never_read_as_rules(tmp_path: Path):
    (tmp_path / "a.rules").write_text(RULES)
    (tmp_path / "policy.toml").write_text(POLICY)
    assert collect_rule_paths([str(tmp_path / "policy.toml"), str(tmp_path / "a.rules")]) == [tmp_path / "a.rules"]
    assert list(read_companion_sources([str(tmp_path / "a.rules")])) == [str(tmp_path / "policy.toml")]


def test_the_starter_pack_policy_pages_security_for_leaks():
    from firebreak.adapters.starter_pack import starter_companion_sources, starter_rule_sources

    companions = starter_companion_sources()
    assert list(companions) == ["rules/policy.toml"]
    rules, problems = load_rules(starter_rule_sources(), companions)
    assert problems == []
    by_name = {r.name: r for r in rules}
    assert by_name["data_exposure_reported"].response(1) == Response("security-oncall", True, 30 * MIN)
    assert by_name["user_spend_cap"].response(3).team == "finops"


# ---- [grouping]: cases, flapping, inhibition (issue 25) -----------------------------------------


def test_grouping_settings_reach_every_rule():
    text = (
        POLICY + '\n[grouping]\nreopen_within = "20m"\nwindow = "2h"\nwait = "0s"\ninhibit = false\n\n'
        '[grouping.by]\nadversarial = ["tenant", "service"]\n'
    )
    (leak, slow), problems = compiled(text)
    assert problems == []
    assert leak.reopen_within_ms == slow.reopen_within_ms == 20 * MIN
    g = leak.grouping
    assert (g.window_ms, g.wait_ms, g.inhibit) == (120 * MIN, 0, False)
    assert g.dimensions("adversarial") == ("tenant", "service")
    assert g.dimensions("data_leakage") == ("tenant", "service")  # the default


def test_a_bad_grouping_section_is_an_error_at_its_line_and_column():
    text = """[grouping]
reopen_within = "soon"
windw = "1h"
window = "0s"
inhibit = "yes"

[grouping.by]
adversarial = "tenant"
data_leak = ["tenant"]
cost = []
"""
    _, problems = compiled(text)
    assert problems == [
        '2:1: `reopen_within` must be a duration such as "30m", "1h" or "1d"',
        "3:1: unknown key `windw` — did you mean `window`?",
        '4:1: `window` must be a duration such as "30m", "1h" or "1d"',
        "5:1: `inhibit` must be true or false",
        '8:1: `adversarial` must be a list of event fields, e.g. adversarial = ["tenant"]',
        "9:1: unknown category `data_leak` — did you mean `data_leakage`?",
        '10:1: `cost` must be a list of event fields, e.g. cost = ["tenant"]',
    ]
    _, problems = compiled('[grouping]\ngroup_wait = "30"\ngroup_wiat = "30s"\n')
    assert problems == [
        '2:1: `group_wait` must be a duration such as "30m", "1h" or "1d"',
        "3:1: unknown key `group_wiat` — did you mean `group_wait`?",
    ]
    (leak, _), problems = compiled('[grouping]\ngroup_wait = "30s"\n')
    assert problems == [] and leak.grouping.group_wait_ms == 30_000
    assert compiled("")[0][0].grouping.group_wait_ms == 0  # by default a case pages at once, as before
    _, problems = compiled('[groupin]\nwait = "1h"\n')
    assert problems == ["1:2: unknown key `groupin` — did you mean `grouping`?"]


def test_reopen_within_per_rule_or_category_is_checked_where_it_is():
    text = """[rule.leak]
reopen_within = "soon"

[rule.leak.sev2]
reopen_within = "1d"

[sev3]
reopen_within = "1h"

[category.cost]
reopen_within = "99d"
"""
    _, problems = compiled(text)
    assert problems == [
        '2:1: `reopen_within` must be a duration from "0s" (never reopen) to "30d", e.g. "1d"',
        "5:1: `reopen_within` is a rule's or a category's: put it in [rule.R] or [category.C]",
        "8:1: `reopen_within` is a rule's or a category's: put it in [rule.R] or [category.C]",
        '11:1: `reopen_within` must be a duration from "0s" (never reopen) to "30d", e.g. "1d"',
    ]


def test_a_rule_section_for_a_rule_not_loaded_is_a_warning_a_typo_an_error():
    # `firebreak test` of one file, or `--rules` naming one file, loads the directory's policy
    # with a part of its rules: a section for a rule of another file is said, not refused
    rules, problems = compiled('[rule.user_spend_cap]\nreopen_within = "1d"\n')
    assert len(rules) == 2
    [warning] = problems
    assert warning.startswith("1:7: no rule `user_spend_cap` among the rules loaded with this policy")
    rules, problems = compiled('[rule.laek]\nreopen_within = "1d"\n')
    assert rules == () and problems == ["1:7: unknown rule `laek` — did you mean `leak`?"]
