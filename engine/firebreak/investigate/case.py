"""An investigation by case: the case's incidents on one timeline, its lead incident in full.

A case (core/cases.py, docs/response.md#cases) is one problem; a responder paged for it wants
first what the problem is and how far it reaches, then the one incident that best explains it.
So a case report is: the case (category, scope, severity, opened, resolved, pages), every
incident of it in one table (rule, group, severity, opened, resolved, how it joined), the
case's records as one timeline, and the full investigation of its **lead** incident — the
most severe, the earliest of those. The others are summarised; each has its own
``--incident`` investigation. Pure: records (with their case records) in, a `CaseReport` out.

    report = investigate_case(rules, events, "case_…", options, records)
    render_case_markdown(report)   # or render_case_html(report); report.to_json()
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from html import escape
from typing import Any

from firebreak.core import Event
from firebreak.dsl import CompiledRule
from firebreak.investigate.html import render_html
from firebreak.investigate.incident import IncidentNotFound, Selection
from firebreak.investigate.markdown import render_markdown
from firebreak.investigate.model import Report
from firebreak.investigate.report import Options, investigate
from firebreak.records import CASE_KINDS, RecordKind, Severity, is_incident

MAX_LISTED = 10


class CaseNotFound(IncidentNotFound):
    """No case of that id in the records: the message lists the cases there are."""


@dataclass(frozen=True)
class CaseIncident:
    incident_id: str
    rule: str
    category: str
    group: dict[str, Any]
    severity: str  # final
    opened: str
    resolved: str | None
    joined: str  # "opened the case", "joined", "inhibited", "reopened"

    def to_json(self) -> dict[str, Any]:
        return {
            "incident_id": self.incident_id,
            "rule": self.rule,
            "category": self.category,
            "group": self.group,
            "severity": self.severity,
            "opened": self.opened,
            "resolved": self.resolved,
            "joined": self.joined,
        }


@dataclass(frozen=True)
class CaseReport:
    case_id: str
    category: str
    scope: dict[str, Any]
    severity: str  # the case's highest
    opened: str
    resolved: str | None
    pages: int
    incidents: tuple[CaseIncident, ...]  # in the order they opened
    timeline: tuple[dict[str, Any], ...]  # the case's records, as written
    lead: Report  # the lead incident, investigated in full

    def to_json(self) -> dict[str, Any]:
        return {
            "case": {
                "case_id": self.case_id,
                "category": self.category,
                "scope": self.scope,
                "severity": self.severity,
                "opened": self.opened,
                "resolved": self.resolved,
                "pages": self.pages,
                "lead": self.lead.incident.incident_id,
            },
            "incidents": [i.to_json() for i in self.incidents],
            "timeline": list(self.timeline),
            "lead": self.lead.to_json(),
        }


def list_cases(records: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    return [r for r in records if r.get("type") == RecordKind.CASE_OPENED]


def case_records(records: Sequence[dict[str, Any]], case_id: str) -> list[dict[str, Any]]:
    """The case's own records; raises `CaseNotFound` (listing the cases) when there are none."""
    mine = [r for r in records if r.get("type") in _CASE_TYPES and r.get("case_id") == case_id]
    if not mine:
        cases = [r["case_id"] for r in list_cases(records)]
        more = f", ... ({len(cases)} in all)" if len(cases) > MAX_LISTED else ""
        there = f"the cases there are: {', '.join(cases[:MAX_LISTED])}{more}" if cases else "they have no cases"
        raise CaseNotFound(f"no case {case_id} in these records; {there}")
    return mine


def case_incidents(records: Sequence[dict[str, Any]], case_id: str) -> list[CaseIncident]:
    """The incidents naming the case, in the order they opened, with how each joined."""
    how: dict[str, str] = {}
    for r in records:
        if r.get("type") in _CASE_TYPES and r.get("case_id") == case_id and r.get("incident_id"):
            if r["type"] == RecordKind.CASE_OPENED:
                how.setdefault(r["incident_id"], "opened the case")
            elif r["type"] == RecordKind.CASE_UPDATED and r.get("reason") in ("joined", "inhibited", "reopened"):
                how.setdefault(r["incident_id"], r["reason"])
    opened: dict[str, dict[str, Any]] = {}
    severity: dict[str, str] = {}
    resolved: dict[str, str | None] = {}
    for r in records:
        if not is_incident(r) or r.get("case_id") != case_id:
            continue
        iid = r["incident_id"]
        if r["type"] == RecordKind.OPENED:
            opened.setdefault(iid, r)
            severity[iid] = r["severity"]
        elif r["type"] == RecordKind.ESCALATED:
            severity[iid] = r["severity"]
        elif r["type"] == RecordKind.RESOLVED:
            resolved[iid] = r["ts"]
        elif r["type"] == RecordKind.REOPENED:
            resolved[iid] = None
    return [
        CaseIncident(
            iid,
            r["rule"],
            r.get("category", ""),
            r["group"],
            severity[iid],
            r["ts"],
            resolved.get(iid),
            how.get(iid, "joined"),
        )
        for iid, r in opened.items()
    ]


