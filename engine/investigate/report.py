"""Build the investigation report of one incident: the orchestration of the passes.

The report is a JSON-ready dict (shape: docs/investigate.md). Markdown and HTML are
renderings of it; `--format json` prints it as it is.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from engine.core.engine import DEFAULT_LATENESS_MS, run_events
from engine.core.events import Event, format_ts, parse_ts
from engine.dsl.compiler import CompiledRule, getter
from engine.investigate.adversarial import adversarial_signs
from engine.investigate.anomaly import Mass, change_point, first_anomalous, mass_of, slope_start
from engine.investigate.causes import rank_causes
from engine.investigate.contributors import (
    combine,
    conjunction,
    dimensions_of,
    merge_aliases,
    rank_contributors,
    rank_group,
    value_shift,
)
from engine.investigate.incident import IncidentView, Selection, select
from engine.investigate.reports import join_reports, user_reports
from engine.investigate.review import postmortem, suggest_monitoring
from engine.investigate.series import metric_series

HOUR = 3_600_000
MAX_CONTRIBUTORS = 10
MAX_CAUSES = 10
MAX_EVIDENCE = 10
CAUSE_MARK_SCORE = 0.5  # the top cause is drawn on the timeline when it scores at least this
SLOPE_SEARCH_MS = 6 * HOUR  # a slope may have begun this long before onset
Shift = Callable[[str, str, int], float | None]


@dataclass(frozen=True)
class Options:
    lateness_ms: int = DEFAULT_LATENESS_MS
    lookback_ms: int = 2 * HOUR  # change events considered before the anomaly began
    source: str = ""  # where the events came from, for the report's header
    suggest: bool = True  # suggest (and backtest) a monitoring change


def investigate(
    rules: Sequence[CompiledRule],
    events: Sequence[Event],
    selection: Selection,
    options: Options = Options(),
    records: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """``events``: the log as read (the order the engine sees); ``records``: what the engine
    emitted for them (replayed here when not given)."""
    rules = tuple(rules)
    if records is None:
        records = run_events(rules, events, options.lateness_ms)
    view = select(records, rules, selection)
    rule = view.rule
    log = sorted(events, key=lambda e: (e.ts, e.event_id))
    if not log:
        raise ValueError("no events")
    log, joined = join_reports(log)  # each report beside the answer it names
    data_from, data_to = log[0].ts, log[-1].ts
    inference = [e for e in log if e.type == "inference"]
    counted = inference if rule.source == "inference" else [e for e in log if e.type == rule.source]
    population = [e for e in counted if rule.where is None or rule.where(e.data)]
    in_group = _group_matcher(rule, view.group)
    group_events = [e for e in population if in_group(e.data)]

    window = rule.window_ms
    span = rule.baseline_ms or 6 * window
    onset, opened, resolved = view.onset_ts, view.opened_ts, view.resolved_ts
    # 1. When did the anomaly begin? (the group's events against the period before)
    ref_hi = onset - 2 * window
    ref_lo = max(ref_hi - span, data_from)
    reference = [e for e in group_events if ref_lo <= e.ts < ref_hi]
    group_mass = mass_of(rule, reference)
    start_step = change_point(
        group_mass,
        group_events,
        rule.step_ms,
        onset - 2 * window,
        onset,
        reference,
        max(0, ref_hi - ref_lo),
        _level_period(group_events, onset, window, resolved if resolved is not None else data_to + 1),
    )
    # A drift that ramps in crosses the threshold long after it began: a broken-stick fit over
    # the hours before onset dates it when a slope explains the series clearly better than a step.
    fit = slope_start(group_mass, group_events, rule.step_ms, max(data_from, onset - SLOPE_SEARCH_MS), onset)
    shape = "step"
    if fit is not None and fit.is_slope and fit.start < start_step:
        start_step, shape = fit.start, "slope"
        before = [e for e in group_events if max(data_from, fit.start - span) <= e.ts < fit.start]
        if before:  # "anomalous" measured against the period before the slope, not the drifted one
            group_mass = mass_of(rule, before)
    first = first_anomalous(group_mass, group_events, start_step)
    start = first.ts if first is not None else start_step

    # 2. Where does it concentrate? (inside the incident's group, incident vs before and vs the
    # rest; and the group itself against the rule's other groups)
    inc_to = max(min(resolved if resolved is not None else data_to + 1, opened + window), start_step + rule.step_ms)
    base_lo = max(start_step - max(span, 6 * window), data_from)
    pop_inc = [e for e in population if start_step <= e.ts < inc_to]
    pop_base = [e for e in population if base_lo <= e.ts < start_step]
    mass = mass_of(rule, pop_base)
    spans = (inc_to - start_step, start_step - base_lo)
    scope_inc = [e for e in pop_inc if in_group(e.data)]
    scope_base = [e for e in pop_base if in_group(e.data)]
    inside = rank_contributors(rule, mass, scope_inc, scope_base, *spans, skip=frozenset(view.group))
    contributors = combine(rank_group(rule, mass, view.group, in_group, pop_inc, pop_base, *spans), inside)
    all_inc = [e for e in inference if start_step <= e.ts < inc_to]
    all_base = [e for e in inference if base_lo <= e.ts < start_step]
    adversarial = adversarial_signs(all_inc, all_base, pop_inc, mass)

    # 3. What changed before it?
    changes = [e for e in log if e.type == "change" and start - options.lookback_ms <= e.ts <= opened]
    shift = _shift(view.group, value_shift(population, mass, inc_to), value_shift(group_events, mass, inc_to))
    causes = rank_causes(
        changes,
        start,
        rule.step_ms,
        rule.category,
        contributors,
        adversarial,
        shift,
        dimensions_of(rule),
        {k: _text(v) for k, v in view.group.items()},
        _joint(contributors, view.group, in_group, pop_inc, scope_inc, scope_base, spans, mass),
    )

    # 4. The story in event time.
    end = resolved if resolved is not None else data_to
    incident = _incident(view)
    timeline = _timeline(view, causes, first, group_mass.describe)
    lags = _lags(view, first, start, causes)
    series = metric_series(
        rule,
        group_events,
        max(onset - 3 * window, data_from),
        min(end + window, data_to + 1),
        (onset, resolved if resolved is not None else data_to + 1, view.opened.get("baseline")),
    )
    anomalous = [e for e in group_events if start <= e.ts <= end and group_mass.weight(e.data) > 0]
    reports = user_reports(log, joined, in_group, start, end)
    impact = {
        "users": len({e.data.get("user") for e in anomalous if e.data.get("user") is not None}),
        "events": len(anomalous),
        "from": format_ts(start),
        "reports": reports["reports"],
        "reporting_users": reports["users"],
    }
    suggestion = None
    if options.suggest:
        suggestion = suggest_monitoring(
            rule,
            view.group,
            merge_aliases(contributors),
            lags["time_to_detect_ms"],
            events,
            options.lateness_ms,
            start_step - window,
            start,
            end,
            sum(1 for r in records if r["type"] == "incident.opened" and r["rule"] == rule.name),
            _splitting(group_events, start_step, inc_to, dimensions_of(rule)),
        )
    evidence = list(dict.fromkeys([*(e.event_id for e in anomalous[:MAX_EVIDENCE]), *view.opened.get("evidence", [])]))
    return {
        "incident": incident,
        "range": {
            "since": format_ts(data_from),
            "until": format_ts(data_to),
            "events": len(inference),
            "changes": sum(1 for e in log if e.type == "change"),
            "reports": sum(1 for e in log if e.type == "report"),
            "source": options.source,
        },
        "anomaly": {
            "means": group_mass.describe,
            "estimated_start": format_ts(start_step),
            "shape": shape,
            "first_event": first.event_id if first else None,
        },
        "timeline": timeline,
        "lags": lags,
        "series": series,
        "suspected_causes": causes[:MAX_CAUSES],
        "contributors": merge_aliases(contributors)[:MAX_CONTRIBUTORS],
        "adversarial": adversarial,
        "user_reports": reports,
        "evidence": evidence,
        "review": postmortem(incident, lags, causes, adversarial, impact, bool(rule.contains), suggestion),
        "notes": _notes(view, first, changes, data_from, start, options),
    }


def _shift(group: dict[str, Any], of_population: Shift, of_group: Shift) -> Shift:
    """A value's shift inside the group; the group's own values against the whole population."""
    own = {(k, _text(v)) for k, v in group.items()}

    def shift(dim: str, value: str, t: int) -> float | None:
        return (of_population if (dim, value) in own else of_group)(dim, value, t)

    return shift


def _joint(
    contributors: list[dict[str, Any]],
    group: dict[str, Any],
    in_group: Callable[[dict[str, Any]], bool],
    pop_inc: list[Event],
    scope_inc: list[Event],
    scope_base: list[Event],
    spans: tuple[int, int],
    mass: Mass,
) -> Callable[[list[tuple[str, str]]], float]:
    """The score of what a change naming ``pairs`` (values inside the group) changed: where
    they meet; the group's own score when they are another name of the group — every event
    of the group carries them and no event outside it does (a template that is its feature's
    only one). A value carried outside the group too (a version every model shares) is not."""
    own = max((c["score"] for c in contributors if c["dimension"] in group), default=0.0)

    def joint(pairs: list[tuple[str, str]]) -> float:
        getters = [(getter(tuple(d.split("."))), v) for d, v in pairs]

        def carries(e: Event) -> bool:
            return all(_text(get(e.data)) == v for get, v in getters)

        if (group and scope_inc and all(carries(e) for e in scope_inc)
                and all(in_group(e.data) for e in pop_inc if carries(e))):  # fmt: skip
            return own
        return conjunction(mass, pairs, scope_inc, scope_base, *spans)

    return joint


def _text(value: Any) -> str:
    return "true" if value is True else "false" if value is False else str(value)


def _level_period(group_events: list[Event], onset: int, window: int, end: int) -> tuple[int, int]:
    """The window after onset (what the anomaly looks like), or the one before when nothing
    of the group came after onset."""
    after = (onset, max(onset + 1, min(onset + window, end)))
    if any(after[0] <= e.ts < after[1] for e in group_events):
        return after
    return onset - window, onset


def _splitting(group_events: list[Event], lo: int, hi: int, dims: tuple[str, ...]) -> frozenset[str]:
    """The dimensions that take more than one value among the group's events in [lo, hi)."""
    seen: dict[str, set] = {d: set() for d in dims}
    getters = {d: getter(tuple(d.split("."))) for d in dims}
    for e in group_events:
        if lo <= e.ts < hi:
            for d, get in getters.items():
                value = get(e.data)
                if value is not None and not isinstance(value, dict | list):
                    seen[d].add(value)
    return frozenset(d for d, values in seen.items() if len(values) > 1)


