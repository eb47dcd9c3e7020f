"""Build the investigation report of one incident: the orchestration of the passes.

Each pass takes and returns typed values: `read_log` (the log as the incident's rule sees
it: `Log`) → `find_onset` (when the anomaly began: `Onset`) → `find_concentration` (its
contributors and adversarial signs: `Concentration`) → `rank_causes` (over the `findings`)
→ the story (`Incident`, timeline `Mark`s, `Lags`, `Series`) → `assess_impact` and the
review (`suggest`, `postmortem`). The result is a `Report` (model.py); `report.to_json()` is
what `--format json` prints (shape: docs/investigate.md), Markdown and HTML render the
`Report` itself.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from firebreak.core.engine import DEFAULT_LATENESS_MS, run_events
from firebreak.core.events import Event, format_ts, parse_ts
from firebreak.dsl.compiler import CompiledRule, getter
from firebreak.event_types import EventType
from firebreak.investigate.adversarial import adversarial_signs
from firebreak.investigate.anomaly import Mass, change_point, first_anomalous, mass_of, slope_start
from firebreak.investigate.causes import Findings, Shift, rank_causes
from firebreak.investigate.contributors import (
    combine,
    conjunction,
    dimensions_of,
    merge_aliases,
    rank_contributors,
    rank_group,
    value_shift,
)
from firebreak.investigate.incident import IncidentView, Selection, select
from firebreak.investigate.model import (
    Adversarial,
    Anomaly,
    Cause,
    Contributor,
    Incident,
    Lags,
    Mark,
    Range,
    Report,
    RootCauses,
    Series,
    Significance,
    Suggestion,
    UserReports,
)
from firebreak.investigate.reports import join_reports, user_reports
from firebreak.investigate.review import Detection, Impact, postmortem, suggest_monitoring
from firebreak.investigate.rootcause import explain
from firebreak.investigate.series import judged_spans, metric_series
from firebreak.records import IncidentRecord, RecordKind

HOUR = 3_600_000
MAX_CONTRIBUTORS = 10
MAX_CAUSES = 10
MAX_EVIDENCE = 10
CAUSE_MARK_SCORE = 0.5  # the top cause is drawn on the timeline when it scores at least this
SLOPE_SEARCH_MS = 6 * HOUR  # a slope may have begun this long before onset


@dataclass(frozen=True)
class Options:
    lateness_ms: int = DEFAULT_LATENESS_MS
    lookback_ms: int = 2 * HOUR  # change events considered before the anomaly began
    source: str = ""  # where the events came from, for the report's header
    suggest: bool = True  # suggest (and backtest) a monitoring change


@dataclass(frozen=True)
class Log:
    """The event log as the incident's rule sees it (sorted by time, reports joined to the
    answers they name)."""

    view: IncidentView
    events: Sequence[Event]  # as read, in the order the engine saw them
    records: list[dict[str, Any]]  # what the engine emitted for them
    log: list[Event]
    joined: set[str]  # the reports joined to an answer
    inference: list[Event]
    population: list[Event]  # the rule's events (its source, passing its `where`)
    in_group: Callable[[dict[str, Any]], bool]
    group_events: list[Event]  # the population inside the incident's group

    @property
    def rule(self) -> CompiledRule:
        return self.view.rule

    @property
    def data_from(self) -> int:
        return self.log[0].ts

    @property
    def data_to(self) -> int:
        return self.log[-1].ts

    @property
    def opened(self) -> int:
        return self.view.opened_ts

    @property
    def until(self) -> int:
        """The end of the incident: its resolution, or just after the last event."""
        resolved = self.view.resolved_ts
        return resolved if resolved is not None else self.data_to + 1

    @property
    def end(self) -> int:
        """The end of the incident: its resolution, or the last event."""
        resolved = self.view.resolved_ts
        return resolved if resolved is not None else self.data_to


@dataclass(frozen=True)
class Onset:
    """When the anomaly began: the step it began at (``start_step``), its first anomalous
    event (``first``; ``start`` its time, else the step's), and what anomalous means (``mass``,
    measured on the period before)."""

    start_step: int
    shape: str
    mass: Mass
    first: Event | None

    @property
    def start(self) -> int:
        return self.first.ts if self.first is not None else self.start_step


@dataclass(frozen=True)
class Concentration:
    """Where the anomaly concentrates, incident period [start_step, inc_to) against the period
    before [base_lo, start_step): over the population (``pop_*``) and inside the group (``scope_*``)."""

    start_step: int
    inc_to: int
    base_lo: int
    mass: Mass  # anomalous as measured over the population before
    pop_inc: list[Event]
    pop_base: list[Event]
    scope_inc: list[Event]
    scope_base: list[Event]
    contributors: list[Contributor]  # ranked, aliases not merged
    adversarial: Adversarial
    root_causes: RootCauses

    @property
    def spans(self) -> tuple[int, int]:
        return self.inc_to - self.start_step, self.start_step - self.base_lo


def investigate(
    rules: Sequence[CompiledRule],
    events: Sequence[Event],
    selection: Selection,
    options: Options = Options(),
    records: list[dict[str, Any]] | None = None,
) -> Report:
    """``events``: the log as read (the order the engine sees); ``records``: what the engine
    emitted for them (replayed here when not given). The passes, in order: the log as the rule
    sees it, the onset, the concentration, the causes, the story, the impact and the review."""
    rules = tuple(rules)
    if records is None:
        records = run_events(rules, events, options.lateness_ms)
    log = read_log(select(records, rules, selection), events, records)
    onset = find_onset(log)
    found = find_concentration(log, onset)
    since = onset.start - options.lookback_ms
    changes = [e for e in log.log if e.type == EventType.CHANGE and since <= e.ts <= log.opened]
    causes = rank_causes(changes, findings(log, onset, found))
    story = tell_story(log, onset, causes)
    reports, impact, anomalous = assess_impact(log, onset)
    suggestion = suggest(log, onset, found, story.lags, options) if options.suggest else None
    evidence_ids = [*(e.event_id for e in anomalous[:MAX_EVIDENCE]), *log.view.opened.evidence]
    contained = bool(log.rule.contains)
    return Report(
        incident=story.incident,
        range=Range(
            since=format_ts(log.data_from),
            until=format_ts(log.data_to),
            events=len(log.inference),
            changes=sum(1 for e in log.log if e.type == EventType.CHANGE),
            reports=sum(1 for e in log.log if e.type == EventType.REPORT),
            source=options.source,
        ),
        anomaly=Anomaly(
            means=onset.mass.describe,
            estimated_start=format_ts(onset.start_step),
            shape=onset.shape,
            first_event=onset.first.event_id if onset.first else None,
        ),
        timeline=story.timeline,
        lags=story.lags,
        series=story.series,
        suspected_causes=tuple(causes[:MAX_CAUSES]),
        root_causes=found.root_causes,
        contributors=tuple(merge_aliases(found.contributors)[:MAX_CONTRIBUTORS]),
        adversarial=found.adversarial,
        user_reports=reports,
        evidence=tuple(dict.fromkeys(evidence_ids)),
        review=postmortem(story.incident, story.lags, causes, found.adversarial, impact, contained, suggestion),
        notes=tuple(_notes(onset, changes, log.data_from, options)),
    )


def read_log(view: IncidentView, events: Sequence[Event], records: list[dict[str, Any]]) -> Log:
    """The log sorted by time, its reports joined to their answers, and split the rule's way."""
    rule = view.rule
    log = sorted(events, key=lambda e: (e.ts, e.event_id))
    if not log:
        raise ValueError("no events")
    log, joined = join_reports(log)  # each report beside the answer it names
    inference = [e for e in log if e.type == EventType.INFERENCE]
    counted = inference if rule.source is EventType.INFERENCE else [e for e in log if e.type == rule.source]
    population = [e for e in counted if rule.where is None or rule.where(e.data)]
    in_group = _group_matcher(rule, view.group)
    group_events = [e for e in population if in_group(e.data)]
    return Log(view, events, records, log, joined, inference, population, in_group, group_events)


