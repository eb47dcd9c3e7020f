"""The report as Markdown: for terminals, tickets and chat. A rendering of the `Report`
(model.py), nothing more; every value from the log is escaped for table cells."""

from __future__ import annotations

from typing import Any

from firebreak.core.events import parse_ts
from firebreak.investigate.model import Adversarial, Contributor, Point, Report, Review
from firebreak.investigate.review import duration_text

SPARK = "▁▂▃▄▅▆▇█"


def render_markdown(report: Report) -> str:
    inc, lags, span = report.incident, report.lags, report.range
    group = _group(inc.group)
    out = [f"# Incident {inc.incident_id} — {inc.rule} ({group}) — {inc.severity}", ""]
    resolved = f"resolved {inc.resolved}" if inc.resolved else "still open at the end of the range"
    out += [
        f"**{inc.category.replace('_', ' ')}** · opened {inc.opened} · {resolved} · "
        f"time to detect **{duration_text(lags.time_to_detect_ms)}** · "
        f"time to contain **{duration_text(lags.time_to_contain_ms)}**",
        "",
        *([f"Part of case `{inc.case_id}` (investigate it with `--case {inc.case_id}`)", ""] if inc.case_id else []),
        *_response(inc.response),
        f"Events {span.since} → {span.until}: {span.events:,} inference, "
        f"{span.changes:,} change, {span.reports:,} user reports" + (f" ({_cell(span.source)})" if span.source else ""),
        "",
    ]
    out += _timeline(report)
    out += _metric(report)
    out += _causes(report)
    out += _root_causes(report)
    out += _contributors(report)
    out += _adversarial(report)
    out += _user_reports(report)
    out += [
        "## Evidence",
        "",
        "Event ids (raw text is never copied into a report): " + ", ".join(f"`{e}`" for e in report.evidence)
        if report.evidence
        else "none",
        "",
    ]
    out += _review(report)
    if report.notes:
        out += ["## Notes", ""] + [f"- {n}" for n in report.notes] + [""]
    return "\n".join(out)


def _timeline(report: Report) -> list[str]:
    out = [
        "## Timeline (event time, UTC)",
        "",
        "| time | since first anomalous event | what | ref |",
        "|---|---|---|---|",
    ]
    for m in report.timeline:
        lag = m.lag_ms
        lag_text = "" if lag is None else ("−" if lag < 0 else "+") + duration_text(abs(lag))
        out.append(
            f"| {m.ts} | {lag_text} | **{m.kind.replace('_', ' ')}** {_cell(m.label)} | "
            f"{'`' + m.ref + '`' if m.ref else ''} |"
        )
    return out + [""]


def _metric(report: Report) -> list[str]:
    inc = report.incident
    points = report.series.points
    out = ["## Metric", "", "```", inc.rule_text, "```", ""]
    out.append(
        f"`{inc.metric}` over {duration_text(inc.window_ms)} — at detection: "
        f"value {_num(inc.value)}, baseline {_num(inc.baseline)}, threshold {_num(inc.threshold)}; "
        f"peak {_num(inc.peak)}. Anomalous here means: {report.anomaly.means}."
    )
    sig = inc.significance
    if sig is not None and sig.p_value is not None and sig.confidence is not None and sig.test == "t":
        out.append(
            f"Significance: a mean of {_num(sig.observed)} over {sig.trials} values (sd {_num(sig.sd)}) where "
            f"{_num(sig.expected)} is the threshold — p = {sig.p_value:.3g} (Student's t test against the "
            f"{sig.reference} limit), under 1 − {_num(sig.confidence * 100)}%."
        )
    elif sig is not None and sig.p_value is not None and sig.confidence is not None:
        of = f" of {sig.trials}" if sig.trials is not None else ""
        test = f"{sig.test} test against the {sig.reference} limit"
        if (ref := sig.against) is not None:
            span = f" of {ref.trials}" if ref.trials is not None else f" in {duration_text(ref.span_ms or 0)}"
            test = f"two-sample test against the {ref.observed}{span} of the {sig.reference}"
        out.append(
            f"Significance: {sig.observed}{of} observed where {_num(sig.expected)} are expected at the "
            f"threshold — p = {sig.p_value:.3g} ({test}), under 1 − {_num(sig.confidence * 100)}%."
        )
    values = [p.value for p in points]
    known = [v for v in values if v is not None]
    if known:
        lo, hi = min(known), max(known)
        spark = "".join(" " if v is None else SPARK[0 if hi == lo else int((v - lo) / (hi - lo) * 7)] for v in values)
        out += [
            "",
            f"```\n{spark}\n{points[0].ts} … {points[-1].ts}  (min {_num(lo)}, max {_num(hi)}, "
            f"one mark per {duration_text(report.series.step_ms)})\n```",
        ]
        out += ["", "| time | value | baseline | threshold | events |", "|---|---|---|---|---|"]
        for p in _around(points, inc.opened):
            out.append(f"| {p.ts} | {_num(p.value)} | {_num(p.baseline)} | {_num(p.threshold)} | {p.events} |")
    return out + [""]


