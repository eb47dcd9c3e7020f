"""`firebreak investigate` from event files: listing, the three formats, bad input."""

from __future__ import annotations

import orjson
import pytest
from firebreak.cli import main
from firebreak.core import format_ts
from investigate_scenarios import RULES, build

# Every test here evaluates rules: on the engine under test (tests/conftest.py).
pytestmark = pytest.mark.usefixtures("rule_engine")


@pytest.fixture(scope="module")
def leak(tmp_path_factory):
    case = build("data_leakage", rate=4.0)
    folder = tmp_path_factory.mktemp("leak")
    events = folder / "events.jsonl"
    with events.open("wb") as out:
        for e in case.events:
            out.write(orjson.dumps({**e.data, "ts": format_ts(e.ts)}) + b"\n")
    rules = folder / "leak.rules"
    rules.write_text(RULES["data_leakage"] + "\n")
    return case, str(events), str(rules)


def listed_ids(text: str) -> list[str]:
    return [line.split()[0] for line in text.splitlines() if line.startswith("  inc_")]


def test_without_an_incident_it_lists_them(leak, capsys):
    _, events, rules = leak
    assert main(["investigate", "--rules", rules, "--events", events]) == 0
    out = capsys.readouterr().out
    assert "investigate one with --incident ID" in out
    assert listed_ids(out)


def test_the_listing_honours_format_json(leak, capsys, tmp_path):
    """Scripts get the listing as a JSON array, the same incidents as the text listing."""
    _, events, rules = leak
    assert main(["investigate", "--rules", rules, "--events", events]) == 0
    ids = listed_ids(capsys.readouterr().out)
    assert main(["investigate", "--rules", rules, "--events", events, "--format", "json"]) == 0
    listing = orjson.loads(capsys.readouterr().out)
    assert [i["incident_id"] for i in listing] == ids
    assert set(listing[0]) == {"incident_id", "rule", "group", "opened", "severity", "resolved"}
    out = tmp_path / "incidents.json"
    assert main(["investigate", "--rules", rules, "--events", events, "--format", "json", "--out", str(out)]) == 0
    assert orjson.loads(out.read_bytes()) == listing


def test_json_report_names_the_cause_and_the_contributor(leak, capsys):
    case, events, rules = leak
    main(["investigate", "--rules", rules, "--events", events])
    incident = listed_ids(capsys.readouterr().out)[0]
    assert main(["investigate", "--rules", rules, "--events", events, "--incident", incident, "--format", "json"]) == 0
    report = orjson.loads(capsys.readouterr().out)
    assert report["incident"]["incident_id"] == incident
    first = report["suspected_causes"][0]
    assert (first["event_id"], first["kind"]) == (case.truth.cause_event_id, "prompt_change")
    assert isinstance(first["score"], float)
    top = report["contributors"][0]
    assert (top["dimension"], top["value"]) == ("tenant", case.truth.value)
    assert top["lift"] > 1 and 0 < top["share"] <= 1
    assert report["range"]["source"] == f"files: {events}"


def test_markdown_by_rule_and_html_to_a_file(leak, capsys, tmp_path):
    _, events, rules = leak
    assert main(["investigate", "--rules", rules, "--events", events, "--rule", "leak"]) == 0
    text = capsys.readouterr().out
    assert text.startswith("# Incident inc_") and "## Suspected causes" in text and "### Follow-ups" in text
    page = tmp_path / "report.html"
    assert (
        main(
            [
                "investigate",
                "--rules",
                rules,
                "--events",
                events,
                "--rule",
                "leak",
                "--format",
                "html",
                "--out",
                str(page),
            ]
        )
        == 0
    )
    html = page.read_text()
    assert html.startswith("<!DOCTYPE html>") or html.startswith("<!doctype html>")
    assert 'id="metric-chart"' in html and "http://" not in html and "https://" not in html
    assert "wrote html report" in capsys.readouterr().err


def test_bad_lines_are_counted_and_the_report_still_made(leak, capsys, tmp_path):
    _, events, rules = leak
    mixed = tmp_path / "mixed.jsonl"
    mixed.write_bytes(b'{"event_id": "x"}\nnot json\n' + open(events, "rb").read())
    assert main(["investigate", "--rules", rules, "--events", str(mixed), "--rule", "leak", "--format", "json"]) == 0
    captured = capsys.readouterr()
    assert f"bad event: {mixed}:1: `ts` is missing" in captured.err
    assert f"bad event: {mixed}:2: invalid JSON" in captured.err
    assert orjson.loads(captured.out)["incident"]["rule"] == "leak"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--incident", "inc_0000"], "no incident of incident inc_0000 in this range:"),
        (["--rule", "leak", "--group", "tenant=nobody"], "no incident of rule leak with tenant=nobody"),
        (["--group", "tenant=x"], "--group needs --rule"),
        (["--rule", "leak", "--group", "tenant"], "is not FIELD=VALUE"),
        (
            ["--topic", "t", "--since", "2026-01-01T00:00:00Z", "--until", "2026-01-01T01:00:00Z"],
            "give --events or --topic, not both",
        ),
    ],
)
def test_user_errors_are_one_clear_message(leak, capsys, args, message):
    _, events, rules = leak
    assert main(["investigate", "--rules", rules, "--events", events, *args]) == 1
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def test_topic_without_a_range_is_refused_before_any_connection(leak, capsys):
    _, _, rules = leak
    assert main(["investigate", "--rules", rules, "--topic", "t", "--bootstrap", "127.0.0.1:1"]) == 1
    assert "--topic needs --since" in capsys.readouterr().err


def test_broken_rules_show_the_caret_diagnostic(leak, capsys, tmp_path):
    _, events, _ = leak
    broken = tmp_path / "broken.rules"
    broken.write_text("rule x:\n  rate(pii) > 3 ovr 10m -> sev2\n")
    assert main(["investigate", "--rules", str(broken), "--events", events]) == 1
    err = capsys.readouterr().err
    assert f"{broken}:2:" in err and "^" in err and "Traceback" not in err


def test_by_rule_the_same_report_as_by_incident_id(tmp_path, capsys):
    """--rule replays only that rule; a rule's records do not depend on the other rules."""
    case = build("cost", rate=3.0)
    events = tmp_path / "events.jsonl"
    events.write_bytes(b"".join(orjson.dumps({**e.data, "ts": format_ts(e.ts)}) + b"\n" for e in case.events))
    rules = tmp_path / "both.rules"
    rules.write_text(RULES["data_leakage"] + "\n\n" + RULES["cost"] + "\n")
    assert (
        main(["investigate", "--rules", str(rules), "--events", str(events), "--rule", "spend", "--format", "json"])
        == 0
    )
    by_rule = orjson.loads(capsys.readouterr().out)
    args = ["--incident", by_rule["incident"]["incident_id"], "--format", "json"]
    assert main(["investigate", "--rules", str(rules), "--events", str(events), *args]) == 0
    assert orjson.loads(capsys.readouterr().out) == by_rule