def find_onset(log: Log) -> Onset:
    """When did the anomaly begin? The group's events against the period before: a CUSUM
    change point, or a slope when a broken-stick fit explains the hours before onset better."""
    rule, view, group_events, data_from = log.rule, log.view, log.group_events, log.data_from
    window = rule.window_ms
    span = rule.baseline_ms or 6 * window
    onset = view.onset_ts
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
        _level_period(group_events, onset, window, log.until),
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
    return Onset(start_step, shape, group_mass, first_anomalous(group_mass, group_events, start_step))


def find_concentration(log: Log, onset: Onset) -> Concentration:
    """Where does it concentrate? Inside the incident's group, incident vs before and vs the
    rest; the group itself against the rule's other groups; and signs of an attack."""
    rule, view, start_step = log.rule, log.view, onset.start_step
    window = rule.window_ms
    span = rule.baseline_ms or 6 * window
    inc_to = max(min(log.until, view.opened_ts + window), start_step + rule.step_ms)
    base_lo = max(start_step - max(span, 6 * window), log.data_from)
    pop_inc = [e for e in log.population if start_step <= e.ts < inc_to]
    pop_base = [e for e in log.population if base_lo <= e.ts < start_step]
    mass = mass_of(rule, pop_base)
    spans = inc_to - start_step, start_step - base_lo
    scope_inc = [e for e in pop_inc if log.in_group(e.data)]
    scope_base = [e for e in pop_base if log.in_group(e.data)]
    inside = rank_contributors(rule, mass, scope_inc, scope_base, *spans, skip=frozenset(view.group))
    group_rows = rank_group(rule, mass, view.group, log.in_group, pop_inc, pop_base, *spans)
    all_inc = [e for e in log.inference if start_step <= e.ts < inc_to]
    all_base = [e for e in log.inference if base_lo <= e.ts < start_step]
    adversarial = adversarial_signs(all_inc, all_base, pop_inc, mass)
    roots = explain(dimensions_of(rule), mass, view.group, pop_inc, pop_base, *spans, getter)
    return Concentration(
        start_step,
        inc_to,
        base_lo,
        mass,
        pop_inc,
        pop_base,
        scope_inc,
        scope_base,
        combine(group_rows, inside),
        adversarial,
        roots,
    )