def _around(points: tuple[Point, ...], at: Any, before: int = 6, after: int = 4) -> tuple[Point, ...]:
    t = parse_ts(at)
    i = next((k for k, p in enumerate(points) if parse_ts(p.ts) >= t), len(points) - 1)
    return points[max(0, i - before) : i + after + 1]


def _causes(report: Report) -> list[str]:
    out = ["## Suspected causes", ""]
    if not report.suspected_causes:
        return out + ["No change event in the lookback window, and no sign of an attack.", ""]
    out += ["| # | score | kind | time | event | dimensions | why |", "|---|---|---|---|---|---|---|"]
    for c in report.suspected_causes:
        dims = ", ".join(f"{k}={v}" for k, v in c.dimensions.items())
        out.append(
            f"| {c.rank} | {c.score:.2f} | {c.kind} | {c.ts} | `{c.event_id}` | {_cell(dims)} | "
            f"{_cell(c.description)} — {_cell(c.why)} |"
        )
    out += ["", "score = 0.6 × match + 0.3 × proximity + 0.1 × prior (docs/investigate.md)"]
    return out + [""]


def _root_causes(report: Report) -> list[str]:
    roots = report.root_causes
    out = ["## Root causes", ""]
    if roots is None:
        return []
    if not roots.causes:
        out.append("No combination of dimension values explains the anomaly on its own.")
    else:
        out += [
            "| root cause | lift | explains | anomalous (expected) | events | why this combination |",
            "|---|---|---|---|---|---|",
        ]
        for c in roots.causes:
            what = " AND ".join(f"{v.dimension}={v.value}" for v in c.values)
            lift = "new" if c.lift is None else f"{c.lift:g}×"
            out.append(
                f"| {_cell(what)} | {lift} | {c.explained:.0%} | {c.flagged:.4g} ({c.expected:.4g}) | "
                f"{c.events} | {_cell(c.why)} |"
            )
        out += ["", f"Together they explain {roots.explained:.0%} of the excess ({roots.measure} measure)."]
    considered = ", ".join(roots.dimensions)
    capped = f"; high-cardinality (top values by excess only): {', '.join(roots.capped)}" if roots.capped else ""
    out += ["", _cell(f"Searched over {roots.scope}, combinations of up to three of: {considered}{capped}.")]
    out += [f"Note: {_cell(n)}" for n in roots.notes]
    return out + [""]


def _contributors(report: Report) -> list[str]:
    out = ["## Contributors", ""]
    if not report.contributors:
        return out + ["No dimension value over-represents the anomaly.", ""]
    out += [
        "| dimension | value | lift | share | baseline share | anomalous | events |",
        "|---|---|---|---|---|---|---|",
    ]
    for c in report.contributors:
        out.append(
            f"| {c.dimension} | {_cell(c.value)}{_aliases(c)} | {c.lift:g}× | {c.share:.0%} | "
            f"{c.baseline_share:.0%} | {c.flagged:g} | {c.events} |"
        )
    group = report.incident.group
    if group:
        named = ", ".join(f"{k}={v}" for k, v in group.items())
        out += [
            "",
            f"Measured inside the incident's group ({_cell(named)}): what concentrates the anomaly within it; "
            "the group's own row is measured against the rule's other groups.",
        ]
    return out + [""]


