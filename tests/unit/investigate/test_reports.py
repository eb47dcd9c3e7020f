"""User reports: the `report` event type, reports(LABEL) in the rules language, both engines,
and the SDK's builder (issue 15). The engine tests run on the engine under test (the
rule_engine fixture) but for the differential ones, which compare both engines in every pass."""

from __future__ import annotations

import orjson
import pytest
from corekit import HOUR, MIN, SEC, T0, driver, event, merged, of_type, offset, rules, run, steady
from firebreak.adapters.drive import Driver, batched, drive_batches
from firebreak.core import run_events
from firebreak.core.events import STANDARD_LABELS, InvalidEvent, validate_event
from firebreak.dsl import load_rules
from firebreak.dsl.metrics import COUNT
from firebreak.native import NativeEngine
from firebreak.sdk import user_report

# ---- the event ----------------------------------------------------------------------------


def report(event_id: str, at_ms: int, *labels: str, **fields) -> object:
    return event(event_id, at_ms, type="report", labels=list(labels), **fields)


def test_a_report_is_an_event_with_labels_and_an_optional_ref():
    e = validate_event({"event_id": "r1", "ts": T0, "type": "report", "labels": ["wrong"], "ref": "e7"})
    assert e.type == "report" and e.data["ref"] == "e7"
    assert validate_event({"event_id": "r2", "ts": T0, "type": "report", "labels": ["harmful", "offensive"]})


@pytest.mark.parametrize(
    "fields, reason",
    [
        ({}, "needs `labels`"),
        ({"labels": []}, "needs `labels`"),
        ({"labels": "wrong"}, "needs `labels`"),
        ({"labels": ["wrong", 3]}, "report label '3' is not a name"),
        ({"labels": ["not ok"]}, "report label 'not ok' is not a name"),
        ({"labels": ["x"] * 17}, "at most 16 labels"),
        ({"labels": ["wrong"], "ref": ""}, "`ref`"),
        ({"labels": ["wrong"], "ref": 12}, "`ref`"),
    ],
)
def test_a_bad_report_says_why(fields, reason):
    with pytest.raises(InvalidEvent, match=reason.replace("(", r"\(").replace("[", r"\[")):
        validate_event({"event_id": "r", "ts": T0, "type": "report", **fields})


def test_both_decoders_refuse_bad_reports_with_the_python_reason():
    """Differential: both engines' decoders, in every pass."""
    lines = [
        orjson.dumps({"event_id": "r1", "ts": T0, "type": "report", "labels": ["wrong"]}),
        orjson.dumps({"event_id": "r2", "ts": T0, "type": "report", "labels": []}),
        orjson.dumps({"event_id": "r3", "ts": T0, "type": "report", "labels": ["a b"]}),
        orjson.dumps({"event_id": "r4", "ts": T0, "type": "report", "labels": ["wrong"], "ref": None}),
        orjson.dumps({"event_id": "r5", "ts": T0, "type": "report", "labels": ["x" * 65]}),
    ]
    compiled = rules("reports() >= 1 over 1m -> sev3")

    class Sink:
        def __init__(self) -> None:
            self.records, self.refused = [], []

        def record(self, record):
            self.records.append(orjson.dumps(record))

        def bad(self, where, reason, raw, late):
            self.refused.append((where, reason))

    seen = []
    for kind in ("python", "native"):
        sink = Sink()
        drive_batches(batched(enumerate(lines, start=1)), Driver(compiled, 30 * SEC, kind), sink)
        seen.append((sink.refused, sink.records))
    assert seen[0] == seen[1]
    bad, records = seen[0]
    assert [where for where, _ in bad] == [2, 3, 5]
    assert len(records) == 1 and b'"value":2' in records[0]  # r1 and r4 counted


# ---- the language -------------------------------------------------------------------------


def problems(text: str, vocabulary: str | None = None) -> list[str]:
    compiled, found = load_rules({"r.rules": text}, {} if vocabulary is None else {"vocabulary.toml": vocabulary})
    return [f"{d.line}:{d.column}: {d.message}" for d in found]