def findings(log: Log, onset: Onset, found: Concentration) -> Findings:
    """What the causes are scored against: the start, the contributors, the shift of values."""
    group = log.view.group
    of_population = value_shift(log.population, found.mass, found.inc_to)
    shift = _shift(group, of_population, value_shift(log.group_events, found.mass, found.inc_to))
    return Findings(
        start=onset.start,
        step_ms=log.rule.step_ms,
        category=log.rule.category,
        contributors=found.contributors,
        adversarial=found.adversarial,
        shift=shift,
        dimensions=dimensions_of(log.rule),
        group={k: _text(v) for k, v in group.items()},
        joint=_joint(group, log.in_group, found),
    )


@dataclass(frozen=True)
class Story:
    """The incident in event time: the records' facts, the timeline, the lags from the first
    anomalous event, and the metric against its baseline and threshold."""

    incident: Incident
    timeline: tuple[Mark, ...]
    lags: Lags
    series: Series


def tell_story(log: Log, onset: Onset, causes: list[Cause]) -> Story:
    view, window = log.view, log.rule.window_ms
    series = metric_series(
        log.rule,
        log.group_events,
        max(view.onset_ts - 3 * window, log.data_from),
        min(log.end + window, log.data_to + 1),
        judged_spans(log.records, log.rule.name, view.group),
    )
    timeline = _timeline(view, causes, onset.first, onset.mass.describe)
    return Story(_incident(view), timeline, _lags(view, onset, causes), series)


def assess_impact(log: Log, onset: Onset) -> tuple[UserReports, Impact, list[Event]]:
    """The user reports about the incident, who received anomalous responses, and the
    anomalous events (from the first anomalous event to resolution, inside the group)."""
    start, end = onset.start, log.end
    anomalous = [e for e in log.group_events if start <= e.ts <= end and onset.mass.weight(e.data) > 0]
    reports = user_reports(log.log, log.joined, log.in_group, start, end)
    impact = Impact(
        users=len({e.data.get("user") for e in anomalous if e.data.get("user") is not None}),
        events=len(anomalous),
        since=format_ts(start),
        reports=reports.reports,
        reporting_users=reports.users,
    )
    return reports, impact, anomalous


def suggest(log: Log, onset: Onset, found: Concentration, lags: Lags, options: Options) -> Suggestion | None:
    """A monitoring change, replayed over the same events (review.suggest_monitoring)."""
    rule = log.rule
    detection = Detection(
        rule=rule,
        group=log.view.group,
        time_to_detect_ms=lags.time_to_detect_ms,
        search_from=onset.start_step - rule.window_ms,
        start=onset.start,
        until=log.end,
        incidents=sum(1 for r in log.records if r["type"] == RecordKind.OPENED and r["rule"] == rule.name),
    )
    splits = _splitting(log.group_events, onset.start_step, found.inc_to, dimensions_of(rule))
    return suggest_monitoring(detection, merge_aliases(found.contributors), log.events, options.lateness_ms, splits)


def _shift(group: dict[str, Any], of_population: Shift, of_group: Shift) -> Shift:
    """A value's shift inside the group; the group's own values against the whole population."""
    own = {(k, _text(v)) for k, v in group.items()}

    def shift(dim: str, value: str, t: int) -> float | None:
        return (of_population if (dim, value) in own else of_group)(dim, value, t)

    return shift


def _joint(
    group: dict[str, Any], in_group: Callable[[dict[str, Any]], bool], found: Concentration
) -> Callable[[list[tuple[str, str]]], float]:
    """The score of what a change naming ``pairs`` (values inside the group) changed: where
    they meet; the group's own score when they are another name of the group — every event
    of the group carries them and no event outside it does (a template that is its feature's
    only one). A value carried outside the group too (a version every model shares) is not."""
    own = max((c.score for c in found.contributors if c.dimension in group), default=0.0)
    scope_inc = found.scope_inc

    def joint(pairs: list[tuple[str, str]]) -> float:
        getters = [(getter(tuple(d.split("."))), v) for d, v in pairs]

        def carries(e: Event) -> bool:
            return all(_text(get(e.data)) == v for get, v in getters)

        if (
            group
            and scope_inc
            and all(carries(e) for e in scope_inc)
            and all(in_group(e.data) for e in found.pop_inc if carries(e))
        ):
            return own
        return conjunction(found.mass, pairs, scope_inc, found.scope_base, *found.spans)

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