def _adversarial(report: Report) -> list[str]:
    adv = report.adversarial or Adversarial()
    out = ["## Adversarial signs", "", ("**Suspected.** " if adv.suspected else "None found: ") + _cell(adv.why)]
    if adv.suspected and adv.top_users:
        users = ", ".join(f"`{u.value}` ({u.share:.0%})" for u in adv.top_users)
        tenants = ", ".join(f"`{t.value}` ({t.share:.0%})" for t in adv.top_tenants)
        out += ["", f"Top users of the attack flags: {users}", "", f"Their tenants: {tenants}"]
    return out + [""]


def _response(response: dict[str, Any] | None) -> list[str]:
    if not response:
        return []
    page = "paged" if response["page"] else "not paged (ticket)"
    return [
        f"**Response** (policy): {_cell(response['team'])}, {page}, status update every "
        f"{duration_text(response['update_every_ms'])}",
        "",
    ]


def _user_reports(report: Report) -> list[str]:
    ur = report.user_reports
    if not ur or not ur.reports:
        return []
    labels = ", ".join(f"{_cell(k)} ×{n}" for k, n in ur.labels.items())
    out = [
        "## User reports",
        "",
        f"{ur.reports} reports from {ur.users} users in the incident ({labels}); {ur.joined} name an answer "
        "found in the log.",
        "",
    ]
    if ur.answers:
        out += ["| answers from | reports |", "|---|---|"]
        for dim, values in ur.answers.items():
            out += [f"| {dim}=`{_cell(v.value)}` | {v.reports} |" for v in values]
        out.append("")
    return out


def _review(report: Report) -> list[str]:
    r = report.review or Review()
    out = [
        "## Review (postmortem skeleton)",
        "",
        "### Impact",
        "",
        r.impact,
        "",
        "### Time to detect",
        "",
        r.time_to_detect,
        "",
        "### Time to contain",
        "",
        r.time_to_contain,
        "",
        "### Cause candidates",
        "",
    ]
    out += [f"{i}. {_cell(c)}" for i, c in enumerate(r.cause_candidates, start=1)] or ["(none)"]
    out += ["", "### Follow-ups", ""] + [f"- [ ] {_cell(f)}" for f in r.follow_ups] + [""]
    s = r.monitoring_suggestion
    out += ["### Suggested monitoring change", ""]
    if not s:
        out += [
            "None: detection was neither coarse nor slow (more than a quarter window), or no variant of the "
            "rule did better when replayed over the same events.",
            "",
        ]
        return out
    out += [_cell(s.why) + ".", "", "```", s.rule_text, "```", ""]
    b = s.backtest
    if b.opened:
        out.append(
            f"Replayed over the same events, it opens an incident at {b.opened} (time to detect "
            f"{duration_text(b.time_to_detect_ms)}, against {r.time_to_detect} for the rule as it is), "
            f"and {b.incidents_in_range} incident(s) in the whole range (the rule as it is: "
            f"{b.rule_incidents_in_range})."
        )
    else:
        out.append(
            f"Replayed over the same events it would not have caught this incident "
            f"({b.incidents_in_range} incident(s) in the whole range): treat it with care."
        )
    return out + [""]


def _aliases(c: Contributor) -> str:
    same = c.same_as
    return " (= " + ", ".join(f"{a.dimension}={_cell(a.value)}" for a in same) + ")" if same else ""


def _group(group: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v}" for k, v in group.items()) or "all events"


def _num(value: float | None) -> str:
    return "—" if value is None else f"{value:.4g}"


def _cell(text: Any) -> str:
    return str(text).replace("\\", "\\\\").replace("|", "\\|").replace("\n", " ").replace("`", "'")