def _group_matcher(rule: CompiledRule, group: dict[str, Any]):
    getters = [(getter(tuple(k.split("."))), v) for k, v in group.items()]

    def matches(data: dict[str, Any]) -> bool:
        for get, want in getters:
            got = get(data)
            if got != want or isinstance(got, bool) != isinstance(want, bool):
                return False
        return True

    return matches


def _incident(view: IncidentView) -> dict[str, Any]:
    rule, opened = view.rule, view.opened
    peak = view.resolved.get("peak") if view.resolved else None
    if peak is None:
        values = [r["value"] for r in (opened, *view.escalations) if r.get("value") is not None]
        peak = max(values) if rule.op in {">", ">="} else min(values) if values else None
    return {
        "incident_id": view.incident_id,
        "rule": rule.name,
        "rule_text": rule.text,
        "category": rule.category,
        "severity": view.severity,
        "initial_severity": opened["severity"],
        "group": view.group,
        "metric": rule.metric_text,
        "op": rule.op,
        "window_ms": rule.window_ms,
        "step_ms": rule.step_ms,
        "opened": opened["ts"],
        "onset": opened["onset"],
        "resolved": view.resolved["ts"] if view.resolved else None,
        "value": opened.get("value"),
        "baseline": opened.get("baseline"),
        "threshold": opened.get("threshold"),
        "peak": peak,
        "users_affected": opened.get("users_affected"),
        "events": opened.get("events"),
        "why": opened.get("why"),
        "significance": opened.get("significance"),
        "response": (view.escalations[-1] if view.escalations else opened).get("response"),
    }


