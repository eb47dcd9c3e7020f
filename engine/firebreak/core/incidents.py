"""Incident lifecycle of one (rule, group): inactive → pending → firing → resolved.

`evaluate_group` is called at every evaluation step with the window's summary
and the baseline, and returns the records that step produces. It is the only
place that decides when an incident opens, escalates, renews its containment
and resolves. See docs/detection.md for the semantics in prose.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass, field
from enum import StrEnum
from typing import TYPE_CHECKING, Any, NamedTuple

from firebreak.core.events import EventType, format_ts
from firebreak.core.significance import mean_p_value, mean_spread, p_value, two_sample_p_value, two_sample_rate_p_value
from firebreak.core.window import Summary, evidence_scope
from firebreak.dsl.compiler import DEFAULT_CONTAIN_TTL_MS, CompiledRule
from firebreak.dsl.metrics import SCALE, SignificanceTest
from firebreak.durations import format_duration
from firebreak.records import ContainmentCommand, IncidentRecord, RecordKind, Severity

if TYPE_CHECKING:
    from firebreak.core.flapping import Closed, Cooldowns


class Status(StrEnum):
    """Where a (rule, group) is in its lifecycle (a StrEnum: snapshots hold the plain word)."""

    INACTIVE = "inactive"
    PENDING = "pending"  # the condition holds, waiting out `for`
    FIRING = "firing"  # an incident is open


INACTIVE, PENDING, FIRING = Status.INACTIVE, Status.PENDING, Status.FIRING
URGENCY_GROWTH = 1.10  # "still worsening": ≥10% further past the limit than one window earlier
URGENCY_CHECKS = 2  # ... at this many window-spaced checks in a row
SENSITIVE_CATEGORIES = {"data_leakage": Severity.SEV2}  # category → least severe level allowed
_OP_WORDS = {">": "above", ">=": "at or above", "<": "below", "<=": "at or below"}
_OP_BACK = {">": "back at or under", ">=": "back under", "<": "back at or over", "<=": "back over"}


@dataclass(slots=True)
class Incident:
    incident_id: str
    opened_at: int
    onset: int
    severity: Severity
    peak: float
    false_since: int | None = None
    check_at: int = 0
    check_value: float = 0.0
    worsening: int = 0
    urgency_done: bool = False
    escalated: list[str] = field(default_factory=list)  # escalation keys already applied
    commands: list[ActiveCommand] = field(default_factory=list)
    reopened: int = 0  # times it reopened within its cool-down (core/flapping.py)

    def to_json(self) -> dict[str, Any]:
        return {
            "incident_id": self.incident_id,
            "opened_at": self.opened_at,
            "onset": self.onset,
            "severity": int(self.severity),
            "peak": self.peak,
            "false_since": self.false_since,
            "check_at": self.check_at,
            "check_value": self.check_value,
            "worsening": self.worsening,
            "urgency_done": self.urgency_done,
            "escalated": list(self.escalated),
            "commands": [c.to_json() for c in self.commands],
            "reopened": self.reopened,
        }

    @staticmethod
    def from_json(data: dict[str, Any]) -> Incident:
        commands = [ActiveCommand.from_json(c) for c in data["commands"]]
        return Incident(
            **{
                **data,
                "severity": Severity(data["severity"]),
                "escalated": list(data["escalated"]),
                "commands": commands,
            }
        )


@dataclass(slots=True)
class ActiveCommand:
    """A containment command of an open incident, and when it expires (None: held)."""

    command: ContainmentCommand
    ttl: int | None
    expires: int | None

    def to_json(self) -> dict[str, Any]:
        return {"command": self.command.to_json(), "ttl": self.ttl, "expires": self.expires}

    @staticmethod
    def from_json(data: dict[str, Any]) -> ActiveCommand:
        return ActiveCommand(ContainmentCommand.from_json(data["command"]), data["ttl"], data["expires"])


@dataclass(slots=True)
class Lifecycle:
    status: Status = INACTIVE
    onset: int | None = None
    frozen_baseline: float | None = None
    incident: Incident | None = None

    def to_json(self) -> dict[str, Any]:
        """The snapshot form (engine snapshots and worker checkpoints)."""
        return {
            "status": self.status.value,
            "onset": self.onset,
            "frozen_baseline": self.frozen_baseline,
            "incident": self.incident.to_json() if self.incident is not None else None,
        }

    @staticmethod
    def from_json(data: dict[str, Any]) -> Lifecycle:
        incident = Incident.from_json(data["incident"]) if data["incident"] is not None else None
        return Lifecycle(Status(data["status"]), data["onset"], data["frozen_baseline"], incident)


class Counts(NamedTuple):
    """What a warm-up's shorter history holds, for the two-sample test of a rule `with C%
    confidence` (`reference_p_value`): ``observed`` events — flagged ones for a
    rate or count(FLAG), all for count() — over ``exposure`` (its events for a rate, its
    length in ms for a count), and ``least``, the count the test takes it as at the least:
    one per window length of its span, as the baseline's value is floored
    (`MetricKind.scale_baseline`), so an empty reference is not read as a rate of zero."""

    observed: int
    exposure: float
    least: int


@dataclass(frozen=True, slots=True)
class Reading:
    """What one evaluation measured. ``p_value``: rules `with C% confidence`, when the
    metric is past the limit (otherwise there is nothing to test). ``reference``: the
    counts of the warm-up's history the test compared the window with (None: tested against
    the limit as a known value — an absolute threshold, a whole span, the population, a
    prior, or the baseline frozen at an onset)."""

    value: float | None
    limit: float | None
    baseline: float | None
    holds: bool
    window: Summary
    p_value: float | None = None
    reference: Counts | None = None


def read(
    rule: CompiledRule,
    window: Summary,
    baseline: float | None,
    population: tuple[int, int] | None = None,
    reference: Counts | None = None,
) -> Reading:
    """``population``: (events, flagged events) of all the rule's groups in the window, for
    `Kx population` (the group's own are taken out: it is compared with the rest).
    ``reference``: the counts behind ``baseline`` when it is a warm-up's history
    (`span_reference`).

    `with C% confidence` against a warm-up's history is a two-sample test (the window's
    counts against the history's: `reference_p_value`); against anything else, a one-sample
    test against the limit (`significance.p_value`). A mean (`avg`) is tested by Student's t
    against the limit, from the window's own spread (`significance.mean_p_value`)."""
    value = rule.metric.value(window)
    if rule.population is not None:
        baseline = population_rate(window, population)
        limit = rule.population * baseline if baseline is not None else None
    else:
        limit = rule.factor * baseline if rule.factor is not None and baseline is not None else rule.threshold
    enough = not rule.needs_sample or rule.metric.sample_size(window) >= rule.min_events
    if rule.min_flagged and window.hits < rule.min_flagged:
        enough = False
    holds = value is not None and limit is not None and enough and rule.compare(value, limit)
    if not holds or rule.confidence is None:
        return Reading(value, limit, baseline, holds, window)
    if rule.metric.test is SignificanceTest.T:  # a mean: the window's values against the limit
        p = mean_p_value(rule.op, window.vn, window.total, window.sq, limit, SCALE)
        return Reading(value, limit, baseline, p <= rule.alpha, window, p)
    k, n = rule.metric.significance_counts(window)
    if reference is None:
        p = p_value(rule.metric.test, rule.op, k, n, rule.metric.reference(limit))
    else:
        p = reference_p_value(rule, k, n, reference)
    return Reading(value, limit, baseline, p <= rule.alpha, window, p, reference)


def reference_p_value(rule: CompiledRule, k: int, n: int, reference: Counts) -> float:
    """The two-sample test of a window (``k`` counted of ``n`` events) against a warm-up's
    history: for a rate, flagged of events against flagged of events (Fisher's noncentral
    hypergeometric); for a count, events over the window's length against events over the
    reference's (the conditional test for two Poisson rates)."""
    factor = rule.factor
    observed = max(reference.observed, reference.least)
    if rule.metric.rate:
        return two_sample_rate_p_value(rule.op, k, n, observed, int(reference.exposure), factor)
    return two_sample_p_value(rule.op, k, rule.window_ms, observed, reference.exposure, factor)


def reference_expected(rule: CompiledRule, k: int, n: int, reference: Counts) -> float:
    """What a two-sample test expects of the window at the limit: n × K × the reference's
    rate (at most n) for a rate; the window's share of both counts at the limit for a count."""
    factor = rule.factor
    observed = max(reference.observed, reference.least)
    if rule.metric.rate:
        return n * min(1.0, factor * observed / reference.exposure)
    share = factor * rule.window_ms / (factor * rule.window_ms + reference.exposure)
    return (k + observed) * share


def population_rate(window: Summary, population: tuple[int, int] | None) -> float | None:
    """The rate of the rest of the population (all groups but this one) in the window; at
    least one flagged event in it, like a zero baseline. None when there is no rest."""
    if population is None:
        return None
    rest_n, rest_hits = population[0] - window.n, population[1] - window.hits
    if rest_n <= 0:
        return None
    return max(rest_hits, 1) / rest_n


def evaluate_group(
    rule: CompiledRule,
    group: dict[str, Any],
    state: Lifecycle,
    at: int,
    reading: Reading,
    cooldowns: Cooldowns | None = None,
) -> list[dict[str, Any]]:
    """``cooldowns``: the incidents resolved within their cool-down (core/flapping.py), which
    reopen instead of a new incident opening; None: every opening is a new incident."""
    if state.status == INACTIVE:
        if not reading.holds:
            return []
        state.onset = at
        state.frozen_baseline = reading.baseline
        if rule.for_ms > 0:
            state.status = PENDING
            return []
        return _open(rule, group, state, at, reading, cooldowns)
    if state.status == PENDING:
        if not reading.holds:
            state.status, state.onset, state.frozen_baseline = INACTIVE, None, None
            return []
        if at - state.onset >= rule.for_ms:
            return _open(rule, group, state, at, reading, cooldowns)
        return []
    return _firing(rule, group, state, at, reading, cooldowns)


def _open(
    rule: CompiledRule, group: dict, state: Lifecycle, at: int, r: Reading, cooldowns: Cooldowns | None = None
) -> list[dict]:
    closed = cooldowns.take(rule, group, at) if cooldowns is not None else None
    if closed is not None:
        return _reopen(rule, group, state, at, r, closed)
    group_text = canonical_group(group)
    incident_id = "inc_" + _digest(f"{rule.name}|{group_text}|{at}")
    incident = Incident(incident_id, at, state.onset, rule.severity, r.value, check_at=at, check_value=r.value)
    state.status, state.incident = FIRING, incident
    records = [_incident_record(RecordKind.OPENED, rule, group, incident, at, r, _why_opened(rule, group, r))]
    for spec in rule.contains:
        records.append(_issue(rule, group, incident, at, spec, f"{incident_id}|{spec.action}"))
    records.extend(_classify(rule, group, incident, at, r))
    return records


def _issue(rule: CompiledRule, group: dict, incident: Incident, at: int, spec: Any, seed: str) -> dict:
    """A containment command of ``spec`` for the incident (``seed``: what its id is made of)."""
    ttl = spec.ttl_ms if spec.ttl_ms is not None else (None if spec.hold else DEFAULT_CONTAIN_TTL_MS)
    command = ContainmentCommand(
        "cmd_" + _digest(seed),
        incident.incident_id,
        rule.name,
        spec.action,
        group,
        dict(spec.params),
        format_ts(at),
        format_ts(at + ttl) if ttl is not None else None,
        spec.hold,
    )
    incident.commands.append(ActiveCommand(command, ttl, at + ttl if ttl else None))
    return command.to_json()


def _reopen(rule: CompiledRule, group: dict, state: Lifecycle, at: int, r: Reading, closed: Closed) -> list[dict]:
    """The incident resolved at ``closed.resolved_at`` opens again (flapping, core/flapping.py):
    same id, severity and escalations; containment that was released is issued again (new
    command ids), a held command still in force stays as it is."""
    incident = closed.incident
    incident.false_since = None
    incident.check_at, incident.check_value, incident.worsening = at, r.value, 0
    incident.reopened += 1
    if r.value is not None and _further(rule, r.value, incident.peak):
        incident.peak = r.value
    state.status, state.incident = FIRING, incident
    why = (
        f"the same incident reopens: {format_duration(at - closed.resolved_at)} after it resolved at "
        f"{format_ts(closed.resolved_at)}, within the {format_duration(rule.reopen_within_ms)} cool-down; "
        + _why_opened(rule, group, r)
    )
    records = [
        _incident_record(
            RecordKind.REOPENED,
            rule,
            group,
            incident,
            at,
            r,
            why,
            opened_at=format_ts(incident.opened_at),
            resolved_at=format_ts(closed.resolved_at),
        )
    ]
    incident.commands = [e for e in incident.commands if e.command.hold and (e.expires is None or e.expires > at)]
    in_force = {e.command.action for e in incident.commands}
    for spec in rule.contains:
        if spec.action not in in_force:
            seed = f"{incident.incident_id}|{spec.action}|reopened {incident.reopened}"
            records.append(_issue(rule, group, incident, at, spec, seed))
    records.extend(_classify(rule, group, incident, at, r))
    return records


def _firing(
    rule: CompiledRule, group: dict, state: Lifecycle, at: int, r: Reading, cooldowns: Cooldowns | None = None
) -> list[dict]:
    incident = state.incident
    records: list[dict] = []
    if r.holds:
        incident.false_since = None
        if _further(rule, r.value, incident.peak):
            incident.peak = r.value
        records.extend(_classify(rule, group, incident, at, r))
    elif incident.false_since is None:
        incident.false_since = at
    if incident.false_since is not None and at - incident.false_since >= rule.window_ms:
        records += _resolve(rule, group, state, at, r)
        if cooldowns is not None:
            cooldowns.remember(rule, group, incident, at)
        return records
    records.extend(_renew(incident, at))
    return records


def _classify(rule: CompiledRule, group: dict, incident: Incident, at: int, r: Reading) -> list[dict]:
    """Escalations by sensitivity, impact and urgency; each raises severity and is a record."""
    raises: list[tuple[str, Severity, str]] = []
    # The floor is for evidence of a leak (classifiers' flags). A report rule counts people's
    # word, unverified: its own severity stands (an uncorroborated report is a ticket).
    floor = SENSITIVE_CATEGORIES.get(rule.category) if rule.source is not EventType.REPORT else None
    if floor is not None and incident.severity > floor and "sensitivity" not in incident.escalated:
        label = rule.category.replace("_", " ")
        raises.append(("sensitivity", floor, f"sensitivity: {label} is never below {floor}"))
    users = r.window.users.estimate() if r.window.users is not None else 0
    measures = {"users": users, "events": rule.metric.impact_events(r.window)}
    for esc in rule.escalations:
        key = f"impact:{int(esc.severity)}:{esc.measure}{esc.op}{esc.value:g}"  # the number: the form snapshots hold
        if key in incident.escalated:
            continue
        actual = measures[esc.measure]
        if _COMPARE[esc.op](actual, esc.value):
            noun = "users affected" if esc.measure == "users" else "events"
            raises.append((key, esc.severity, f"impact: {actual} {noun} {esc.op} {esc.value:g}"))
    if not incident.urgency_done and r.value is not None and at - incident.check_at >= rule.window_ms:
        worse = _further(rule, r.value, incident.check_value, URGENCY_GROWTH)
        incident.worsening = incident.worsening + 1 if worse else 0
        previous = incident.check_value
        incident.check_at, incident.check_value = at, r.value
        if incident.worsening >= URGENCY_CHECKS:
            incident.urgency_done = True
            raises.append(
                (
                    "urgency",
                    Severity(max(1, incident.severity - 1)),
                    f"urgency: {rule.metric_text} still worsening ({_num(previous)} → {_num(r.value)} "
                    f"a window later, {URGENCY_CHECKS} windows in a row)",
                )
            )
    records = []
    for key, level, why in raises:
        incident.escalated.append(key)
        if level >= incident.severity:
            continue
        previous_severity = incident.severity
        incident.severity = level
        records.append(
            _incident_record(
                RecordKind.ESCALATED,
                rule,
                group,
                incident,
                at,
                r,
                why,
                previous_severity=previous_severity,
                reason=key.split(":")[0],
            )
        )
    return records


def _renew(incident: Incident, at: int) -> list[dict]:
    """A command whose expiry is less than half its TTL away is renewed for another TTL."""
    records = []
    for entry in incident.commands:
        ttl, expires = entry.ttl, entry.expires
        if ttl and expires - at <= ttl // 2:
            entry.expires = at + ttl
            records.append(entry.command.renewed(format_ts(at), format_ts(at + ttl)))
    return records


def close_for_reload(rule: CompiledRule, group: dict, state: Lifecycle, at: int, change: str) -> list[dict]:
    """Resolve the open incident of a rule that was removed or changed by a rules reload."""
    if state.status != FIRING:
        return []
    reading = Reading(None, None, state.frozen_baseline, False, Summary(users=None, evidence=[]))
    why = f"rule `{rule.name}` was {change} by a rules reload; its incident is closed and its containment released"
    return _resolve(rule, group, state, at, reading, why)


def _resolve(rule: CompiledRule, group: dict, state: Lifecycle, at: int, r: Reading, why: str = "") -> list[dict]:
    incident = state.incident
    why = why or (
        f"{rule.metric_text} has been {_OP_BACK[rule.op]} the limit since {format_ts(incident.false_since)} "
        f"({format_duration(at - incident.false_since)}); it peaked at {_num(incident.peak)}"
    )
    held = [e.command.command_id for e in incident.commands if e.command.hold]
    records = [
        _incident_record(
            RecordKind.RESOLVED,
            rule,
            group,
            incident,
            at,
            r,
            why,
            opened_at=format_ts(incident.opened_at),
            duration_s=(at - incident.opened_at) // 1000,
            peak=_num(incident.peak),
            held_commands=held,
        )
    ]
    records += [e.command.released(format_ts(at)) for e in incident.commands if not e.command.hold]
    state.status, state.onset, state.frozen_baseline, state.incident = INACTIVE, None, None, None
    return records


# ---- records ----------------------------------------------------------------------


def _incident_record(
    kind: RecordKind, rule: CompiledRule, group: dict, incident: Incident, at: int, r: Reading, why: str, **extra: Any
) -> dict[str, Any]:
    w = r.window
    return IncidentRecord(
        kind,
        incident.incident_id,
        rule.name,
        rule.category,
        incident.severity,
        group,
        format_ts(at),
        format_ts(incident.onset),
        {"start": format_ts(at - rule.window_ms), "end": format_ts(at)},
        _num(r.value),
        _num(r.baseline) if rule.reference_kind != "absolute" else None,
        _num(r.limit),
        rule.metric.impact_events(w),
        rule.metric.sample_size(w),
        w.users.estimate() if w.users is not None else 0,
        [e[1] for e in (w.evidence or ())],
        list(rule.notify),
        why,
        # who responds, and how often they update, at this severity (nobody, once resolved)
        response=rule.response(incident.severity).to_json() if kind is not RecordKind.RESOLVED else None,
        significance=significance(rule, r) if rule.confidence is not None else None,
        # where its evidence concentrates, for the case dimensions its group lacks (core/cases.py)
        evidence_scope=evidence_scope(rule.scope_dimensions, w.evidence or ()) if rule.scope_dimensions else None,
        **extra,
    ).to_json()


def significance(rule: CompiledRule, r: Reading) -> dict[str, Any]:
    """The evidence behind a rule `with C% confidence`: observed against expected under the
    reference, and the p-value (null when the metric was not past the limit)."""
    if rule.metric.test is SignificanceTest.T:
        w = r.window
        return {
            "test": "t",
            "confidence": rule.confidence,
            "reference": rule.reference_kind,
            "observed": _num(r.value),  # the window's mean
            "trials": w.vn,  # its values
            "expected": _num(r.limit),  # the mean at the limit
            "p_value": _p(r.p_value),
            "against": None,
            "sd": _num(window_sd(w)),
        }
    k, n = rule.metric.significance_counts(r.window)
    binomial = rule.metric.test is SignificanceTest.BINOMIAL
    against = None
    if r.reference is not None:  # two-sample: the history's counts, and what the limit expects
        c = r.reference
        expected = reference_expected(rule, k, n, c)
        against = {
            "observed": c.observed,
            "least": c.least,
            "trials": int(c.exposure) if rule.metric.rate else None,
            "span_ms": None if rule.metric.rate else int(c.exposure),
        }
    else:
        expected = rule.metric.expected(r.limit, n) if r.limit is not None else None
    return {
        "test": "two_sample" if against is not None else str(rule.metric.test),
        "confidence": rule.confidence,
        "reference": rule.reference_kind,
        "observed": k,
        "trials": n if binomial else None,
        "expected": _num(expected),
        "p_value": _p(r.p_value),
        "against": against,
    }


def window_sd(w: Summary) -> float | None:
    """The sample standard deviation of a window's values, from its exact sums; None with fewer
    than two values or squares past their limit."""
    spread = mean_spread(w.vn, w.total, w.sq)
    return None if spread is None else math.sqrt(spread / (w.vn * (w.vn - 1))) / SCALE


def _p(p: float | None) -> float | None:
    """A p-value to 3 significant digits (it is evidence, not arithmetic)."""
    return None if p is None else float(f"{p:.3g}")


def _why_opened(rule: CompiledRule, group: dict, r: Reading) -> str:
    where = f" for {_group_text(group)}" if group else ""
    if rule.population is not None:
        limit = f"{_num(rule.population)}x the rest of the population's {_num(r.baseline)} (limit {_num(r.limit)})"
    elif rule.factor is not None:
        limit = f"{_num(rule.factor)}x its baseline of {_num(r.baseline)} (limit {_num(r.limit)})"
    else:
        limit = f"{_num(r.limit)}"
    if rule.confidence is not None and rule.metric.test is SignificanceTest.T:
        evidence = significance(rule, r)
        limit += (
            f" with {_num(rule.confidence * 100)}% confidence (t-test of {evidence['trials']} values, "
            f"sd {evidence['sd']}, p = {evidence['p_value']:.3g})"
        )
    elif rule.confidence is not None:
        evidence = significance(rule, r)
        of = f" of {evidence['trials']}" if evidence["trials"] is not None else ""
        against = ""
        if (ref := evidence["against"]) is not None:
            span = f" of {ref['trials']}" if ref["trials"] is not None else f" in {format_duration(ref['span_ms'])}"
            against = f" against {ref['observed']}{span} in the reference"
        limit += (
            f" with {_num(rule.confidence * 100)}% confidence ({evidence['observed']}{of} observed{against}, "
            f"{evidence['expected']} expected at the limit, p = {evidence['p_value']:.3g})"
        )
    users = r.window.users.estimate() if r.window.users is not None else 0
    return (
        f"{rule.metric_text} was {_num(r.value)} over the last {format_duration(rule.window_ms)}{where}, "
        f"{_OP_WORDS[rule.op]} {limit}; {rule.metric.impact_events(r.window)} events, {users} users affected"
    )


def _group_text(group: dict) -> str:
    return ", ".join(f"{k}={v}" for k, v in group.items())


def canonical_group(group: dict) -> str:
    return "|".join(f"{k}={v!r}" for k, v in group.items())


def _num(value: float | None) -> float | None:
    if value is None:
        return None
    rounded = round(value, 6)
    return int(rounded) if rounded == int(rounded) and abs(rounded) < 2**53 else rounded


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _further(rule: CompiledRule, value: float, than: float, factor: float = 1.0) -> bool:
    """Whether ``value`` is further past the limit, in the rule's direction, than ``than``×factor."""
    if rule.op in {">", ">="}:
        return value > than * factor if than > 0 else value > than
    return value * factor < than if than > 0 else value < than


_COMPARE = {">": lambda a, b: a > b, ">=": lambda a, b: a >= b, "<": lambda a, b: a < b, "<=": lambda a, b: a <= b}
