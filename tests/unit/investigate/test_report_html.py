"""The HTML investigation report: escaping and self-containment, then a real headless Chromium.

Chromium renders the example report (tests/unit/investigate_fixture.py) once per module, in
parallel: a screenshot, the DOM after parsing (`--dump-dom`), and the DOM of an empty report and
of a hostile one. A missing `chromium` fails the run (scripts/test installs it); it never skips.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from dataclasses import dataclass
from html.parser import HTMLParser
from pathlib import Path

import pytest
from firebreak.investigate.html import render_html
from firebreak.investigate.model import Report
from firebreak.investigate.svg import OPEN_FILL, THRESHOLD_COLOUR, VALUE_COLOUR
from investigate_fixture import REPORT, report

CHROMIUM_TIMEOUT_S = 30
WINDOW = (1200, 1600)
HOSTILE = "<script>alert('x')</script> & \"q\" <img src=x onerror=alert(1)>"


# --- parsing helpers ---------------------------------------------------------------------------


@dataclass
class Element:
    tag: str
    attrs: dict[str, str]


class Elements(HTMLParser):
    """Every start tag of a document, with its attributes; and the text."""

    def __init__(self, markup: str) -> None:
        super().__init__(convert_charrefs=True)
        self.elements: list[Element] = []
        self.text: list[str] = []
        self.feed(markup)
        self.close()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.elements.append(Element(tag, {k: v or "" for k, v in attrs}))

    def handle_data(self, data: str) -> None:
        self.text.append(data)

    def having(self, tag: str, cls: str) -> list[Element]:
        return [e for e in self.elements if e.tag == tag and cls in e.attrs.get("class", "").split()]


def hostile_report() -> dict:
    hostile = report()
    inc = hostile["incident"]
    inc.update(rule=f"rule{HOSTILE}", incident_id=HOSTILE, category=HOSTILE, severity=HOSTILE, metric=HOSTILE)
    inc.update(group={HOSTILE: HOSTILE}, rule_text=HOSTILE, opened=HOSTILE)
    hostile["timeline"][0].update(kind=HOSTILE, label=HOSTILE, ref=HOSTILE)
    hostile["timeline"][1].update(label=HOSTILE, ts=HOSTILE)
    cause = hostile["suspected_causes"][0]
    cause.update(kind=HOSTILE, description=HOSTILE, why=HOSTILE, event_id=HOSTILE, dimensions={HOSTILE: HOSTILE})
    hostile["contributors"][0].update(dimension=HOSTILE, value=HOSTILE)
    hostile["adversarial"].update(why=HOSTILE, top_users=[{"value": HOSTILE, "share": 0.5, "flagged": 1}])
    hostile["evidence"] = [HOSTILE]
    hostile["review"].update(impact=HOSTILE, follow_ups=[HOSTILE], cause_candidates=[HOSTILE])
    hostile["review"]["monitoring_suggestion"] = {"why": HOSTILE, "rule_text": HOSTILE}
    hostile["range"]["source"] = HOSTILE
    hostile["notes"] = [HOSTILE]
    return hostile


def empty_report() -> dict:
    empty = report()
    empty["series"]["points"] = []
    for key in ("timeline", "suspected_causes", "contributors", "evidence", "notes"):
        empty[key] = []
    return empty


# --- without a browser -------------------------------------------------------------------------


def test_the_page_fetches_nothing():
    page = render_html(Report.from_json(report()))
    for needle in ("http://", "https://", "src=", "href=", "url(", "@import", "<link", "<script", "<img"):
        assert needle not in page.lower(), needle
    assert "Content-Security-Policy" in page and "default-src 'none'" in page


def test_every_string_from_the_report_is_escaped():
    page = render_html(Report.from_json(hostile_report()))
    assert HOSTILE not in page and "<script" not in page and "<img" not in page
    assert "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt; &amp; &quot;q&quot;" in page
    parsed, reference = Elements(page), Elements(render_html(Report.from_json(report())))
    assert {e.tag for e in parsed.elements} <= {e.tag for e in reference.elements}
    assert not [(e.tag, a) for e in parsed.elements for a in e.attrs if a.startswith("on") or a in ("src", "href")]
    # the hostile text is shown as text, intact
    assert any(HOSTILE in chunk for chunk in parsed.text)


def test_the_chart_breaks_lines_where_values_are_null():
    chart = Elements(render_html(Report.from_json(REPORT)))
    values = chart.having("polyline", "series-value")
    assert [len(v.attrs["points"].split()) for v in values] == [46, 72]  # steps 46 and 47 have no value
    baseline = chart.having("polyline", "series-baseline")
    assert [len(b.attrs["points"].split()) for b in baseline] == [110]  # no baseline in the first 10 steps


def test_a_report_without_data_still_has_a_chart():
    for page in (render_html(Report.from_json(empty_report())), render_html(Report.from_json({}))):
        parsed = Elements(page)
        assert [e.attrs.get("id") for e in parsed.elements if e.tag == "svg"][:1] == ["metric-chart"]
        assert "no data" in page
        assert not parsed.having("polyline", "series-value")


def test_render_is_pure():
    assert render_html(Report.from_json(report())) == render_html(Report.from_json(report()))
    assert REPORT == report()


# --- in Chromium -------------------------------------------------------------------------------


@dataclass
class Rendered:
    page: str
    dom: str
    screenshot: Path
    empty_dom: str
    hostile_dom: str


def chromium_path() -> str:
    path = shutil.which("chromium")
    if path is None:
        pytest.fail(
            "chromium is not installed; scripts/test installs it (scripts/ensure-tools), or: apt-get install chromium",
            pytrace=False,
        )
    return path


def start_chromium(binary: str, work: Path, name: str, html_file: Path, *mode: str) -> subprocess.Popen:
    command = [
        binary,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--hide-scrollbars",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-extensions",
        f"--user-data-dir={work / ('profile-' + name)}",
        f"--window-size={WINDOW[0]},{WINDOW[1]}",
        *mode,
        html_file.as_uri(),
    ]
    return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def finish(name: str, process: subprocess.Popen) -> str:
    try:
        out, err = process.communicate(timeout=CHROMIUM_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        process.kill()
        process.communicate()
        pytest.fail(f"chromium ({name}) did not finish within {CHROMIUM_TIMEOUT_S} s", pytrace=False)
    assert process.returncode == 0, f"chromium ({name}) exited with {process.returncode}:\n{err[-2000:]}"
    return out


@pytest.fixture(scope="module")
def rendered(tmp_path_factory: pytest.TempPathFactory) -> Rendered:
    binary = chromium_path()
    work = tmp_path_factory.mktemp("report-html")
    pages = {
        "report": render_html(Report.from_json(report())),
        "empty": render_html(Report.from_json(empty_report())),
        "hostile": render_html(Report.from_json(hostile_report())),
    }
    files = {}
    for name, page in pages.items():
        files[name] = work / f"{name}.html"
        files[name].write_text(page, encoding="utf-8")
    screenshot = work / "report.png"
    runs = {
        "screenshot": start_chromium(binary, work, "shot", files["report"], f"--screenshot={screenshot}"),
        "dom": start_chromium(binary, work, "dom", files["report"], "--dump-dom"),
        "empty": start_chromium(binary, work, "empty", files["empty"], "--dump-dom"),
        "hostile": start_chromium(binary, work, "hostile", files["hostile"], "--dump-dom"),
    }
    out = {name: finish(name, process) for name, process in runs.items()}
    assert screenshot.is_file(), f"chromium wrote no screenshot:\n{out['screenshot'][-2000:]}"
    return Rendered(pages["report"], out["dom"], screenshot, out["empty"], out["hostile"])


def test_chromium_builds_the_chart(rendered: Rendered):
    dom = Elements(rendered.dom)
    charts = [e for e in dom.elements if e.tag == "svg" and e.attrs.get("id") == "metric-chart"]
    assert len(charts) == 1
    values = dom.having("polyline", "series-value")
    plotted = sum(len(v.attrs["points"].split()) for v in values)
    expected = sum(p["value"] is not None for p in REPORT["series"]["points"])
    assert plotted == expected and expected >= 100
    assert dom.having("polyline", "series-baseline")[0].attrs["stroke-dasharray"]
    assert dom.having("polyline", "series-threshold")
    assert dom.having("rect", "open-period")
    marks = [e.attrs["class"] for e in dom.having("g", "mark")]
    assert marks == [f"mark mark-{item['kind']}" for item in REPORT["timeline"]]
    ticks = [t for t in re.findall(r'class="tick-time"[^>]*>([^<]*)<', rendered.dom)]
    assert len(ticks) >= 4 and all(re.fullmatch(r"\d\d:\d\d", t) for t in ticks)
    assert len(dom.having("text", "tick-value")) >= 3
    assert dom.having("g", "legend")


def test_chromium_paints_the_chart(rendered: Rendered):
    from PIL import Image

    with Image.open(rendered.screenshot) as image:
        pixels = image.convert("RGB")
    assert pixels.size == WINDOW
    series = _mask(pixels, _rgb(VALUE_COLOUR), tolerance=24)
    count = series.histogram()[255]
    assert count >= 1500, f"only {count} pixels in the series colour"
    left, top, right, bottom = series.getbbox()
    assert right - left >= 0.7 * WINDOW[0], f"the series line spans {left}..{right} px, not the chart"

    threshold = _mask(pixels, _rgb(THRESHOLD_COLOUR), tolerance=24)
    assert threshold.histogram()[255] >= 800, "the threshold line is not painted"
    rows = list(threshold.resize((1, WINDOW[1]), Image.Resampling.BOX).tobytes())  # mean of each row
    threshold_y = rows.index(max(rows))  # the row where the (nearly flat) threshold line runs
    spike = series.crop((0, 0, WINDOW[0], threshold_y - 20)).histogram()[255]
    assert spike >= 100, f"no spike painted above the threshold line ({spike} pixels)"

    region = pixels.crop((left, top, right, bottom))
    ink = _mask(region, (235, 235, 235), below=True).histogram()[255]
    area = region.size[0] * region.size[1]
    assert ink >= 0.08 * area, f"the chart region is mostly blank: {ink} of {area} pixels"
    shaded = _mask(pixels, _rgb(OPEN_FILL), tolerance=0).histogram()[255]
    assert shaded >= 10_000, f"the open period is not shaded ({shaded} pixels)"


def test_chromium_renders_an_empty_chart(rendered: Rendered):
    dom = Elements(rendered.empty_dom)
    assert [e for e in dom.elements if e.tag == "svg" and e.attrs.get("id") == "metric-chart"]
    assert dom.having("text", "no-data") and not dom.having("polyline", "series-value")


def test_chromium_sees_hostile_strings_as_text(rendered: Rendered):
    dom = Elements(rendered.hostile_dom)
    assert not [e for e in dom.elements if e.tag in ("script", "img", "iframe", "link", "object")]
    assert not [(e.tag, a) for e in dom.elements for a in e.attrs if a.startswith("on") or a in ("src", "href")]
    assert any(HOSTILE in chunk for chunk in dom.text)


def _rgb(colour: str) -> tuple[int, int, int]:
    return int(colour[1:3], 16), int(colour[3:5], 16), int(colour[5:7], 16)


def _mask(image, colour: tuple[int, int, int], tolerance: int = 0, below: bool = False):
    """A 0/255 image: 255 where every channel is within `tolerance` of `colour`
    (with `below`: where any channel is darker than `colour`)."""
    from PIL import ImageChops

    def test(target: int):
        return (lambda v: 255 if v < target else 0) if below else (lambda v: 255 if abs(v - target) <= tolerance else 0)

    bands = [band.point(test(target)) for band, target in zip(image.split(), colour, strict=True)]
    combine = ImageChops.lighter if below else ImageChops.darker
    return combine(combine(bands[0], bands[1]), bands[2])


def test_chromium_draws_a_real_investigation(tmp_path: Path):
    """Not the fixture: the report `investigate` builds from a generated log, end to end."""
    from test_investigate import case_and_report

    _, _, real = case_and_report("quality_degradation")
    page = tmp_path / "real.html"
    page.write_text(render_html(Report.from_json(real)), encoding="utf-8")
    dom = Elements(finish("real", start_chromium(chromium_path(), tmp_path, "real", page, "--dump-dom")))
    plotted = sum(len(v.attrs["points"].split()) for v in dom.having("polyline", "series-value"))
    assert plotted == sum(p["value"] is not None for p in real["series"]["points"]) > 50
    assert dom.having("polyline", "series-threshold") and dom.having("rect", "open-period")
    assert [e.attrs["class"] for e in dom.having("g", "mark")] == [f"mark mark-{m['kind']}" for m in real["timeline"]]
    text = " ".join(dom.text)
    assert real["suspected_causes"][0]["event_id"] in text