def _timeline(view: IncidentView, causes: list[dict[str, Any]], first: Event | None, means: str) -> list[dict]:
    marks: list[tuple[int, int, dict[str, Any]]] = []

    def mark(ts: int, kind: str, label: str, ref: str | None) -> None:
        marks.append((ts, len(marks), {"ts": format_ts(ts), "kind": kind, "label": label, "ref": ref}))

    top = causes[0] if causes else None
    if top and top["kind"] != "attack" and top["score"] >= CAUSE_MARK_SCORE:
        mark(parse_ts(top["ts"]), "cause", f"{top['kind']}: {top['description']}", top["event_id"])
    if first is not None:
        mark(first.ts, "first_anomalous_event", means, first.event_id)
    if view.onset_ts != view.opened_ts:
        mark(view.onset_ts, "onset", "condition first held", view.incident_id)
    o = view.opened
    mark(view.opened_ts, "detected", f"opened at {o['severity']}: {o['rule']} {_value_text(o)}", view.incident_id)
    for r in view.escalations:
        mark(
            parse_ts(r["ts"]), "escalated", f"{r['previous_severity']} → {r['severity']} ({r['why']})", view.incident_id
        )
    params_of = {r["command_id"]: r.get("params") or {} for r in view.commands if r.get("params")}
    for r in view.commands:
        kind = {
            "containment.command": "contained",
            "containment.renewed": "renewed",
            "containment.release": "released",
        }[r["type"]]
        params = ", ".join(f"{k}={v}" for k, v in params_of.get(r["command_id"], {}).items())
        mark(
            parse_ts(r["ts"]), kind, f"{r['action']}({params})" + (" [hold]" if r.get("hold") else ""), r["command_id"]
        )
    if view.resolved:
        mark(view.resolved_ts, "resolved", view.resolved.get("why", "resolved"), view.incident_id)
    marks.sort(key=lambda m: (m[0], m[1]))
    base = first.ts if first is not None else None
    return [{**m, "lag_ms": ts - base if base is not None else None} for ts, _, m in marks]


