"""engine/firebreak/records.py: the record kinds, severities and record types every seam speaks."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import orjson
import pytest
from corekit import SEC, event, of_type, run
from firebreak.records import (
    ContainmentCommand,
    IncidentRecord,
    RecordKind,
    Severity,
    Stream,
    is_incident,
    kind_of,
    record_key,
    stream_of,
)

SCHEMA = json.loads((Path(__file__).parents[3] / "docs" / "schemas" / "record.schema.json").read_text())


def test_severity_orders_most_severe_first_and_reads_and_prints_its_name():
    assert sorted([Severity.SEV3, Severity.SEV1, Severity.SEV4]) == [Severity.SEV1, Severity.SEV3, Severity.SEV4]
    assert Severity.parse("sev2") is Severity.SEV2 and str(Severity.SEV2) == "sev2"
    assert Severity.SEV1.more_severe(Severity.SEV2) and not Severity.SEV2.more_severe(2)
    for bad in ("sev", "sev0", "sev5", "SEV1", "2", None):
        with pytest.raises(ValueError):
            Severity.parse(bad)


def test_kinds_equal_their_wire_strings_and_know_their_stream():
    assert RecordKind.OPENED == "incident.opened" and kind_of({"type": "containment.release"}) is RecordKind.RELEASE
    assert [k.stream for k in RecordKind] == [Stream.INCIDENTS] * 4 + [Stream.CONTAINMENT] * 3 + [Stream.INCIDENTS] * 3
    with pytest.raises(ValueError):
        kind_of({"type": "incident.reminder"})  # notify's own, not a record of the engine


@pytest.mark.usefixtures("rule_engine")
def test_records_of_the_core_go_where_their_kind_says_keyed_by_incident_or_target():
    records = run(
        "count(pii) >= 1 over 1m by tenant -> sev2 contain disable_feature for 10m",
        [event(f"e{i}", i * 5 * SEC, tenant="acme", flags={"pii": i < 6}) for i in range(60)],
    )
    assert {"incident.opened", "incident.resolved", "containment.command", "containment.release"} <= {
        r["type"] for r in records
    }
    for r in records:
        jsonschema.validate(r, SCHEMA)
        assert stream_of(r) is kind_of(r).stream and is_incident(r) == kind_of(r).is_incident
        expected = r["incident_id"].encode() if is_incident(r) else b'{"tenant":"acme"}'
        assert record_key(r) == expected
    (command,) = of_type(records, "containment.command")
    typed = ContainmentCommand.from_json(command)
    assert typed.to_json() == command and list(typed.to_json()) == list(command)  # the same bytes, key order too
    assert orjson.dumps(typed.to_json()) == orjson.dumps(command)


@pytest.mark.usefixtures("rule_engine")
def test_incident_records_read_back_typed_and_write_the_same_bytes():
    rule = (
        "rate(pii) > 0.1 with 99% confidence over 1m by tenant min 20 events -> sev3 "
        "escalate sev2 if users > 3 contain fallback"
    )
    events = [event(f"e{i}", i * SEC, tenant="acme", user=f"u{i % 9}", flags={"pii": 20 <= i < 80}) for i in range(200)]
    records = run(rule, events)
    kinds = [kind_of(r) for r in records if is_incident(r)]
    assert {RecordKind.OPENED, RecordKind.ESCALATED, RecordKind.RESOLVED} <= set(kinds)
    for r in records:
        if is_incident(r):
            typed = IncidentRecord.from_json(r)
            assert isinstance(typed.severity, Severity) and typed.kind is kind_of(r)
            assert orjson.dumps(typed.to_json()) == orjson.dumps(r)
        elif kind_of(r) is not RecordKind.RELEASE:
            assert orjson.dumps(ContainmentCommand.from_json(r).to_json(kind_of(r))) == orjson.dumps(r)
        else:
            with pytest.raises(KeyError):  # a release is not a command: no params, expiry or hold
                ContainmentCommand.from_json(r)
    escalated = IncidentRecord.from_json(of_type(records, "incident.escalated")[0])
    assert escalated.previous_severity is Severity.SEV3 and escalated.severity is Severity.SEV2


def test_an_escalation_to_a_less_severe_level_is_refused_by_the_checker():
    from firebreak.dsl import load_rules

    _, problems = load_rules({"r.rules": "count() > 1 over 1m -> sev2 escalate sev3 if users > 5"})
    assert [p.message for p in problems] == ["`escalate sev3` is not above the rule's sev2; sev1 is the most severe"]
