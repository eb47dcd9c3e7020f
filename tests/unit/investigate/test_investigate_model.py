"""The report's typed values (engine/firebreak/investigate/model.py): their JSON is the wire format, and a
report read back from JSON is the same report."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import orjson
import pytest
from firebreak.investigate.model import Cause, Contributor, Mark, Report, Review, Suggestion
from firebreak.synthetic import CATEGORIES
from investigate_fixture import report
from test_investigate import case_and_report

EXAMPLE = Path(__file__).parents[3] / "docs" / "examples" / "investigation.json"


def test_the_example_reads_back_to_the_same_bytes():
    raw = EXAMPLE.read_bytes()
    read = Report.from_json(orjson.loads(raw))
    assert orjson.dumps(read.to_json(), option=orjson.OPT_INDENT_2) + b"\n" == raw
    assert isinstance(read.suspected_causes[0], Cause) and isinstance(read.contributors[0], Contributor)
    assert isinstance(read.review, Review) and isinstance(read.review.monitoring_suggestion, Suggestion | None)


@pytest.mark.parametrize("category", CATEGORIES)
def test_a_report_round_trips_through_json(category, rule_engine):  # the report evaluates rules
    _, _, data = case_and_report(category)
    read = Report.from_json(data)
    assert read.to_json() == data and list(read.to_json()) == list(data)
    assert Report.from_json(orjson.loads(orjson.dumps(read.to_json()))) == read


def test_the_field_order_is_the_key_order():
    mark = Mark(ts="2026-01-01T00:00:00Z", kind="detected", label="opened", ref="inc_1", lag_ms=5)
    assert (
        list(mark.to_json()) == [f.name for f in dataclasses.fields(Mark)] == ["ts", "kind", "label", "ref", "lag_ms"]
    )


def test_missing_parts_take_their_defaults():
    partial = report()
    partial.pop("anomaly", None)
    del partial["adversarial"]
    read = Report.from_json(partial)
    assert read.anomaly.means == "" and read.adversarial is None
    assert Report.from_json({}) == Report()
    assert Report.from_json({"contributors": "not a list", "incident": None}).contributors == ()