def lead_incident(incidents: Sequence[CaseIncident]) -> CaseIncident:
    """The most severe incident of the case; of those, the earliest opened."""
    return min(incidents, key=lambda i: (int(Severity.parse(i.severity)), i.opened))


def investigate_case(
    rules: Sequence[CompiledRule],
    events: Sequence[Event],
    case_id: str,
    options: Options,
    records: list[dict[str, Any]],
) -> CaseReport:
    """The case ``case_id`` of ``records`` (which must hold its case records: `with_cases`)."""
    mine = case_records(records, case_id)
    incidents = case_incidents(records, case_id)
    if not incidents:
        raise CaseNotFound(f"case {case_id} names no incident these records open")
    lead = lead_incident(incidents)
    report = investigate(rules, events, Selection(incident_id=lead.incident_id), options, records=records)
    first = mine[0]
    last = mine[-1]
    return CaseReport(
        case_id=case_id,
        category=first["category"],
        scope=first["scope"],
        severity=min((r["severity"] for r in mine), key=lambda s: int(Severity.parse(s))),
        opened=first["ts"],
        resolved=last["ts"] if last["type"] == RecordKind.CASE_RESOLVED else None,
        pages=sum(1 for r in mine if r.get("page")),
        incidents=tuple(incidents),
        timeline=tuple(mine),
        lead=report,
    )


# --- renderings --------------------------------------------------------------------------------


def _scope(scope: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v}" for k, v in scope.items()) or "(all)"


def _timeline_text(r: dict[str, Any]) -> str:
    kind = str(r["type"]).removeprefix("case.")
    reason = f" ({r['reason']})" if r.get("reason") else ""
    page = " — paged" if r.get("page") else ""
    return f"{r['ts']}  {kind}{reason}  {r['severity']}  {r.get('incident_id', '')} {r.get('rule', '')}{page}"


def render_case_markdown(report: CaseReport) -> str:
    resolved = f"resolved {report.resolved}" if report.resolved else "still open at the end of the range"
    out = [
        f"# Case {report.case_id} — {report.category.replace('_', ' ')} on {_scope(report.scope)} — {report.severity}",
        "",
        f"opened {report.opened} · {resolved} · {len(report.incidents)} incident(s) · {report.pages} page(s)",
        "",
        "## Incidents of the case",
        "",
        "| incident | rule | group | severity | opened | resolved | how it joined |",
        "|---|---|---|---|---|---|---|",
    ]
    for i in report.incidents:
        lead = " (lead)" if i.incident_id == report.lead.incident.incident_id else ""
        out.append(
            f"| `{i.incident_id}`{lead} | {i.rule} | {_scope(i.group)} | {i.severity} | {i.opened} | "
            f"{i.resolved or 'open'} | {i.joined} |"
        )
    out += ["", "## Case timeline", "", "```", *(_timeline_text(r) for r in report.timeline), "```", ""]
    out += [
        f"## Lead incident: {report.lead.incident.incident_id}",
        "",
        "The most severe incident of the case (the earliest of those), in full; the others: "
        "`firebreak investigate --incident ID`.",
        "",
    ]
    return "\n".join(out) + "\n" + render_markdown(report.lead)


def render_case_html(report: CaseReport) -> str:
    lead_id = report.lead.incident.incident_id
    rows = "".join(
        f"<tr><td><code>{escape(i.incident_id)}</code>{' (lead)' if i.incident_id == lead_id else ''}</td>"
        f"<td>{escape(i.rule)}</td><td>{escape(_scope(i.group))}</td><td>{escape(i.severity)}</td>"
        f"<td>{escape(i.opened)}</td><td>{escape(i.resolved or 'open')}</td><td>{escape(i.joined)}</td></tr>\n"
        for i in report.incidents
    )
    timeline = "".join(f"<li>{escape(_timeline_text(r))}</li>\n" for r in report.timeline)
    resolved = f"resolved {report.resolved}" if report.resolved else "still open at the end of the range"
    section = (
        f'<section class="case">\n<h1>Case <code>{escape(report.case_id)}</code>: '
        f"{escape(report.category.replace('_', ' '))} on {escape(_scope(report.scope))} · "
        f"{escape(report.severity)}</h1>\n"
        f"<p>opened {escape(report.opened)} · {escape(resolved)} · {len(report.incidents)} incident(s) · "
        f"{report.pages} page(s)</p>\n"
        "<table>\n<tr><th>incident</th><th>rule</th><th>group</th><th>severity</th><th>opened</th>"
        f"<th>resolved</th><th>how it joined</th></tr>\n{rows}</table>\n"
        f"<h2>Case timeline</h2>\n<ol>\n{timeline}</ol>\n"
        f"<p>Below: the lead incident <code>{escape(lead_id)}</code> (the most severe, the earliest of those) "
        "in full; the others: <code>firebreak investigate --incident ID</code>.</p>\n</section>\n"
    )
    page = render_html(report.lead)
    return page.replace("<main>\n", "<main>\n" + section, 1)


_CASE_TYPES = frozenset(k.value for k in CASE_KINDS)