def test_reports_compiles_to_a_count_over_report_events():
    (rule,) = rules("reports(data_exposure) >= 1 over 10m by tenant -> sev1")
    assert (rule.metric, rule.arg, rule.source, rule.label) == (COUNT, None, "report", "data_exposure")
    assert rule.category == "data_leakage" and rule.name.startswith("reports_data_exposure_")
    (anything,) = rules("reports() > 10 over 1h -> sev3")
    assert (anything.source, anything.label, anything.category) == ("report", None, "other")
    (wrong,) = rules("reports(wrong) > 3x baseline(24h) with 99.9% confidence over 1h by service -> sev3")
    assert wrong.category == "hallucination" and wrong.confidence == 0.999


def test_unknown_labels_are_errors_with_a_hint_unless_declared():
    assert problems("reports(wrnog) >= 1 over 10m -> sev2") == [
        "1:9: unknown report label `wrnog` — did you mean `wrong`?"
    ]
    assert "declare it in vocabulary.toml" in problems("reports(outdated) >= 1 over 10m -> sev2")[0]
    assert problems("reports(outdated) >= 1 over 10m -> sev2", 'labels = ["outdated"]') == []
    assert problems("reports(flags.wrong) >= 1 over 10m -> sev2") == [
        "1:9: `reports` takes a report label, e.g. `reports(wrong)`, not `flags.wrong`"
    ]


def test_standard_labels_are_listed_in_the_schema_and_docs():
    from pathlib import Path

    root = Path(__file__).parents[3]
    schema = (root / "docs" / "schemas" / "event.schema.json").read_text()
    doc = (root / "docs" / "dsl.md").read_text()
    row = next(line for line in doc.splitlines() if line.startswith("| report labels"))
    assert tuple(part.strip("` ") for part in row.split("|")[2].split()) == STANDARD_LABELS
    assert all(label in schema for label in STANDARD_LABELS)


# ---- the engines --------------------------------------------------------------------------

RULES = """
rule leak_reported:
  reports(data_exposure) >= 1 over 10m by tenant -> sev1
rule wrong_surge:
  reports(wrong) > 3x baseline(6h) over 1h by service min 3 events -> sev3
rule answers:
  count() > 1000 over 10m by tenant -> sev3
"""


def traffic() -> list:
    answers = steady(0, 8 * HOUR, 30 * SEC, prefix="a", tenant="acme", service="chat")
    usual = (report(f"w{i}", 7 * MIN + i * HOUR, "wrong", service="chat", tenant="acme") for i in range(8))
    surge = (report(f"s{i}", 7 * HOUR + i * 5 * MIN, "wrong", "thumbs_down", service="chat") for i in range(8))
    leak = [report("leak", 7 * HOUR + 30 * MIN, "data_exposure", tenant="acme", ref="a840")]
    return merged(answers, usual, surge, leak)


@pytest.mark.usefixtures("rule_engine")
def test_report_rules_count_reports_and_inference_rules_do_not():
    records = run(rules(RULES), traffic())
    opened = {r["rule"]: r for r in of_type(records, "incident.opened")}
    assert set(opened) == {"leak_reported", "wrong_surge"}
    leak = opened["leak_reported"]
    assert leak["group"] == {"tenant": "acme"} and leak["value"] == 1
    assert offset(leak) == 7 * HOUR + 31 * MIN  # the end of the one-minute step holding it
    assert leak["evidence"] == ["leak"]
    # 1,000 answers would be needed in 10m: 20 answers do not make it, reports never add to it
    assert offset(opened["wrong_surge"]) > 7 * HOUR


def test_both_engines_give_the_same_records_over_reports():
    """Differential: both engines, in every pass."""
    compiled = rules(RULES)
    events = traffic()
    python = run_events(compiled, events)
    native = NativeEngine(compiled, 30 * SEC)
    got = native.feed_lines([orjson.dumps(e.data) for e in events]).records + native.finish()
    assert [orjson.dumps(r) for r in got] == [orjson.dumps(r) for r in python]
    assert set(native.placement().values()) == {"native"} and len(native.placement()) == len(compiled)


@pytest.mark.usefixtures("rule_engine")
def test_a_report_moves_time_like_any_event():
    engine = driver(rules("reports(harmful) >= 1 over 1m -> sev2"))
    assert engine.feed_events([report("r1", 0, "harmful")]).records == []
    later = engine.feed_events([report("r2", 5 * MIN, "other")]).records
    assert [r["type"] for r in later if r["type"].startswith("incident")] == ["incident.opened", "incident.resolved"]


