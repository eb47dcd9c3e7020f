"""Cases (core/cases.py): hand-built incident record sequences → the cases, pages and updates
they make; grouping, inhibition, severity rises, reopening, resolution, snapshots."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import orjson
import pytest
from firebreak.core.cases import CaseBook
from firebreak.core.events import format_ts
from firebreak.dsl.grouping import Grouping
from firebreak.records import Stream, record_key, stream_of

T = 1_767_225_600_000
MIN = 60_000
PAGE = {"ai-oncall": True, "security-oncall": True, "ai-platform": False}
TEAM = {1: "ai-oncall", 2: "ai-oncall", 3: "ai-platform", 4: "ai-platform"}


def response(sev: int, team: str | None = None) -> dict:
    team = team or TEAM[sev]
    return {"team": team, "page": PAGE[team], "update_every_ms": 1_800_000}


def rec(
    kind: str,
    incident: str,
    minute: float,
    rule: str,
    category: str,
    group: dict,
    sev: int = 2,
    evidence=(),
    team: str | None = None,
    scope: dict | None = None,
) -> dict:
    out = {
        "type": f"incident.{kind}",
        "incident_id": incident,
        "rule": rule,
        "category": category,
        "severity": f"sev{sev}",
        "group": group,
        "ts": format_ts(T + int(minute * MIN)),
        "evidence": list(evidence),
    }
    if scope is not None:  # where the evidence concentrates, as the engine writes it
        out["evidence_scope"] = scope
    if kind != "resolved":
        out["response"] = response(sev, team)
    return out


def run(records, grouping: Grouping | None = None) -> tuple[CaseBook, list[dict]]:
    book = CaseBook(grouping or Grouping())
    out = [r for record in records for r in book.process(record)]
    return book, out


def cases(out):
    return [r for r in out if r["type"].startswith("case.")]


def pages(out):
    return [r for r in cases(out) if r["type"] != "case.resolved" and r["page"]]


def test_three_rules_on_one_model_are_one_case_paged_once():
    records = [
        rec("opened", "i1", 0, "spike", "hallucination", {"model": "gpt-4o"}),
        rec("opened", "i2", 5, "support", "hallucination", {"model": "gpt-4o", "prompt_template": "chat-v7"}),
        rec("opened", "i3", 6, "ceiling", "hallucination", {"model": "gpt-4o"}),
        rec("escalated", "i3", 6, "ceiling", "hallucination", {"model": "gpt-4o"}, sev=1),
        rec("resolved", "i1", 40, "spike", "hallucination", {"model": "gpt-4o"}),
        rec("resolved", "i2", 40, "support", "hallucination", {"model": "gpt-4o", "prompt_template": "chat-v7"}),
        rec("resolved", "i3", 41, "ceiling", "hallucination", {"model": "gpt-4o"}, sev=1),
    ]
    book, out = run(records)
    incidents = [r for r in out if r["type"].startswith("incident.")]
    assert [r["incident_id"] for r in incidents] == [r["incident_id"] for r in records]  # all passed on, in order
    assert len({r["case_id"] for r in incidents}) == 1
    kinds = [(r["type"], r.get("reason"), r.get("page")) for r in cases(out)]
    assert kinds == [
        ("case.opened", None, True),
        ("case.updated", "joined", False),
        ("case.updated", "joined", False),
        ("case.updated", "severity", False),
        ("case.resolved", None, None),
    ]
    opened = cases(out)[0]
    assert opened["scope"] == {"model": "gpt-4o"} and opened["case_id"].startswith("case_")
    assert cases(out)[3]["severity"] == "sev1" and cases(out)[3]["previous_severity"] == "sev2"
    assert cases(out)[-1]["ts"] == records[-1]["ts"] and cases(out)[-1]["incidents"] == ["i1", "i2", "i3"]
    assert book.stats == {"incidents": 3, "cases": 1, "pages": 1, "grouped": 2, "updates": 1}


def test_by_user_incidents_join_the_tenant_their_evidence_concentrates_in():
    """The records alone say it: ``evidence_scope``, written by the engine that saw the events."""
    records = [
        rec("opened", f"u{i}", 0, "probing", "adversarial", {"user": f"usr{i}"}, scope={"tenant": "globex"})
        for i in range(5)
    ]
    records.append(rec("opened", "x", 1, "probing", "adversarial", {"user": "other"}, scope={"tenant": "acme"}))
    records.append(rec("opened", "y", 1, "probing", "adversarial", {"user": "mixed"}, scope={}))
    _, out = run(records)
    opened = [r for r in cases(out) if r["type"] == "case.opened"]
    assert [o["scope"] for o in opened] == [{"tenant": "globex"}, {"tenant": "acme"}, {"user": "mixed"}]
    # records without it (written before it existed): every user is a case of its own
    _, alone = run([{k: v for k, v in r.items() if k != "evidence_scope"} for r in records])
    assert len([r for r in cases(alone) if r["type"] == "case.opened"]) == 7


def test_different_scopes_categories_and_times_are_different_cases():
    records = [
        rec("opened", "i1", 0, "leak", "data_leakage", {"tenant": "acme"}, sev=1, team="security-oncall"),
        rec("opened", "i2", 1, "leak", "data_leakage", {"tenant": "globex"}, sev=1, team="security-oncall"),
        rec("opened", "i3", 2, "spend", "cost", {"tenant": "acme"}),  # sev2 cost on tenant=acme: not a leak
        rec("resolved", "i1", 10, "leak", "data_leakage", {"tenant": "acme"}, sev=1),
        rec("opened", "i4", 50, "leak", "data_leakage", {"tenant": "acme"}, sev=1, team="security-oncall"),
        rec("resolved", "i4", 60, "leak", "data_leakage", {"tenant": "acme"}, sev=1),
        rec("opened", "i5", 200, "leak", "data_leakage", {"tenant": "acme"}, sev=1, team="security-oncall"),
    ]
    _, out = run(records, Grouping(inhibit=False))
    ids = {r["incident_id"]: r["case_id"] for r in out if r["type"] == "incident.opened"}
    assert len({ids["i1"], ids["i2"], ids["i3"]}) == 3
    # i4 comes 40 minutes after its tenant's case resolved (window 1h): the case reopens, and pages
    assert ids["i4"] == ids["i1"]
    reopened = next(r for r in cases(out) if r.get("reason") == "reopened")
    assert reopened["incident_id"] == "i4" and reopened["page"] is True
    assert ids["i5"] not in (ids["i1"], ids["i2"])  # 140 minutes later: a new case
    assert len(pages(out)) == 5


def test_a_sev1_case_mutes_lower_incidents_on_its_scope_until_one_is_severe_itself():
    records = [
        rec("opened", "cost", 0, "spend", "cost", {"service": "bot"}, sev=1),
        rec("opened", "lat", 1, "latency", "quality_degradation", {"model": "m"}, sev=3, scope={"service": "bot"}),
        rec("escalated", "lat", 1, "latency", "quality_degradation", {"model": "m"}, sev=2, scope={"service": "bot"}),
        rec("opened", "other", 2, "latency", "quality_degradation", {"model": "n"}, sev=2, scope={"service": "web"}),
        rec("escalated", "lat", 5, "latency", "quality_degradation", {"model": "m"}, sev=1, scope={"service": "bot"}),
    ]
    book, out = run(records)
    by_incident = [(r["incident_id"], r["case_id"]) for r in out if r["type"].startswith("incident.")]
    cost_case = by_incident[0][1]
    assert by_incident[1] == ("lat", cost_case) and by_incident[2] == ("lat", cost_case)
    assert by_incident[3][1] != cost_case  # another service: its own case, paged
    assert by_incident[4][1] not in (cost_case, by_incident[3][1])  # sev1 itself: leaves for a case of its own
    muted = [r for r in cases(out) if r.get("reason") == "inhibited"]
    assert [(m["incident_id"], m["page"]) for m in muted] == [("lat", False)]
    assert [p["incident_id"] for p in pages(out)] == ["cost", "other", "lat"]
    assert book.stats["inhibited"] == 1
    _, plain = run(records, Grouping(inhibit=False))
    # without inhibition the latency incident pages as its own case (and its sev1 is an update)
    assert [p["incident_id"] for p in pages(plain)] == ["cost", "lat", "other"]


def test_a_rise_pages_a_team_not_yet_paged_or_after_the_wait():
    leak = {"tenant": "acme"}
    records = [
        rec("opened", "i1", 0, "quality", "data_leakage", leak, sev=3),  # a ticket: no page
        rec("escalated", "i1", 0, "quality", "data_leakage", leak, sev=2),  # ai-oncall paged
        rec("escalated", "i1", 10, "quality", "data_leakage", leak, sev=1),  # ai-oncall paged 10m ago: update
        rec("opened", "i2", 20, "other", "data_leakage", leak, sev=1, team="security-oncall"),  # joins: same sev
    ]
    _, out = run(records, Grouping(wait_ms=30 * MIN))
    assert [(r["type"], r.get("reason"), r.get("page")) for r in cases(out)] == [
        ("case.opened", None, False),
        ("case.updated", "severity", True),
        ("case.updated", "severity", False),
        ("case.updated", "joined", False),
    ]
    _, hurried = run(records, Grouping(wait_ms=5 * MIN))
    assert [r.get("page") for r in cases(hurried)] == [False, True, True, False]


def test_a_reopened_incident_reopens_its_resolved_case():
    g = {"model": "m"}
    records = [
        rec("opened", "i", 0, "r", "hallucination", g),
        rec("resolved", "i", 10, "r", "hallucination", g),
        rec("reopened", "i", 20, "r", "hallucination", g),
        rec("resolved", "i", 30, "r", "hallucination", g),
    ]
    _, out = run(records, Grouping(wait_ms=5 * MIN))
    assert len({r["case_id"] for r in out}) == 1
    assert [(r["type"], r.get("reason"), r.get("page")) for r in cases(out)] == [
        ("case.opened", None, True),
        ("case.resolved", None, None),
        ("case.updated", "reopened", True),
        ("case.resolved", None, None),
    ]


def test_containment_passes_unchanged_and_case_records_go_on_the_incidents_stream():
    command = {"type": "containment.command", "command_id": "cmd_1", "incident_id": "i", "target": {"model": "m"}}
    book, out = run([rec("opened", "i", 0, "r", "hallucination", {"model": "m"}), command])
    assert out[-1] is command
    opened = cases(out)[0]
    assert stream_of(opened) is Stream.INCIDENTS and record_key(opened) == opened["case_id"].encode()


@pytest.mark.parametrize("cut", range(1, 7))
def test_a_restored_case_book_continues_alike(cut: int):
    records = [
        rec("opened", "i1", 0, "spike", "hallucination", {"model": "a"}),
        rec("opened", "i2", 1, "spike", "hallucination", {"model": "b"}),
        rec("opened", "i3", 2, "ceiling", "hallucination", {"model": "a"}),
        rec("escalated", "i3", 3, "ceiling", "hallucination", {"model": "a"}, sev=1),
        rec("resolved", "i1", 9, "spike", "hallucination", {"model": "a"}),
        rec("resolved", "i3", 9, "ceiling", "hallucination", {"model": "a"}, sev=1),
        rec("opened", "i4", 90, "spike", "hallucination", {"model": "a"}),
    ]
    book, whole = run(records)
    head_book, head = run(records[:cut])
    snapshot = orjson.loads(orjson.dumps(head_book.snapshot()))
    restored = CaseBook.restore(Grouping(), snapshot)
    tail = [r for record in records[cut:] for r in restored.process(record)]
    assert head + tail == whole and restored.stats == book.stats
    assert len(book.cases) == 2  # the model=a case resolved over an hour before i4: forgotten


@pytest.mark.usefixtures("rule_engine")
def test_replay_with_cases_names_each_incident_s_case(tmp_path):
    from firebreak.cli import main
    from firebreak.testing import T0

    rules = tmp_path / "r.rules"
    rules.write_text(
        "rule a: count(pii) >= 2 over 1m by tenant -> sev2\nrule b: count(pii) >= 3 over 2m by tenant -> sev2\n"
    )
    lines = [
        orjson.dumps({"event_id": f"e{i}", "ts": T0 + i * 10_000, "tenant": "acme", "flags": {"pii": i < 12}})
        for i in range(200)
    ]
    events = tmp_path / "events.jsonl"
    events.write_bytes(b"\n".join(lines) + b"\n")
    out = tmp_path / "records.jsonl"
    assert main(["replay", str(events), "--rules", str(rules), "--cases", "--out", str(out)]) == 0
    records = [orjson.loads(line) for line in out.read_bytes().splitlines()]
    incidents = [r for r in records if r["type"].startswith("incident.")]
    assert {r["rule"] for r in incidents} == {"a", "b"} and len({r["case_id"] for r in incidents}) == 1
    assert [r["type"] for r in records if r["type"].startswith("case.")] == [
        "case.opened",
        "case.updated",
        "case.resolved",
    ]


def test_case_records_match_the_record_schema():
    import json

    import jsonschema

    schema = json.loads((Path(__file__).resolve().parents[3] / "docs/schemas/record.schema.json").read_text())
    validator = jsonschema.Draft202012Validator(schema)
    g = {"tenant": "acme"}
    records = [
        rec("opened", "inc_0000000000000001", 0, "a", "data_leakage", g, sev=3),
        rec("escalated", "inc_0000000000000001", 0, "a", "data_leakage", g, sev=2),
        rec("opened", "inc_0000000000000002", 1, "b", "data_leakage", g, sev=2),
        rec("resolved", "inc_0000000000000001", 5, "a", "data_leakage", g, sev=2),
        rec("resolved", "inc_0000000000000002", 5, "b", "data_leakage", g, sev=2),
    ]
    for record in records:
        record["notify"] = []
    out = cases(run(records)[1])
    assert {r["type"] for r in out} == {"case.opened", "case.updated", "case.resolved"}
    for record in out:
        assert not list(validator.iter_errors(record)), record


@pytest.mark.usefixtures("rule_engine")
def test_replay_with_cases_finds_the_tenant_of_by_user_incidents_in_the_files(tmp_path):
    """The demo's log replayed with --cases, from a file and from standard input: the same
    cases and pages as the demo (the records carry where their evidence concentrates)."""
    from firebreak.adapters.demo import run_demo
    from firebreak.adapters.starter_pack import starter_companion_sources, starter_rule_sources
    from firebreak.cli import main
    from firebreak.dsl import load_rules

    rules, _ = load_rules(starter_rule_sources(), starter_companion_sources())
    result = run_demo(tmp_path / "demo", rules, rate=4.0)
    demo_records = result.records_path.read_bytes()
    out = tmp_path / "records.jsonl"
    root = Path(__file__).resolve().parents[3] / "rules"
    assert main(["replay", str(result.events_path), "--rules", str(root), "--cases", "--out", str(out)]) == 0
    assert out.read_bytes() == demo_records
    command = [str(Path(sys.executable).parent / "firebreak"), "replay", "-", "--rules", str(root), "--cases"]
    piped = subprocess.run(command, stdin=result.events_path.open("rb"), capture_output=True, check=True)
    assert piped.stdout == demo_records  # standard input: no second read of the events needed
    adversarial = [orjson.loads(line) for line in demo_records.splitlines()]
    opened = [r for r in adversarial if r["type"] == "case.opened" and r["category"] == "adversarial"]
    assert [r["scope"] for r in opened] == [{"tenant": "globex"}]


# ---- group_wait: a case's first page waits for incidents that join --------------------------------


def test_group_wait_holds_the_first_page_for_incidents_that_join():
    g = Grouping(group_wait_ms=MIN // 2)  # 30 s, in event time
    records = [
        rec("opened", "i1", 0, "spike", "hallucination", {"model": "gpt-4o"}, sev=2),
        rec("opened", "i2", 0.25, "ceiling", "hallucination", {"model": "gpt-4o"}, sev=2),
        rec("escalated", "i2", 0.4, "ceiling", "hallucination", {"model": "gpt-4o"}, sev=1),
        rec("opened", "i3", 2, "support", "hallucination", {"model": "gpt-4o"}, sev=2),  # after the wait
        rec("resolved", "i1", 40, "spike", "hallucination", {"model": "gpt-4o"}),
        rec("resolved", "i2", 40, "ceiling", "hallucination", {"model": "gpt-4o"}, sev=1),
        rec("resolved", "i3", 41, "support", "hallucination", {"model": "gpt-4o"}),
    ]
    book, out = run(records, g)
    got = [(r["type"], r.get("reason"), r.get("page"), r["ts"], r["incidents"], r["severity"]) for r in cases(out)]
    assert got == [
        ("case.opened", None, True, format_ts(T + MIN // 2), 2, "sev1"),  # one page: both, at the higher severity
        ("case.updated", "joined", False, format_ts(T + 2 * MIN), 3, "sev1"),
        ("case.resolved", None, None, format_ts(T + 41 * MIN), ["i1", "i2", "i3"], "sev1"),
    ]
    assert out.index(cases(out)[0]) == 3  # before the first record after its due time, after those before
    assert book.stats["pages"] == 1 and book.stats["grouped"] == 2
    _, at_once = run(records)  # without it: paged at the first incident, the sev1 an update
    assert [(r["type"], r["ts"]) for r in pages(at_once)] == [("case.opened", format_ts(T))]


def test_group_wait_a_case_resolved_within_it_still_pages_and_the_end_releases_what_is_held():
    g = Grouping(group_wait_ms=5 * MIN)
    records = [
        rec("opened", "i1", 0, "leak", "data_leakage", {"tenant": "acme"}, sev=1, team="security-oncall"),
        rec("resolved", "i1", 1, "leak", "data_leakage", {"tenant": "acme"}, sev=1),
        rec("opened", "i2", 30, "leak", "data_leakage", {"tenant": "globex"}, sev=1, team="security-oncall"),
    ]
    book, out = run(records, g)
    assert [(r["type"], r["ts"], r["scope"]) for r in cases(out)] == [
        ("case.opened", format_ts(T + MIN), {"tenant": "acme"}),  # its last incident resolved: out now
        ("case.resolved", format_ts(T + MIN), {"tenant": "acme"}),
    ]
    snapshot = orjson.loads(orjson.dumps(book.snapshot()))  # the globex page is held: carried in snapshots
    [late] = CaseBook.restore(g, snapshot).finish()
    assert (late["type"], late["ts"], late["page"]) == ("case.opened", format_ts(T + 35 * MIN), True)
    assert book.advance(T + 35 * MIN - 1) == [] and book.advance(T + 35 * MIN)[0] == late