def _value_text(r: dict[str, Any]) -> str:
    return f"value {r.get('value')} vs limit {r.get('threshold')}"


def _lags(view: IncidentView, first: Event | None, start: int, causes: list[dict[str, Any]]) -> dict[str, Any]:
    contained = [parse_ts(r["ts"]) for r in view.commands if r["type"] == "containment.command"]
    top = causes[0] if causes else None
    return {
        "time_to_detect_ms": view.opened_ts - start,
        "time_to_contain_ms": min(contained) - start if contained else None,
        "time_to_resolve_ms": view.resolved_ts - start if view.resolved_ts is not None else None,
        "cause_to_onset_ms": start - parse_ts(top["ts"]) if top and top["kind"] != "attack" else None,
    }


def _notes(
    view: IncidentView, first: Event | None, changes: list[Event], data_from: int, start: int, options: Options
) -> list[str]:
    notes = []
    if first is None:
        notes.append("no anomalous event found before onset; times are measured from the estimated start")
    if data_from > start - options.lookback_ms:
        notes.append(
            f"the events begin {format_ts(data_from)}, less than the lookback "
            f"({options.lookback_ms // 60_000}m) before the anomaly: earlier changes are not seen"
        )
    if not changes:
        notes.append("no change event in the lookback window")
    return notes
