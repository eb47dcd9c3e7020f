"""`firebreak demo` end to end (with a small rule file and a low rate, so it stays quick)
and the starter pack loader it relies on."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest
from firebreak.adapters.starter_pack import starter_rule_sources
from firebreak.cli import main

RULES = """\
rule attackers: rate(prompt_injection) > 0.2 over 5m by user min 10 events -> sev2 contain block_user
rule leak: rate(pii) > 0.005 over 10m by tenant min 50 events -> sev2
"""


@pytest.mark.usefixtures("rule_engine")
def test_demo_prints_the_incident_table_and_keeps_its_files(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    rules = tmp_path / "demo.rules"
    rules.write_text(RULES)
    out = tmp_path / "out"
    assert main(["demo", "--rules", str(rules), "--out", str(out), "--rate", "1", "--quiet"]) == 0
    report = capsys.readouterr().out
    header = next(line for line in report.splitlines() if line.startswith("opened"))
    for column in (
        "rule",
        "category",
        "severity",
        "group",
        "value vs limit",
        "users",
        "detected",
        "resolved",
        "containment",
    ):
        assert column in header
    assert "attackers  " in report and "block_user" in report
    assert "injected (ground truth):" in report
    assert f"records: {out / 'records.jsonl'}" in report
    records = [orjson.loads(line) for line in (out / "records.jsonl").read_bytes().splitlines()]
    assert any(r["type"] == "incident.opened" and r["rule"] == "attackers" for r in records)
    truths = orjson.loads((out / "truth.json").read_bytes())
    assert sorted(t["category"] for t in truths) == sorted(
        ["hallucination", "data_leakage", "quality_degradation", "adversarial", "cost"]
    )
    assert (out / "events.jsonl").stat().st_size > 0
    # The way on: an investigation of an incident whose injection had a cause (the leak).
    hint = [line for line in report.splitlines() if line.strip().startswith("firebreak investigate")]
    opened = {r["incident_id"]: r["rule"] for r in records if r["type"] == "incident.opened"}
    if "leak" in opened.values():
        assert len(hint) == 1 and f"--rules {rules} --events {out / 'events.jsonl'}" in hint[0]
        assert opened[hint[0].split("--incident ")[1].split()[0]] == "leak"
    else:
        assert not hint


def test_starter_pack_is_found() -> None:
    sources = starter_rule_sources()
    assert sorted(sources) == [
        "rules/adversarial.rules",
        "rules/cost.rules",
        "rules/data_leakage.rules",
        "rules/hallucination.rules",
        "rules/quality_degradation.rules",
        "rules/reports.rules",
    ]
    assert all(text.strip() for text in sources.values())


def test_the_demo_states_the_evaluation_of_exactly_its_rules(tmp_path: Path) -> None:
    from firebreak.adapters.demo import EVALUATION_FILE, evaluation_lines, pack_fingerprint
    from firebreak.dsl import load_rules

    rules, _ = load_rules(starter_rule_sources())
    summary = {
        "pack": pack_fingerprint(rules),
        "command": "python benchmarks/pack_eval.py --jobs 2",
        "seeds": 20,
        "wall_s": 1,
        "families": [
            {
                "family": "heavy",
                "note": "",
                "runs": 20,
                "events": 1_440_000,
                "days": 1.67,
                "injected": 60,
                "caught": 59,
                "detectable": 59,
                "caught_detectable": 59,
                "precision": 0.9,
                "false_per_day": 1.2,
                "false_severe_per_day": 0.0,
                "ttd_median_s": {"pii_burst": 21.0},
            }
        ],
    }
    path = tmp_path / "evaluation.json"
    path.write_bytes(orjson.dumps(summary))
    text = "\n".join(evaluation_lines(rules, path))
    assert "1 families × 20 seeds" in text and "python benchmarks/pack_eval.py --jobs 2" in text
    row = next(line for line in text.splitlines() if line.startswith("heavy"))
    assert row.split()[:8] == ["heavy", "1,440,000", "1.67", "59/60", "90%", "1.20", "0.00", "59/59"]
    assert "pii_burst 0m21s" in row
    # measured on other rules: not shown
    assert evaluation_lines(rules[1:], path) == []
    # the numbers shipped with the package are those of the starter pack as it is
    shipped = orjson.loads(EVALUATION_FILE.read_bytes())
    assert shipped["pack"] == pack_fingerprint(rules), "re-run benchmarks/pack_eval.py --demo-summary"
    assert shipped["seeds"] >= 20


@pytest.mark.usefixtures("rule_engine")
def test_the_demo_pages_once_per_problem_as_fast_as_its_first_detection(tmp_path: Path) -> None:
    """Issue 25: the five injected problems opened 28 incidents, every one paged. Each
    problem is now one case, paged when its first incident opened; every incident is still in
    the records, naming its case."""
    from firebreak.adapters import demo
    from firebreak.adapters.starter_pack import starter_companion_sources
    from firebreak.dsl import load_rules

    rules, problems = load_rules(starter_rule_sources(), starter_companion_sources())
    assert problems == []
    result = demo.run_demo(tmp_path, rules)
    assert len(result.pages) <= 6
    for truth in result.truths:
        first = min(row.opened for row in result.rows if row.truth is truth)
        assert demo.first_page(result, truth) == first, truth.category
    records = [orjson.loads(line) for line in result.records_path.read_bytes().splitlines()]
    incidents = [r for r in records if r["type"].startswith("incident.")]
    assert incidents and all(r["case_id"].startswith("case_") for r in incidents)
    opened_cases = {r["case_id"] for r in records if r["type"] == "case.opened"}
    assert {r["case_id"] for r in incidents} == opened_cases
    assert len({r["incident_id"] for r in incidents}) == len(result.rows)
    text = demo.render(result, rules)
    cases = len(opened_cases)
    # every case record that did not page is a page held back, and counted (issue 25)
    held = sum(1 for r in records if r["type"] == "case.updated" and not r["page"])
    assert f"{len(result.rows)} incidents in {cases} cases: {len(result.pages)} pages, {held} suppressed" in text
