"""The JSON Schemas in docs/schemas describe what the core accepts and emits."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import jsonschema
import pytest
from firebreak.core import InvalidEvent, validate_event

sys.path.insert(0, str(Path(__file__).parent))
from corekit import SEC, event, run  # noqa: E402
from test_core_events import GOOD  # noqa: E402
from test_core_properties import BASE_RECORDS  # noqa: E402

SCHEMAS = Path(__file__).resolve().parents[3] / "docs" / "schemas"
EVENT = json.loads((SCHEMAS / "event.schema.json").read_text())
RECORD = json.loads((SCHEMAS / "record.schema.json").read_text())


def test_schemas_are_valid_json_schema():
    jsonschema.Draft202012Validator.check_schema(EVENT)
    jsonschema.Draft202012Validator.check_schema(RECORD)


@pytest.mark.usefixtures("rule_engine")
def test_every_record_kind_is_emitted_and_matches_the_schema():
    validator = jsonschema.Draft202012Validator(RECORD)
    leak = [event(f"p{i}", i * 30 * SEC, tenant="t", flags={"pii": i < 150}) for i in range(200)]
    records = BASE_RECORDS + run("count(pii) >= 1 over 1m by tenant -> sev4 contain block hold contain x", leak)
    kinds = {r["type"] for r in records}
    assert kinds == {
        "incident.opened",
        "incident.escalated",
        "incident.resolved",
        "incident.reopened",
        "containment.command",
        "containment.renewed",
        "containment.release",
    }
    for record in records:
        errors = list(validator.iter_errors(record))
        assert not errors, (record, [e.message for e in errors])


@pytest.mark.parametrize(
    "obj",
    [
        GOOD,
        {**GOOD, "ts": 1_767_225_600_000, "model": "m", "flags": {"pii": True}, "scores": {"q": 0.5}},
        {**GOOD, "type": "change", "kind": "deploy", "service": "s", "description": "v2"},
        {**GOOD, "prompt": "raw text is allowed in", "extra": {"nested": [1, 2]}},
    ],
)
def test_valid_events_match_the_schema(obj):
    validate_event(obj)
    jsonschema.validate(obj, EVENT)


@pytest.mark.parametrize(
    "obj",
    [
        {"ts": 1},
        {"event_id": "e"},
        {**GOOD, "type": "metric"},
        {**GOOD, "model": 4},
        {**GOOD, "flags": {"pii": "yes"}},
        {**GOOD, "scores": {"q": "high"}},
        {**GOOD, "type": "change"},
    ],
)
def test_invalid_events_are_rejected_by_both(obj):
    with pytest.raises(InvalidEvent):
        validate_event(obj)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(obj, EVENT)
