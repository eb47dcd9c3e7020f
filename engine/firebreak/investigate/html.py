"""The investigation report as one self-contained HTML document.

`render_html(report)` turns the `Report` of `firebreak investigate` (model.py) into a page with
inline CSS and an inline SVG chart (`engine/firebreak/investigate/svg.py`). Nothing is fetched from anywhere: no
scripts, fonts, images or style sheets by URL, and a Content-Security-Policy that forbids them.
Every string from the report is HTML-escaped. Pure: no I/O, no clock.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from html import escape
from typing import Any

from firebreak.core.events import format_duration
from firebreak.investigate.model import (
    Adversarial,
    Alias,
    Cause,
    Contributor,
    Incident,
    Lags,
    Mark,
    Report,
    Review,
    RootCauses,
    UserReports,
)
from firebreak.investigate.svg import (
    BASELINE_COLOUR,
    THRESHOLD_COLOUR,
    css_token,
    mark_colour,
    metric_chart,
    number,
    ts_ms,
)

NONE = "—"
CSP = "default-src 'none'; style-src 'unsafe-inline'; img-src data:"

CSS = """
:root { --ink: #1f2937; --muted: #6b7280; --rule: #e5e7eb; --soft: #f9fafb; --accent: #374151; }
* { box-sizing: border-box; }
body { margin: 0; color: var(--ink); background: #fff; font: 14px/1.5 system-ui, -apple-system, "Segoe UI",
  Roboto, "Helvetica Neue", Arial, sans-serif; -webkit-print-color-adjust: exact; print-color-adjust: exact; }
main { max-width: 1120px; margin: 0 auto; padding: 28px 32px 48px; }
h1 { font-size: 24px; margin: 0 0 4px; font-weight: 650; }
h1 .group { color: var(--muted); font-weight: 500; }
h2 { font-size: 17px; margin: 32px 0 10px; padding-bottom: 4px; border-bottom: 1px solid var(--rule); }
h3 { font-size: 14px; margin: 18px 0 6px; }
p { margin: 6px 0; }
code, pre, .mono { font-family: ui-monospace, SFMono-Regular, Menlo, Consolas, "Liberation Mono", monospace;
  font-size: 12px; }
pre { background: var(--soft); border: 1px solid var(--rule); border-radius: 4px; padding: 10px 12px;
  white-space: pre-wrap; overflow-wrap: anywhere; }
.muted { color: var(--muted); }
.subtitle { color: var(--muted); margin: 0; }
.sev { display: inline-block; padding: 1px 8px; border-radius: 10px; font-weight: 600; font-size: 12px;
  color: #fff; background: #6b7280; }
.sev-sev1 { background: #b91c1c; } .sev-sev2 { background: #c2410c; }
.sev-sev3 { background: #a16207; } .sev-sev4 { background: #4b5563; }
.summary { display: flex; flex-wrap: wrap; gap: 8px 28px; margin: 16px 0 4px; padding: 12px 16px;
  background: var(--soft); border: 1px solid var(--rule); border-radius: 6px; }
.summary div { min-width: 120px; }
.summary dt { font-size: 11px; text-transform: uppercase; letter-spacing: .04em; color: var(--muted); }
.summary dd { margin: 0; font-weight: 600; }
figure { margin: 8px 0 0; }
svg.chart { width: 100%; height: auto; display: block; font-family: inherit; }
figcaption { color: var(--muted); font-size: 12px; }
table { width: 100%; border-collapse: collapse; font-size: 13px; }
th, td { text-align: left; vertical-align: top; padding: 5px 8px; border-bottom: 1px solid var(--rule); }
th { font-size: 11px; text-transform: uppercase; letter-spacing: .04em; color: var(--muted); font-weight: 600; }
table.compact { width: auto; min-width: 420px; }
td.num, th.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
td.time { white-space: nowrap; font-variant-numeric: tabular-nums; }
tr { break-inside: avoid; }
.kind { display: inline-block; padding: 0 6px; border: 1px solid currentColor; border-radius: 3px;
  font-size: 11px; white-space: nowrap; }
.dims code { display: inline-block; margin: 0 4px 2px 0; }
svg.share { vertical-align: middle; margin-right: 6px; }
ul.ids { columns: 3 220px; padding-left: 18px; margin: 4px 0; }
ul.checklist { list-style: none; padding-left: 0; }
ul.checklist li { margin: 3px 0; }
dl.facts { display: grid; grid-template-columns: max-content 1fr; gap: 4px 16px; margin: 6px 0; }
dl.facts dt { color: var(--muted); } dl.facts dd { margin: 0; }
footer { margin-top: 40px; color: var(--muted); font-size: 12px; }
@media print { main { max-width: none; padding: 0; } h2 { break-after: avoid; } figure, pre { break-inside: avoid; }
  @page { margin: 14mm; } }
"""


def render_html(report: Report) -> str:
    """The report as one self-contained HTML document (a str)."""
    incident = report.incident
    day = _day(incident.opened)
    sections = [
        _header(incident),
        _summary(incident, report.lags),
        _section("Metric", _figure(report)),
        _section("Timeline", _timeline(report.timeline, day)),
        _section("Suspected causes", _causes(report.suspected_causes, day)),
        _section("Root causes", _root_causes(report.root_causes)),
        _section("Contributors", _contributors(report.contributors)),
        _section("Adversarial signs", _adversarial(report.adversarial)),
        _section("User reports", _user_reports(report.user_reports)),
        _section("Evidence", _evidence(report.evidence)),
        _section("Review", _review(report.review)),
        _section("About this report", _about(report)),
    ]
    title = " · ".join(_str(x) for x in (incident.rule, _group(incident.group), incident.severity))
    return (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        f'<meta http-equiv="Content-Security-Policy" content="{CSP}">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f"<title>Incident report: {escape(title)} ({escape(_str(incident.incident_id))})</title>\n"
        f"<style>{CSS}</style>\n</head>\n<body>\n<main>\n"
        + "\n".join(sections)
        + "\n<footer>Generated by <code>firebreak investigate</code>. This page is self-contained: it loads "
        "nothing from anywhere.</footer>\n</main>\n</body>\n</html>\n"
    )


# --- sections ----------------------------------------------------------------------------------


def _header(incident: Incident) -> str:
    severity, initial = incident.severity, incident.initial_severity
    escalated = f" (escalated from {_text(initial)})" if initial and initial != severity else ""
    return (
        f"<header>\n<h1>{_text(incident.rule, 'incident')} "
        f'<span class="group">{_text(_group(incident.group))}</span></h1>\n'
        f'<p class="subtitle"><span class="sev sev-{css_token(severity)}">{_text(severity)}</span>{escalated}'
        f" · {_text(incident.category)} · incident <code>{_text(incident.incident_id)}</code>"
        + (f" · case <code>{_text(incident.case_id)}</code>" if incident.case_id else "")
        + "</p>\n</header>"
    )


def _summary(incident: Incident, lags: Lags) -> str:
    opened, resolved = incident.opened, incident.resolved
    limit = f"{_num(incident.threshold)}"
    if number(incident.baseline) is not None:
        limit += f" (baseline {_num(incident.baseline)})"
    items = [
        ("Opened", _when(opened)),
        ("Resolved", _when(resolved) if resolved else "still open"),
        ("Users affected", _num(incident.users_affected)),
        ("Time to detect", _duration(lags.time_to_detect_ms)),
        ("Time to contain", _duration(lags.time_to_contain_ms)),
        (f"Peak {_str(incident.metric)[:40]}", _num(incident.peak)),
        (f"Limit ({_str(incident.op, '>')})", limit),
    ]
    response = incident.response
    if response:
        page = "paged" if response.get("page") is True else "ticket"
        items.append(
            (
                "Response",
                f"{_str(response.get('team'))}, {page}, updates every {_duration(response.get('update_every_ms'))}",
            )
        )
    cells = "".join(f"<div><dt>{escape(k)}</dt><dd>{escape(v)}</dd></div>" for k, v in items)
    return f'<dl class="summary">{cells}</dl>'


def _figure(report: Report) -> str:
    window = _duration(report.incident.window_ms)
    caption = (
        f"{_text(report.incident.metric, 'The metric')} over {escape(window)} windows, one point per "
        f"{escape(_duration(report.series.step_ms))} step; "
        f'<span style="color:{BASELINE_COLOUR}">dashed: baseline</span>, '
        f'<span style="color:{THRESHOLD_COLOUR}">solid: threshold</span>; shaded: the incident is open.'
    )
    return f"<figure>\n{metric_chart(report)}\n<figcaption>{caption}</figcaption>\n</figure>"


def _timeline(items: Sequence[Mark], day: str | None) -> str:
    rows = []
    for item in items:
        kind = item.kind
        ref = f' <code class="muted">{_text(item.ref)}</code>' if item.ref else ""
        what = f'<span class="kind" style="color:{mark_colour(kind)}">{_text(kind)}</span> {_text(item.label, "")}'
        rows.append([_cell_time(item.ts, day), what + ref, _num_cell(_duration(item.lag_ms, signed=True))])
    return _table(["Time", "What", '<span title="since the first anomalous event">Lag</span>'], rows, numeric={2})


def _causes(causes: Sequence[Cause], day: str | None) -> str:
    rows = []
    for cause in causes:
        before = number(cause.before_onset_ms)
        if before is None:
            relative = NONE
        else:
            relative = f"{_duration(abs(before))} {'before' if before >= 0 else 'after'} onset"
        dims = "".join(f"<code>{_text(k)}={_text(v)}</code>" for k, v in cause.dimensions.items())
        rows.append(
            [
                _num_cell(_text(cause.rank)),
                _num_cell(_num(cause.score, 2)),
                f'{_text(cause.kind)}<br><code class="muted">{_text(cause.event_id)}</code>',
                _cell_time(cause.ts, day),
                escape(relative),
                f'<span class="dims">{dims or NONE}</span>',
                _text(cause.description),
                f'<span class="muted">{_text(cause.why)}</span>',
            ]
        )
    head = ["#", "Score", "Kind", "Time", "To onset", "Dimensions", "Description", "Why"]
    return _table(head, rows, numeric={0, 1})


def _root_causes(roots: RootCauses | None) -> str:
    if roots is None:
        return f'<p class="muted">{NONE}</p>'
    rows = []
    for c in roots.causes:
        what = " AND ".join(f"{_text(v.dimension)}=<code>{_text(v.value)}</code>" for v in c.values)
        lift = "new" if c.lift is None else f"{_num(c.lift, 2)}×"
        rows.append(
            [
                what,
                _num_cell(lift),
                _num_cell(_pct(number(c.explained))),
                _num_cell(f"{_num(c.flagged)} / {_num(c.expected)}"),
                _num_cell(_num(c.events)),
                _text(c.why),
            ]
        )
    head = ["Root cause", "Lift", "Explains", "Anomalous / expected", "Events", "Why this combination"]
    body = (
        _table(head, rows, numeric={1, 2, 3, 4})
        if rows
        else "<p>No combination of dimension values explains the anomaly on its own.</p>"
    )
    capped = f"; high-cardinality (top values by excess only): {', '.join(roots.capped)}" if roots.capped else ""
    about = (
        f"Together {_pct(number(roots.explained))} of the excess ({roots.measure} measure). Searched over "
        f"{roots.scope}, combinations of up to three of: {', '.join(roots.dimensions)}{capped}."
    )
    notes = "".join(f'<p class="muted">{_text(n)}</p>' for n in roots.notes)
    return body + f'<p class="muted">{_text(about)}</p>' + notes


def _contributors(contributors: Sequence[Contributor]) -> str:
    rows = []
    for row in contributors:
        share, base = number(row.share), number(row.baseline_share)
        rows.append(
            [
                _text(row.dimension),
                f"<code>{_text(row.value)}</code>" + _aliases(row.same_as),
                _num_cell(f"{_num(row.lift, 2)}×" if number(row.lift) is not None else NONE),
                f"{_share_bar(share, base)}{_pct(share)}",
                _num_cell(_pct(base)),
                _num_cell(f"{_num(row.flagged)} / {_num(row.events)}"),
            ]
        )
    head = ["Dimension", "Value", "Lift", "Share of flagged", "Baseline share", "Flagged / events"]
    return _table(head, rows, numeric={2, 4, 5})


def _aliases(same: Sequence[Alias]) -> str:
    """Values covering the same events (a template and its one feature)."""
    names = [f"{_text(a.dimension)}={_text(a.value)}" for a in same]
    return f'<br><span class="muted">same events as {", ".join(names)}</span>' if names else ""


def _adversarial(signs: Adversarial | None) -> str:
    if signs is None:
        return _none()
    verdict = "yes" if signs.suspected else "no"
    parts = [
        f"<p><strong>Suspected adversarial use: {verdict}.</strong> {_text(signs.why, '')}</p>",
        f"<p>Flagged events: {_text(_num(signs.flagged))}</p>",
    ]
    for shares, title in ((signs.top_users, "Top users"), (signs.top_tenants, "Top tenants")):
        rows = [
            [f"<code>{_text(r.value)}</code>", _num_cell(_pct(number(r.share))), _num_cell(_num(r.flagged))]
            for r in shares
        ]
        if rows:
            table = _table(["Value", "Share of flagged", "Flagged"], rows, numeric={1, 2}, compact=True)
            parts.append(f"<h3>{title}</h3>{table}")
    return "\n".join(parts)


def _user_reports(ur: UserReports | None) -> str:
    if ur is None or not number(ur.reports):
        return _none()
    labels = ", ".join(f"{_str(k)} ×{_num(n)}" for k, n in ur.labels.items())
    parts = [
        f"<p>{escape(_num(ur.reports))} reports from {escape(_num(ur.users))} users in the incident "
        f"({escape(labels)}); {escape(_num(ur.joined))} name an answer found in the log.</p>"
    ]
    rows = [
        [f"<code>{_text(dim)}={_text(v.value)}</code>", _num_cell(_num(v.reports))]
        for dim, values in ur.answers.items()
        for v in values
    ]
    if rows:
        parts.append(_table(["Answers from", "Reports"], rows, numeric={1}, compact=True))
    return "\n".join(parts)


def _evidence(ids: Sequence[str]) -> str:
    if not ids:
        return _none()
    items = "".join(f"<li><code>{_text(i)}</code></li>" for i in ids)
    return f'<p class="muted">Event ids of flagged events in the incident window.</p><ul class="ids">{items}</ul>'


def _review(review: Review | None) -> str:
    if review is None:
        return _none()
    causes = "".join(f"<li>{_text(c)}</li>" for c in review.cause_candidates)
    follow = "".join(f'<li><label><input type="checkbox"> {_text(f)}</label></li>' for f in review.follow_ups)
    parts = [
        "<h3>Postmortem (draft)</h3>",
        '<dl class="facts">'
        f"<dt>Impact</dt><dd>{_text(review.impact)}</dd>"
        f"<dt>Time to detect</dt><dd>{_text(review.time_to_detect)}</dd>"
        f"<dt>Time to contain</dt><dd>{_text(review.time_to_contain)}</dd></dl>",
        "<h3>Cause candidates</h3>" + (f"<ol>{causes}</ol>" if causes else _none()),
        "<h3>Follow-ups</h3>" + (f'<ul class="checklist">{follow}</ul>' if follow else _none()),
    ]
    suggestion = review.monitoring_suggestion
    if suggestion is not None:
        backtest = suggestion.backtest
        replayed = ""
        if backtest.opened:
            replayed = (
                f"<p>Replayed over the same events it opens an incident at {_when(backtest.opened)} "
                f"(time to detect {_duration(backtest.time_to_detect_ms)}), and "
                f"{_str(backtest.incidents_in_range)} incident(s) in the whole range "
                f"(the rule as it is: {_str(backtest.rule_incidents_in_range)}).</p>"
            )
        parts.append(
            f"<h3>Suggested monitoring change</h3><p>{_text(suggestion.why, '')}</p>"
            f"<pre>{_text(suggestion.rule_text, '')}</pre>{replayed}"
        )
    return "\n".join(parts)


def _about(report: Report) -> str:
    span, incident = report.range, report.incident
    notes = "".join(f"<li>{_text(n)}</li>" for n in report.notes)
    return (
        '<dl class="facts">'
        f"<dt>Data</dt><dd>{_text(span.source)}</dd>"
        f"<dt>Range</dt><dd>{escape(_when(span.since))} – {escape(_when(span.until))}</dd>"
        f"<dt>Events read</dt><dd>{_text(_num(span.events))} ({_text(_num(span.changes))} changes)</dd>"
        f"<dt>Incident events</dt><dd>{_text(_num(incident.events))}</dd></dl>"
        f"<h3>Rule</h3><pre>{_text(incident.rule_text, '')}</pre>"
        + (f"<h3>Notes</h3><ul>{notes}</ul>" if notes else "")
    )


# --- helpers -----------------------------------------------------------------------------------


def _section(title: str, body: str) -> str:
    anchor = title.lower().replace(" ", "-")
    return f'<section id="{anchor}">\n<h2>{escape(title)}</h2>\n{body}\n</section>'


def _table(head: list[str], rows: list[list[str]], numeric: set[int] = frozenset(), compact: bool = False) -> str:
    """Head cells are trusted markup written here; row cells are already escaped markup."""
    if not rows:
        return _none()
    ths = "".join(f"<th{' class=num' if i in numeric else ''}>{h}</th>" for i, h in enumerate(head))
    body = "\n".join(
        "<tr>" + "".join(c if c.startswith("<td") else f"<td>{c}</td>" for c in row) + "</tr>" for row in rows
    )
    table = '<table class="compact">' if compact else "<table>"
    return f"{table}\n<thead><tr>{ths}</tr></thead>\n<tbody>\n{body}\n</tbody>\n</table>"


def _num_cell(markup: str) -> str:
    return f'<td class="num">{markup}</td>'


def _cell_time(ts: Any, day: str | None) -> str:
    ms = ts_ms(ts)
    if ms is None:
        return f'<td class="time">{_text(ts)}</td>'
    moment = datetime.fromtimestamp(ms / 1000, tz=UTC)
    shown = moment.strftime("%H:%M:%S" if moment.strftime("%Y-%m-%d") == day else "%Y-%m-%d %H:%M:%S")
    return f'<td class="time"><time datetime="{escape(str(ts))}">{shown}</time></td>'


def _share_bar(share: float | None, baseline: float | None) -> str:
    """A 100 px bar: the share of flagged events, with a tick at the baseline share."""
    if share is None:
        return ""
    width = max(0.0, min(share, 1.0)) * 100
    tick = ""
    if baseline is not None:
        bx = max(0.0, min(baseline, 1.0)) * 100
        tick = f'<line x1="{bx:.1f}" y1="0" x2="{bx:.1f}" y2="10" stroke="#111827" stroke-width="1.5"/>'
    return (
        '<svg class="share" width="100" height="10" viewBox="0 0 100 10" aria-hidden="true">'
        f'<rect width="100" height="10" fill="#e5e7eb"/>'
        f'<rect width="{width:.1f}" height="10" fill="#6b7280"/>{tick}</svg>'
    )


def _none() -> str:
    return '<p class="muted">None.</p>'


def _str(value: Any, empty: str = NONE) -> str:
    return empty if value is None or value == "" else str(value)


def _text(value: Any, empty: str = NONE) -> str:
    return escape(_str(value, empty))


def _group(group: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v}" for k, v in group.items()) if group else "all traffic"


def _num(value: Any, digits: int = 3) -> str:
    """Counts with separators; other numbers to `digits` significant figures (at least whole units)."""
    if isinstance(value, int) and not isinstance(value, bool):
        return f"{value:,}"
    v = number(value)
    if v is None:
        return NONE
    return f"{v:,.0f}" if abs(v) >= 10**digits else f"{v:.{digits}g}"


def _pct(share: float | None) -> str:
    return NONE if share is None else f"{share * 100:.1f}%"


def _duration(ms: Any, signed: bool = False) -> str:
    v = number(ms)
    if v is None:
        return NONE
    sign = ("+" if v >= 0 else "−") if signed else ("−" if v < 0 else "")
    total = int(round(abs(v)))
    return sign + format_duration(total) if total else "0s"


def _when(ts: Any) -> str:
    ms = ts_ms(ts)
    if ms is None:
        return _str(ts)
    return datetime.fromtimestamp(ms / 1000, tz=UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _day(ts: Any) -> str | None:
    ms = ts_ms(ts)
    return None if ms is None else datetime.fromtimestamp(ms / 1000, tz=UTC).strftime("%Y-%m-%d")