# ---- the SDK ------------------------------------------------------------------------------


def test_user_report_copies_what_identifies_the_answer():
    answer = {
        "event_id": "e42",
        "ts": T0,
        "service": "chat",
        "model": "m1",
        "prompt_template": "t1",
        "tenant": "acme",
        "user": "u7",
        "prompt": "secret words",
        "flags": {"pii": False},
    }
    made = user_report("wrong", about=answer, comment="the date is wrong", ts=T0 + 5 * SEC, event_id="r1")
    assert made == {
        "event_id": "r1",
        "ts": T0 + 5 * SEC,
        "type": "report",
        "labels": ["wrong"],
        "ref": "e42",
        "service": "chat",
        "model": "m1",
        "prompt_template": "t1",
        "tenant": "acme",
        "user": "u7",
        "comment": "the date is wrong",
    }
    assert user_report(["harmful", "offensive"], ref="e1", tenant="t")["labels"] == ["harmful", "offensive"]
    with pytest.raises(InvalidEvent, match="is not a name"):
        user_report("not a label")


# ---- the traffic check --------------------------------------------------------------------


def test_the_traffic_check_counts_reports_for_report_rules_and_answers_for_the_others():
    from firebreak.adapters.traffic_check import TrafficWatch, check_events, render_text

    compiled = rules(RULES + "rule harmful:\n  reports(harmful) >= 1 over 10m -> sev2\n")
    events = traffic()
    report = check_events(events, compiled)
    by_name = {r.name: r for r in report.rules}
    assert (report.inference, report.reports) == (960, 17)
    leak = by_name["leak_reported"]
    assert (leak.counts, leak.sample, leak.passed, leak.opened) == ("report", 17, 1, 1)
    assert [(n.role, n.path, n.present) for n in leak.names] == [
        ("label", "labels.data_exposure", 1),
        ("by", "tenant", 9),
    ]
    assert by_name["answers"].sample == 960 and by_name["answers"].passed == 960
    assert by_name["harmful"].warnings == [
        "never fires: no report in the sample carries the label `harmful` (17 reports)"
    ]
    text = render_text(report)
    assert "960 inference, 17 user reports" in text
    assert "label  labels.data_exposure     in 1 of 17 reports" in text
    watch = TrafficWatch(compiled, span_ms=HOUR)
    for e in events:
        watch.observe(e)
    warning = "never fires: no report in the sample carries the label `harmful` (17 reports)"
    assert ("harmful", warning) in watch.report()


def test_a_report_rule_keeps_its_own_severity_in_both_engines():
    """The data-leakage floor (never below sev2) is for classifier evidence: one unverified
    data-exposure report can open a sev4 ticket. A flag-based rule is still raised.
    Differential: both engines, in every pass."""
    compiled = rules(
        "rule exposure_ticket:\n  reports(data_exposure) >= 1 over 10m by tenant -> sev4\n"
        "rule pii_seen:\n  count(pii) >= 1 over 10m by tenant -> sev4\n"
    )
    answers = steady(0, HOUR, 30 * SEC, prefix="a", tenant="acme", service="chat")
    flagged = [event("p1", 20 * MIN + 1, tenant="acme", service="chat", flags={"pii": True})]
    leak = [report("leak", 20 * MIN, "data_exposure", tenant="acme", ref="a40")]
    events = merged(answers, flagged, leak)
    python = run_events(compiled, events)
    opened = {r["rule"]: r for r in of_type(python, "incident.opened")}
    assert opened["exposure_ticket"]["severity"] == "sev4"
    assert opened["exposure_ticket"]["category"] == "data_leakage"
    escalated = [(r["rule"], r["severity"], r["reason"]) for r in of_type(python, "incident.escalated")]
    assert escalated == [("pii_seen", "sev2", "sensitivity")]
    native = NativeEngine(compiled, 30 * SEC)
    got = native.feed_lines([orjson.dumps(e.data) for e in events]).records + native.finish()
    assert [orjson.dumps(r) for r in got] == [orjson.dumps(r) for r in python]
