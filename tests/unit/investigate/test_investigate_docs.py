"""docs/investigate.md and docs/examples/ agree with the code."""

from __future__ import annotations

import re
from pathlib import Path

import orjson
import pytest
from firebreak.adapters.investigation import render
from firebreak.investigate.model import Report
from test_investigate import case_and_report

DOCS = Path(__file__).parents[3] / "docs"
DOC = (DOCS / "investigate.md").read_text(encoding="utf-8")
EXAMPLES = DOCS / "examples"
# the reports are built by evaluating rules: on the engine under test (both CI passes)
pytestmark = pytest.mark.usefixtures("rule_engine")


def shape_table() -> dict[str, str]:
    section = DOC.split("## The JSON shape", 1)[1].split("\n## ", 1)[0]
    return dict(re.findall(r"^\| `([a-z_]+)` \| (.+) \|$", section, re.M))


def test_the_documented_top_level_keys_are_the_reports():
    _, _, report = case_and_report("hallucination")
    assert set(shape_table()) == set(report)


@pytest.mark.parametrize("key", ["incident", "range", "anomaly", "lags", "adversarial"])
def test_the_documented_fields_are_the_reports(key):
    _, _, report = case_and_report("adversarial")
    documented = set(re.findall(r"`([a-z_]+)`", shape_table()[key]))
    assert documented == set(report[key])


def test_the_documented_list_items_have_their_fields():
    _, _, report = case_and_report("cost")
    table = shape_table()
    for key in ("timeline", "suspected_causes", "contributors"):
        fields = set(re.findall(r"\{([^}]*)\}", table[key])[0].replace(" ", "").split(","))
        assert all(set(item) == fields for item in report[key]), key
    point = set(re.findall(r"`points`: `\{([^}]*)\}`", table["series"])[0].replace(" ", "").split(","))
    assert all(set(p) == point for p in report["series"]["points"])


def test_the_example_renderings_are_the_example_report_rendered():
    """Regenerate with scripts/docs-examples when a renderer changes."""
    raw = (EXAMPLES / "investigation.json").read_bytes()
    report = Report.from_json(orjson.loads(raw))
    assert (EXAMPLES / "investigation.json").read_text(encoding="utf-8") == render(report, "json") + "\n"
    assert (EXAMPLES / "investigation.md").read_text(encoding="utf-8") == render(report, "markdown") + "\n"
    assert (EXAMPLES / "investigation.html").read_text(encoding="utf-8") == render(report, "html") + "\n"
    png = (EXAMPLES / "investigation.png").read_bytes()
    assert png.startswith(b"\x89PNG") and len(png) > 50_000
    assert report.suspected_causes[0].kind == "config_change"
