"""The `firebreak backtest` report: text with Markdown tables, or JSON (docs/backtest.md).
Pure: a BacktestRun in, a string or a JSON-ready dict out."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from firebreak.adapters.backtest import Backtest, BacktestRun, Incident
from firebreak.core import format_ts
from firebreak.core.events import format_duration
from firebreak.synthetic import GroundTruth


def summary_line(backtest: Backtest) -> str:
    s = backtest.summary
    median = f" (median {signed_duration(s['median_delta_ms'])})" if s["median_delta_ms"] is not None else ""
    return (
        f"old: {s['old_incidents']} incidents, new: {s['new_incidents']}; both {s['both']}, "
        f"only old {s['only_old']}, only new {s['only_new']}; new detects earlier in {s['new_earlier']} of "
        f"{s['both']}{median}"
    )


def render_text(run: BacktestRun, old_label: str = "old", new_label: str = "new", source_label: str = "") -> str:
    backtest = run.backtest
    s = backtest.summary
    stamps = [i.opened for row in backtest.rows for i in (row.old, row.new) if i is not None]
    days = {format_ts(ms)[:10] for ms in stamps}
    clock = _clock if len(days) <= 1 else _stamp
    if run.read_from is not None:
        source_label += f" (read from {format_ts(run.read_from)} for the rules' warm-up)"
    day = f" on {days.pop()}" if len(days) == 1 else ""
    lines = [
        f"Backtest: {old_label} (old) vs {new_label} (new) on {run.events:,} events{source_label} "
        f"(bad {run.bad_noun}s: {run.bad}, late events: {run.late}); times UTC{day}",
        "",
        summary_line(backtest),
        f"same time in {s['same_time']}, later in {s['new_later']}; renamed rules paired in {s['renamed']}; "
        f"final severity differs in {s['severity_differs']}",
        "",
    ]
    truth_column = backtest.truths is not None
    header = ["status", "rule", "group", "opened old", "opened new", "delta", "severity", "lag old", "lag new"]
    table = [header + (["detects"] if truth_column else [])]
    for row in backtest.rows:
        old, new = row.old, row.new
        if row.renamed:
            rule = f"{old.rule} → {new.rule} (renamed)"
        else:
            rule = row.first.rule
        severities = [i.severity for i in (old, new) if i is not None]
        severity = " → ".join(severities) if row.severity_differs else severities[0]
        cells = [
            row.status,
            rule,
            _group(row.first.group),
            clock(old.opened) if old else "-",
            clock(new.opened) if new else "-",
            signed_duration(row.delta_ms) if row.delta_ms is not None else "-",
            severity,
            format_duration(old.lag_ms) if old else "-",
            format_duration(new.lag_ms) if new else "-",
        ]
        if truth_column:
            truth = row.truth
            cells.append(f"{truth.category} {truth.dimension}={truth.value}" if truth else "-")
        table.append(cells)
    lines += markdown_table(table) if backtest.rows else ["no incidents opened by either version"]
    quiet = [c for c in backtest.counts if c.old == 0 and c.new == 0]
    lines += ["", "incidents opened, by rule (-: no such rule in that version):", ""]
    counts = [["rule", "old", "new", "change"]]
    for count in backtest.counts:
        if count in quiet:
            continue
        differs = count.old is not None and count.new is not None and count.new != count.old
        change = f"{count.new - count.old:+d}" if differs else ""
        counts.append([count.rule, _opt(count.old), _opt(count.new), change])
    lines += markdown_table(counts) if len(counts) > 1 else ["(none)"]
    if quiet:
        lines += ["", f"{len(quiet)} more rules in both versions opened nothing in either."]
    if backtest.truths is not None:
        lines += [
            "",
            f"ground truth: old detected {s['truths_detected_old']} of {s['truths']}, "
            f"new {s['truths_detected_new']} of {s['truths']} (time to detect = first opened − injection onset)",
            "",
        ]
        header = ["category", "target", "onset", "old: first rule", "TTD old", "new: first rule", "TTD new"]
        table = [header + ["new − old"]]
        for t in backtest.truths:
            table.append(
                [
                    t.truth.category,
                    f"{t.truth.dimension}={t.truth.value}",
                    clock(t.truth.onset_ts),
                    t.old.rule if t.old else "MISSED",
                    _opt(t.ttd_old_ms, signed_duration),
                    t.new.rule if t.new else "MISSED",
                    _opt(t.ttd_new_ms, signed_duration),
                    _opt(t.difference_ms, signed_duration),
                ]
            )
        lines += markdown_table(table) if backtest.truths else ["(the truth file is empty)"]
    return "\n".join(lines)


def to_json(run: BacktestRun) -> dict[str, Any]:
    backtest = run.backtest

    def ts(incident: Incident | None) -> str | None:
        return format_ts(incident.opened) if incident is not None else None

    def attr(incident: Incident | None, name: str) -> Any:
        return getattr(incident, name) if incident is not None else None

    rows = []
    for row in backtest.rows:
        old, new = row.old, row.new
        truth = row.truth
        rows.append(
            {
                "status": row.status,
                "rule_old": attr(old, "rule"),
                "rule_new": attr(new, "rule"),
                "renamed": row.renamed,
                "category": row.first.category,
                "group": row.first.group,
                "opened_old": ts(old),
                "opened_new": ts(new),
                "delta_ms": row.delta_ms,
                "severity_old": attr(old, "severity"),
                "severity_new": attr(new, "severity"),
                "incident_id_old": attr(old, "incident_id"),
                "incident_id_new": attr(new, "incident_id"),
                "lag_old_ms": attr(old, "lag_ms"),
                "lag_new_ms": attr(new, "lag_ms"),
                "resolved_old": format_ts(old.resolved) if old and old.resolved is not None else None,
                "resolved_new": format_ts(new.resolved) if new and new.resolved is not None else None,
                "truth": _truth_json(truth),
            }
        )
    out: dict[str, Any] = {
        "summary": backtest.summary,
        "input": {
            "events": run.events,
            "bad": run.bad,
            "late_events": run.late,
            "read_from": format_ts(run.read_from) if run.read_from is not None else None,
        },
        "rules": [{"rule": c.rule, "old": c.old, "new": c.new} for c in backtest.counts],
        "rows": rows,
        "truths": None,
    }
    if backtest.truths is not None:
        out["truths"] = [
            _truth_json(t.truth)
            | {
                "onset": format_ts(t.truth.onset_ts),
                "detected_old": t.old is not None,
                "detected_new": t.new is not None,
                "rule_old": attr(t.old, "rule"),
                "rule_new": attr(t.new, "rule"),
                "opened_old": ts(t.old),
                "opened_new": ts(t.new),
                "ttd_old_ms": t.ttd_old_ms,
                "ttd_new_ms": t.ttd_new_ms,
                "difference_ms": t.difference_ms,
            }
            for t in backtest.truths
        ]
    return out


def _truth_json(truth: GroundTruth | None) -> dict[str, Any] | None:
    return {"category": truth.category, "dimension": truth.dimension, "value": truth.value} if truth else None


def markdown_table(rows: list[list[str]]) -> list[str]:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]

    def line(cells: list[str]) -> str:
        return "| " + " | ".join(cell.ljust(w) for cell, w in zip(cells, widths, strict=True)) + " |"

    return [line(rows[0]), "|" + "|".join("-" * (w + 2) for w in widths) + "|"] + [line(row) for row in rows[1:]]


def signed_duration(ms: int) -> str:
    return "0s" if ms == 0 else ("-" if ms < 0 else "+") + format_duration(abs(ms))


def _opt(value: Any, show: Callable[[Any], str] = str) -> str:
    return "-" if value is None else show(value)


def _group(group: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v}" for k, v in group.items()) or "(all)"


def _clock(ms: int) -> str:
    return format_ts(ms - ms % 1000)[11:19]


def _stamp(ms: int) -> str:
    return format_ts(ms - ms % 1000)[:19].replace("T", " ")
