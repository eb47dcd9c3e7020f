"""`firebreak investigate --case`: a case's incidents on one timeline, its lead incident in
full (issue 25), on the records of `firebreak demo` (a small rule file, a low rate: quick)."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest
from firebreak.cli import main
from firebreak.records import Severity

RULES = """\
rule attackers: rate(prompt_injection) > 0.2 over 5m by user min 10 events -> sev2 contain block_user
rule leak: rate(pii) > 0.005 over 10m by tenant min 50 events -> sev2
"""


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("demo")
    (out / "demo.rules").write_text(RULES)
    assert main(["demo", "--rules", str(out / "demo.rules"), "--out", str(out), "--rate", "1", "--quiet"]) == 0
    return out


def _records(demo: Path) -> list[dict]:
    return [orjson.loads(line) for line in (demo / "records.jsonl").read_bytes().splitlines()]


def _biggest_case(records: list[dict]) -> str:
    """The case with the most incidents (the attack on globex: several users, one case)."""
    counts: dict[str, set[str]] = {}
    for r in records:
        if r["type"] == "incident.opened":
            counts.setdefault(r["case_id"], set()).add(r["incident_id"])
    return max(counts, key=lambda c: len(counts[c]))


def _investigate(demo: Path, capsys: pytest.CaptureFixture, *extra: str) -> tuple[int, str, str]:
    code = main(["investigate", "--rules", str(demo / "demo.rules"), "--events", str(demo / "events.jsonl"), *extra])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_a_case_lists_its_incidents_and_investigates_its_lead(demo: Path, capsys: pytest.CaptureFixture) -> None:
    records = _records(demo)
    case_id = _biggest_case(records)
    mine = [r for r in records if r["type"] == "incident.opened" and r["case_id"] == case_id]
    assert len(mine) >= 2, "the demo's attack should make one case of several incidents"
    code, out, _ = _investigate(
        demo, capsys, "--records", str(demo / "records.jsonl"), "--case", case_id, "--format", "json"
    )
    assert code == 0
    report = orjson.loads(out)
    assert report["case"]["case_id"] == case_id
    assert [i["incident_id"] for i in report["incidents"]] == [r["incident_id"] for r in mine]
    for row, record in zip(report["incidents"], mine, strict=True):
        assert (row["rule"], row["group"], row["opened"]) == (record["rule"], record["group"], record["ts"])
    assert report["incidents"][0]["joined"] == "opened the case"
    # the lead: the most severe incident, the earliest of those; investigated in full, naming its case
    severities = {i["incident_id"]: int(Severity.parse(i["severity"])) for i in report["incidents"]}
    lead = min(report["incidents"], key=lambda i: (severities[i["incident_id"]], i["opened"]))
    assert report["case"]["lead"] == lead["incident_id"] == report["lead"]["incident"]["incident_id"]
    assert report["lead"]["incident"]["case_id"] == case_id
    assert report["lead"]["timeline"], "the lead incident is investigated in full"
    case_records = [r for r in records if r["type"].startswith("case.") and r["case_id"] == case_id]
    assert report["timeline"] == case_records
    assert report["case"]["pages"] == sum(1 for r in case_records if r.get("page"))


@pytest.mark.usefixtures("rule_engine")
def test_cases_are_formed_from_the_events_when_no_records_are_given(demo: Path, capsys: pytest.CaptureFixture) -> None:
    """Without --records the events are replayed and grouped as `replay --cases` does: the
    same case, the same report; and records without case records are grouped the same way."""
    records = _records(demo)
    case_id = _biggest_case(records)
    _, given, _ = _investigate(
        demo, capsys, "--records", str(demo / "records.jsonl"), "--case", case_id, "--format", "json"
    )
    code, replayed, _ = _investigate(demo, capsys, "--case", case_id, "--format", "json")
    assert code == 0
    assert orjson.loads(replayed)["incidents"] == orjson.loads(given)["incidents"]
    plain = demo / "plain.jsonl"
    plain.write_bytes(
        b"".join(
            orjson.dumps({k: v for k, v in r.items() if k != "case_id"}) + b"\n"
            for r in records
            if not r["type"].startswith("case.")
        )
    )
    code, computed, _ = _investigate(demo, capsys, "--records", str(plain), "--case", case_id, "--format", "json")
    assert code == 0
    assert orjson.loads(computed)["timeline"] == orjson.loads(given)["timeline"]


@pytest.mark.usefixtures("rule_engine")
def test_markdown_and_html_show_the_case_section(demo: Path, capsys: pytest.CaptureFixture) -> None:
    records = _records(demo)
    case_id = _biggest_case(records)
    ids = [r["incident_id"] for r in records if r["type"] == "incident.opened" and r["case_id"] == case_id]
    code, out, _ = _investigate(demo, capsys, "--case", case_id)
    assert code == 0
    head, _, lead = out.partition("## Lead incident")
    assert head.startswith(f"# Case {case_id}") and "## Case timeline" in head
    assert all(f"`{i}`" in head for i in ids)
    assert "# Incident " in lead and f"Part of case `{case_id}`" in lead
    page = demo / "case.html"
    code, _, err = _investigate(demo, capsys, "--case", case_id, "--format", "html", "--out", str(page))
    assert code == 0 and case_id in err
    html = page.read_text()
    assert '<section class="case">' in html and html.index('<section class="case">') < html.index("<header>")
    assert all(f"<code>{i}</code>" in html for i in ids)


@pytest.mark.usefixtures("rule_engine")
def test_an_incident_investigation_names_its_case(demo: Path, capsys: pytest.CaptureFixture) -> None:
    records = _records(demo)
    case_id = _biggest_case(records)
    last = [r for r in records if r["type"] == "incident.opened" and r["case_id"] == case_id][-1]
    code, out, _ = _investigate(demo, capsys, "--incident", last["incident_id"], "--format", "json")
    assert code == 0
    assert orjson.loads(out)["incident"]["case_id"] == case_id
    _, out, _ = _investigate(demo, capsys, "--incident", last["incident_id"])
    assert f"Part of case `{case_id}`" in out
    _, out, _ = _investigate(demo, capsys, "--incident", last["incident_id"], "--format", "html")
    assert f"case <code>{case_id}</code>" in out


def test_an_unknown_case_is_one_clear_line(demo: Path, capsys: pytest.CaptureFixture) -> None:
    code, out, err = _investigate(demo, capsys, "--records", str(demo / "records.jsonl"), "--case", "case_nope")
    assert code == 1 and out == ""
    assert len(err.strip().splitlines()) == 1
    assert "no case case_nope" in err and _biggest_case(_records(demo)) in err


def test_bad_arguments_and_records_are_clear_errors(demo: Path, capsys: pytest.CaptureFixture) -> None:
    code, _, err = _investigate(demo, capsys, "--case", "case_x", "--incident", "inc_x")
    assert code == 1 and "not both" in err
    bad = demo / "bad.jsonl"
    bad.write_bytes((demo / "records.jsonl").read_bytes().splitlines()[0] + b"\n{not json\n")
    code, _, err = _investigate(demo, capsys, "--records", str(bad), "--case", "case_x")
    assert code == 1 and f"{bad}:2: not JSON" in err and "Traceback" not in err