def _incident(view: IncidentView) -> Incident:
    rule, opened = view.rule, view.opened
    peak = view.resolved.peak if view.resolved else None
    if peak is None:
        values = [r.value for r in (opened, *view.escalations) if r.value is not None]
        peak = max(values) if rule.op in {">", ">="} else min(values) if values else None
    return Incident(
        incident_id=view.incident_id,
        rule=rule.name,
        rule_text=rule.text,
        category=rule.category,
        severity=str(view.severity),
        initial_severity=str(opened.severity),
        group=view.group,
        metric=rule.metric_text,
        op=rule.op,
        window_ms=rule.window_ms,
        step_ms=rule.step_ms,
        opened=opened.ts,
        onset=opened.onset,
        resolved=view.resolved.ts if view.resolved else None,
        value=opened.value,
        baseline=opened.baseline,
        threshold=opened.threshold,
        peak=peak,
        users_affected=opened.users_affected,
        events=opened.events,
        why=opened.why,
        significance=Significance.from_json(opened.significance) if opened.significance else None,
        response=view.latest.response,
        case_id=opened.case_id,
    )


def _timeline(view: IncidentView, causes: list[Cause], first: Event | None, means: str) -> tuple[Mark, ...]:
    marks: list[tuple[int, int, str, str, str | None]] = []

    def mark(ts: int, kind: str, label: str, ref: str | None) -> None:
        marks.append((ts, len(marks), kind, label, ref))

    top = causes[0] if causes else None
    if top and top.kind != "attack" and top.score >= CAUSE_MARK_SCORE:
        mark(parse_ts(top.ts), "cause", f"{top.kind}: {top.description}", top.event_id)
    if first is not None:
        mark(first.ts, "first_anomalous_event", means, first.event_id)
    if view.onset_ts != view.opened_ts:
        mark(view.onset_ts, "onset", "condition first held", view.incident_id)
    o = view.opened
    mark(view.opened_ts, "detected", f"opened at {o.severity}: {o.rule} {_value_text(o)}", view.incident_id)
    for r in view.escalations:
        mark(parse_ts(r.ts), "escalated", f"{r.previous_severity} → {r.severity} ({r.why})", view.incident_id)
    params_of = {step.command_id: step.params for step in view.commands if step.params}
    for step in view.commands:
        params = ", ".join(f"{k}={v}" for k, v in params_of.get(step.command_id, {}).items())
        label = f"{step.action}({params})" + (" [hold]" if step.hold else "")
        mark(parse_ts(step.ts), _STEP_MARKS[step.kind], label, step.command_id)
    if view.resolved:
        mark(view.resolved_ts, "resolved", view.resolved.why, view.incident_id)
    marks.sort(key=lambda m: (m[0], m[1]))
    base = first.ts if first is not None else None
    return tuple(
        Mark(format_ts(ts), kind, label, ref, ts - base if base is not None else None)
        for ts, _, kind, label, ref in marks
    )


_STEP_MARKS = {RecordKind.COMMAND: "contained", RecordKind.RENEWED: "renewed", RecordKind.RELEASE: "released"}


def _value_text(r: IncidentRecord) -> str:
    return f"value {r.value} vs limit {r.threshold}"


def _lags(view: IncidentView, onset: Onset, causes: list[Cause]) -> Lags:
    start = onset.start
    contained = [parse_ts(step.ts) for step in view.commands if step.kind is RecordKind.COMMAND]
    top = causes[0] if causes else None
    return Lags(
        time_to_detect_ms=view.opened_ts - start,
        time_to_contain_ms=min(contained) - start if contained else None,
        time_to_resolve_ms=view.resolved_ts - start if view.resolved_ts is not None else None,
        cause_to_onset_ms=start - parse_ts(top.ts) if top and top.kind != "attack" else None,
    )


def _notes(onset: Onset, changes: list[Event], data_from: int, options: Options) -> list[str]:
    notes = []
    if onset.first is None:
        notes.append("no anomalous event found before onset; times are measured from the estimated start")
    if data_from > onset.start - options.lookback_ms:
        notes.append(
            f"the events begin {format_ts(data_from)}, less than the lookback "
            f"({options.lookback_ms // 60_000}m) before the anomaly: earlier changes are not seen"
        )
    if not changes:
        notes.append("no change event in the lookback window")
    return notes
