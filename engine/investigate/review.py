"""The review: a postmortem skeleton, and a monitoring change when detection was slow or
coarse — checked by replaying the suggested rule over the same events."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

from engine.core.engine import run_events
from engine.core.events import Event, parse_ts
from engine.dsl import ast, load_rules, parse_rule
from engine.dsl.compiler import CompiledRule
from engine.dsl.printer import print_rule

SUGGEST_SCORE = 0.5  # a contributor this strong is worth its own group
MIN_WINDOW_MS = 60_000


def duration_text(ms: int | None) -> str:
    if ms is None:
        return "n/a"
    seconds = ms // 1000
    if seconds < 60:
        return f"{seconds}s"
    minutes, seconds = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes}m{seconds:02d}s" if seconds else f"{minutes}m"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m"


def suggest_monitoring(
    rule: CompiledRule,
    group: dict[str, Any],
    contributors: Sequence[dict[str, Any]],
    time_to_detect_ms: int | None,
    events: Sequence[Event],
    lateness_ms: int,
    search_from: int,
    start: int,
    until: int,
) -> dict[str, Any] | None:
    """The same rule grouped by the top contributor's dimension (coarse detection) and/or
    with half the window (slow detection); None when detection was neither."""
    by = [".".join(p) for p in rule.by]
    reasons, new_by, window_ms = [], list(by), rule.window_ms
    top = contributors[0] if contributors else None
    if top and top["score"] >= SUGGEST_SCORE and top["dimension"] not in by and top["dimension"] != "user":
        new_by.append(top["dimension"])
        reasons.append(
            f"coarse: the anomaly concentrates in {top['dimension']}={top['value']} "
            f"(share {top['share']:.0%}, lift {top['lift']:g}), which the rule does not group by"
        )
    if (
        time_to_detect_ms is not None
        and time_to_detect_ms > rule.window_ms // 2
        and rule.window_ms >= 2 * MIN_WINDOW_MS
    ):
        window_ms = rule.window_ms // 2
        reasons.append(
            f"slow: detected {duration_text(time_to_detect_ms)} after the first anomalous event, "
            f"more than half the {duration_text(rule.window_ms)} window"
        )
    if not reasons:
        return None
    parsed = parse_rule(rule.text)
    c = parsed.condition
    suffix = "_by_" + new_by[-1].replace(".", "_") if new_by != by else ""
    suffix += f"_{duration_text(window_ms)}" if window_ms != rule.window_ms else ""
    condition = dataclasses.replace(
        c,
        by=tuple(ast.FieldPath(tuple(p.split("."))) for p in new_by),
        window=_duration(window_ms) if window_ms != rule.window_ms else c.window,
    )
    text = print_rule(dataclasses.replace(parsed, name=f"{rule.name}{suffix}", condition=condition))
    rules, problems = load_rules({"suggested.rules": text})
    if not rules:  # cannot happen for a rule that compiled, but never suggest a broken rule
        return None
    return {
        "why": "; ".join(reasons),
        "rule_text": text,
        "backtest": _backtest(rules, group, events, lateness_ms, search_from, start, until),
    }


def _duration(ms: int) -> ast.Duration:
    if ms % 3_600_000 == 0:
        return ast.Duration(ms // 3_600_000, "h")
    if ms % 60_000 == 0:
        return ast.Duration(ms // 60_000, "m")
    return ast.Duration(ms // 1000, "s")


def _backtest(
    rules: tuple[CompiledRule, ...],
    group: dict[str, Any],
    events: Sequence[Event],
    lateness_ms: int,
    search_from: int,
    start: int,
    until: int,
) -> dict[str, Any]:
    """When the suggested rule would have opened an incident for this anomaly, and how many
    incidents it opens in the whole range (its noise)."""
    records = run_events(rules, events, lateness_ms)
    opened = [r for r in records if r["type"] == "incident.opened"]
    hit = next(
        (
            r
            for r in opened
            if search_from <= parse_ts(r["ts"]) <= until and all(r["group"].get(k) == v for k, v in group.items())
        ),
        None,
    )
    return {
        "opened": hit["ts"] if hit else None,
        "group": hit["group"] if hit else None,
        "time_to_detect_ms": parse_ts(hit["ts"]) - start if hit else None,
        "incidents_in_range": len(opened),
    }


def postmortem(
    incident: dict[str, Any],
    lags: dict[str, Any],
    causes: Sequence[dict[str, Any]],
    adversarial: dict[str, Any],
    impact: dict[str, Any],
    contained: bool,
    suggestion: dict[str, Any] | None,
) -> dict[str, Any]:
    ended = incident["resolved"] or "the end of the range (still open)"
    impact_text = (
        f"{impact['users']} users received anomalous responses ({impact['events']} anomalous events) "
        f"between {impact['from']} and {ended}; severity {incident['initial_severity']}"
        + (f" → {incident['severity']}" if incident["severity"] != incident["initial_severity"] else "")
    )
    candidates = [
        f"{c['kind']} {c['event_id']} at {c['ts']} (score {c['score']:.2f}): {c['description']}" for c in causes[:3]
    ]
    follow_ups = []
    top = causes[0] if causes else None
    if top and top["kind"] == "attack":
        follow_ups.append(
            f"Block or rate-limit the attacking users ({top['description']}); review the "
            "prompt-injection defences of the surfaces they used"
        )
    elif top:
        follow_ups.append(
            f"Confirm {top['kind']} {top['event_id']} ({top['description']}) as the cause; "
            "revert or fix it, and gate such changes on a canary"
        )
    else:
        follow_ups.append(
            "No change event precedes the anomaly: check changes that are not published as "
            "change events (provider-side model changes, upstream data)"
        )
    if adversarial.get("suspected") and (not top or top["kind"] != "attack"):
        follow_ups.append(f"Adversarial signs: {adversarial['why']}")
    if not contained:
        follow_ups.append(
            "The rule has no `contain` action: decide on one (fallback, disable_feature, circuit breaker)"
        )
    if not incident["resolved"]:
        follow_ups.append("The incident is still open at the end of the range: confirm the fix before closing")
    follow_ups.append(
        f"Add this incident's events to the rule's tests (rules/*.test.toml) so `{incident['rule']}` keeps catching it"
    )
    if suggestion:
        follow_ups.append("Review the suggested monitoring change below")
    return {
        "impact": impact_text,
        "time_to_detect": duration_text(lags["time_to_detect_ms"]),
        "time_to_contain": duration_text(lags["time_to_contain_ms"]) if contained else "not contained by the rule",
        "cause_candidates": candidates,
        "follow_ups": follow_ups,
        "monitoring_suggestion": suggestion,
    }

