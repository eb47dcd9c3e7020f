"""The review: a postmortem skeleton (`postmortem` → `Review`), and a monitoring change when
detection was slow or coarse (`suggest_monitoring` → `Suggestion`) — checked by replaying the
suggested rule over the same events."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from firebreak.core.engine import run_events
from firebreak.core.events import Event, format_duration, parse_ts
from firebreak.dsl import ast, load_rules, parse_rule
from firebreak.dsl.compiler import CompiledRule
from firebreak.dsl.printer import print_rule
from firebreak.investigate.model import Adversarial, Backtest, Cause, Contributor, Incident, Lags, Review, Suggestion
from firebreak.records import RecordKind

SUGGEST_SCORE = 0.5  # a contributor this strong is worth its own group
MIN_WINDOW_MS = 60_000
SLOW_FRACTION = 4  # detection later than window / 4 after the first anomalous event is slow


def duration_text(ms: int | None) -> str:
    return "n/a" if ms is None else format_duration(ms)


@dataclass(frozen=True)
class Detection:
    """How the rule detected this incident, and where a variant's replay must catch it:
    an incident of the variant opened in [``search_from``, ``until``] in the ``group``;
    ``start``: the first anomalous event (time to detect is measured from it);
    ``incidents``: how many the rule opened over the whole range."""

    rule: CompiledRule
    group: Mapping[str, Any]
    time_to_detect_ms: int | None
    search_from: int
    start: int
    until: int
    incidents: int


def suggest_monitoring(
    detection: Detection,
    contributors: Sequence[Contributor],
    events: Sequence[Event],
    lateness_ms: int,
    splits: frozenset[str] | None = None,
) -> Suggestion | None:
    """A variant of the rule that would have done better, checked by replaying it:

    - **coarse** detection (a strong contributor — score at least 0.5, among the top 5 —
      whose dimension is not among the rule's `by` and takes several values inside the
      incident's group, ``splits``: grouping by it would isolate the anomaly): the same rule,
      also grouped by that dimension — kept when the replay catches the incident in that group
      no later than the rule did;
    - **slow** detection (detected more than a quarter window after the first anomalous
      event, for a rule whose metric does not grow with the window: rates, averages,
      percentiles, or any relative rule): half the window — kept only when the replay
      detects earlier.

    A variant that opens more than twice as many incidents over the range as the rule did
    (plus 2) is rejected as too noisy. None when nothing applies or no variant survives its
    replay."""
    rule, ttd = detection.rule, detection.time_to_detect_ms
    by = [".".join(p) for p in rule.by]
    # Coarse: the strongest contributors the rule does not group by (a value new in the
    # incident — a new model version — cannot fire a relative rule: it has no baseline; the
    # replay rejects it and the next candidate is tried).
    finer = [c for c in contributors[:5] if c.score >= SUGGEST_SCORE and c.dimension not in by]
    finer = [c for c in finer if c.dimension != "user" and (splits is None or c.dimension in splits)][:3]
    window_free = rule.relative or not rule.metric.grows_with_window
    slow = (
        ttd is not None
        and ttd > rule.window_ms // SLOW_FRACTION
        and rule.window_ms >= 2 * MIN_WINDOW_MS
        and window_free
    )
    plans = [(c, slow) for c in finer] + [(c, False) for c in finer if slow] + ([(None, True)] if slow else [])
    for top, use_slow in plans:
        new_by = [*by, top.dimension] if top else by
        window_ms = rule.window_ms // 2 if use_slow else rule.window_ms
        rules, text = _variant(rule, new_by, window_ms)
        expect = {**detection.group, top.dimension: top.value} if top else detection.group
        result = _backtest(rules, expect, events, lateness_ms, detection)
        if result.opened is None or result.incidents_in_range > 2 * detection.incidents + 2:
            continue
        later = ttd is not None and result.time_to_detect_ms > ttd
        if later or (use_slow and (ttd is None or result.time_to_detect_ms == ttd)):
            continue
        reasons = []
        if top:
            reasons.append(
                f"coarse: the anomaly concentrates in {top.dimension}={top.value} "
                f"(share {top.share:.0%}, lift {top.lift:g}), which the rule does not group by"
            )
        if use_slow:
            reasons.append(
                f"slow: detected {duration_text(ttd)} after the first anomalous event, "
                f"more than a quarter of the {duration_text(rule.window_ms)} window"
            )
        return Suggestion(why="; ".join(reasons), rule_text=text, backtest=result)
    return None


def _variant(rule: CompiledRule, by: list[str], window_ms: int) -> tuple[tuple[CompiledRule, ...], str]:
    parsed = parse_rule(rule.text)
    c = parsed.condition
    suffix = "_by_" + by[-1].replace(".", "_") if len(by) > len(rule.by) else ""
    suffix += f"_{duration_text(window_ms)}" if window_ms != rule.window_ms else ""
    condition = dataclasses.replace(
        c,
        by=tuple(ast.FieldPath(tuple(p.split("."))) for p in by),
        window=_duration(window_ms) if window_ms != rule.window_ms else c.window,
    )
    text = print_rule(dataclasses.replace(parsed, name=f"{rule.name}{suffix}", condition=condition))
    rules, problems = load_rules({"suggested.rules": text})
    if not rules:  # a variant of a rule that compiled compiles; never suggest a broken one
        raise ValueError(f"suggested rule does not compile: {problems}")
    return rules, text


def _duration(ms: int) -> ast.Duration:
    if ms % 3_600_000 == 0:
        return ast.Duration(ms // 3_600_000, "h")
    if ms % 60_000 == 0:
        return ast.Duration(ms // 60_000, "m")
    return ast.Duration(ms // 1000, "s")


def _backtest(
    rules: tuple[CompiledRule, ...],
    group: Mapping[str, Any],
    events: Sequence[Event],
    lateness_ms: int,
    detection: Detection,
) -> Backtest:
    """When the suggested rule would have opened an incident for this anomaly, and how many
    incidents it opens in the whole range (its noise)."""
    records = run_events(rules, events, lateness_ms)
    opened = [r for r in records if r["type"] == RecordKind.OPENED]
    hit = next(
        (
            r
            for r in opened
            if detection.search_from <= parse_ts(r["ts"]) <= detection.until
            and all(r["group"].get(k) == v for k, v in group.items())
        ),
        None,
    )
    return Backtest(
        opened=hit["ts"] if hit else None,
        group=hit["group"] if hit else None,
        time_to_detect_ms=parse_ts(hit["ts"]) - detection.start if hit else None,
        incidents_in_range=len(opened),
        rule_incidents_in_range=detection.incidents,
    )


@dataclass(frozen=True)
class Impact:
    """Who received anomalous responses, from ``since`` (the first anomalous event) on; and
    the user reports about the incident."""

    users: int
    events: int
    since: str
    reports: int
    reporting_users: int


def postmortem(
    incident: Incident,
    lags: Lags,
    causes: Sequence[Cause],
    adversarial: Adversarial,
    impact: Impact,
    contained: bool,
    suggestion: Suggestion | None,
) -> Review:
    ended = incident.resolved or "the end of the range (still open)"
    impact_text = (
        f"{impact.users} users received anomalous responses ({impact.events} anomalous events) "
        f"between {impact.since} and {ended}; severity {incident.initial_severity}"
        + (f" → {incident.severity}" if incident.severity != incident.initial_severity else "")
    )
    if impact.reports:
        impact_text += f"; {impact.reporting_users} users reported answers ({impact.reports} user reports)"
    candidates = [f"{c.kind} {c.event_id} at {c.ts} (score {c.score:.2f}): {c.description}" for c in causes[:3]]
    follow_ups = []
    top = causes[0] if causes else None
    if top and top.kind == "attack":
        follow_ups.append(
            f"Block or rate-limit the attacking users ({top.description}); review the "
            "prompt-injection defences of the surfaces they used"
        )
    elif top:
        follow_ups.append(
            f"Confirm {top.kind} {top.event_id} ({top.description}) as the cause; "
            "revert or fix it, and gate such changes on a canary"
        )
    else:
        follow_ups.append(
            "No change event precedes the anomaly: check changes that are not published as "
            "change events (provider-side model changes, upstream data)"
        )
    if adversarial.suspected and (not top or top.kind != "attack"):
        follow_ups.append(f"Adversarial signs: {adversarial.why}")
    if not contained:
        follow_ups.append(
            "The rule has no `contain` action: decide on one (fallback, disable_feature, circuit breaker)"
        )
    if not incident.resolved:
        follow_ups.append("The incident is still open at the end of the range: confirm the fix before closing")
    follow_ups.append(
        f"Add this incident's events to the rule's tests (rules/*.test.toml) so `{incident.rule}` keeps catching it"
    )
    if suggestion:
        follow_ups.append("Review the suggested monitoring change below")
    return Review(
        impact=impact_text,
        time_to_detect=duration_text(lags.time_to_detect_ms),
        time_to_contain=duration_text(lags.time_to_contain_ms) if contained else "not contained by the rule",
        cause_candidates=tuple(candidates),
        follow_ups=tuple(follow_ups),
        monitoring_suggestion=suggestion,
    )
