"""The investigation report as typed values: what each pass returns and what the renderers read.

Frozen dataclasses, one per part of the report (shape: docs/investigate.md, "The JSON shape").
`to_json()` gives the JSON-ready dict — its keys are the fields, in the order declared here, so
the order of the fields *is* the wire format; `Report.from_json` reads such a dict back (the
docs examples are rendered from `investigation.json`): a missing part takes its default, so a
partial or hand-written report still renders. Times are kept as the report prints them
(RFC 3339 text), durations as milliseconds. Pure data: no I/O, nothing computed here.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from functools import cache
from typing import Any, TypeVar

T = TypeVar("T", bound="Part")
Json = dict[str, Any]


class Part:
    """What every part of the report shares: its JSON (fields in order) and reading it back."""

    __slots__ = ()

    def to_json(self) -> Json:
        return {f.name: _to_json(getattr(self, f.name)) for f in dataclasses.fields(self)}  # type: ignore[arg-type]

    @classmethod
    def from_json(cls: type[T], data: Any) -> T:
        """``data``: a dict as `to_json` writes it; missing keys take the field's default,
        parts that are not dicts (or lists) are read as empty."""
        data = data if isinstance(data, dict) else {}
        hints = _hints(cls)
        return cls(
            **{
                f.name: _from_json(hints[f.name], data[f.name])
                for f in dataclasses.fields(cls)  # type: ignore[arg-type]
                if f.name in data
            }
        )


# --- the incident and the range ----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Significance(Part):
    """A rule `with C% confidence`: the evidence its opening record carries."""

    test: str = ""  # binomial | poisson | two_sample | t (a mean)
    confidence: float | None = None
    reference: str = ""  # absolute | baseline | population
    observed: float | None = None  # flagged events, or events; t: the window's mean
    trials: int | None = None  # binomial: the events the flagged ones are counted among; t: the values
    expected: float | None = None  # at the limit
    p_value: float | None = None  # null when the metric was not past the limit
    against: Against | None = None  # two_sample: the reference's counts
    sd: float | None = None  # t: the window's values' standard deviation


@dataclass(frozen=True, slots=True)
class Against(Part):
    """The counts of the measured reference a two-sample test compared the window with."""

    observed: int | None = None  # flagged events, or events
    least: int | None = None  # what the test takes it as at the least (one per window length)
    trials: int | None = None  # a rate: the reference's events
    span_ms: int | None = None  # a count: the reference's length


@dataclass(frozen=True, slots=True)
class Incident(Part):
    """The incident as the engine's records tell it (`group` and `response` are the records'
    own objects)."""

    incident_id: str = ""
    rule: str = ""
    rule_text: str = ""
    category: str = ""
    severity: str | None = None  # final
    initial_severity: str | None = None
    group: dict[str, Any] = field(default_factory=dict)
    metric: str = ""
    op: str | None = None
    window_ms: int | None = None
    step_ms: int | None = None
    opened: str | None = None
    onset: str | None = None
    resolved: str | None = None
    value: float | None = None
    baseline: float | None = None
    threshold: float | None = None
    peak: float | None = None
    users_affected: int | None = None
    events: int | None = None
    why: str | None = None
    significance: Significance | None = None
    response: dict[str, Any] | None = None
    case_id: str | None = None  # the case it belongs to, when cases were formed (docs/response.md#cases)


@dataclass(frozen=True, slots=True)
class Range(Part):
    """The events read: their time range and counts, and where they came from."""

    since: str | None = None
    until: str | None = None
    events: int | None = None  # inference events
    changes: int | None = None
    reports: int = 0  # user reports
    source: str = ""


@dataclass(frozen=True, slots=True)
class Anomaly(Part):
    """What anomalous means for the rule, and when the anomaly began (the onset pass)."""

    means: str = ""
    estimated_start: str | None = None
    shape: str = "step"  # or "slope"
    first_event: str | None = None


# --- the story ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Mark(Part):
    """One item of the timeline; ``lag_ms`` since the first anomalous event."""

    ts: str | None = None
    kind: str = ""
    label: str = ""
    ref: str | None = None
    lag_ms: int | None = None


@dataclass(frozen=True, slots=True)
class Lags(Part):
    time_to_detect_ms: int | None = None
    time_to_contain_ms: int | None = None
    time_to_resolve_ms: int | None = None
    cause_to_onset_ms: int | None = None


@dataclass(frozen=True, slots=True)
class Point(Part):
    """The rule's metric over its window at one step, with the baseline and threshold."""

    ts: str | None = None
    value: float | None = None
    baseline: float | None = None
    threshold: float | None = None
    events: int | None = None


@dataclass(frozen=True, slots=True)
class Series(Part):
    step_ms: int | None = None
    points: tuple[Point, ...] = ()


# --- causes and contributors -------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Alias(Part):
    """Another (dimension, value) covering exactly the same events as a contributor."""

    dimension: str = ""
    value: str = ""


@dataclass(frozen=True, slots=True)
class Contributor(Part):
    """A dimension value and how much of the anomaly it carries (contributors.py)."""

    dimension: str = ""
    value: str = ""
    lift: float = 0.0
    share: float = 0.0
    baseline_share: float = 0.0
    flagged: float = 0.0  # its anomaly mass during the incident
    events: int = 0
    excess: float = 0.0
    explained: float = 0.0
    score: float = 0.0
    same_as: tuple[Alias, ...] = ()


@dataclass(frozen=True, slots=True)
class RootCause(Part):
    """One root cause: a combination of dimension values (one to three) and how much of the
    anomaly it carries (rootcause.py). ``why``: why this combination and not a more general
    or a more specific one."""

    values: tuple[Alias, ...] = ()
    events: int = 0
    flagged: float = 0.0  # its anomaly mass during the incident
    expected: float = 0.0  # what it carried before, at the incident's volume
    excess: float = 0.0
    lift: float | None = None  # null: new in the incident
    explained: float = 0.0  # of the whole excess of the population searched
    why: str = ""


@dataclass(frozen=True, slots=True)
class RootCauses(Part):
    """The smallest set of combinations that explains the anomaly, and what was searched."""

    causes: tuple[RootCause, ...] = ()
    explained: float = 0.0  # by the causes together
    measure: str = ""  # derived (rates, averages, percentiles) | fundamental (counts, sums)
    scope: str = ""  # where it was searched
    dimensions: tuple[str, ...] = ()  # considered
    capped: tuple[str, ...] = ()  # high-cardinality: only their values of largest excess were candidates
    notes: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Cause(Part):
    """A suspected cause: a change event, or an attack (causes.py)."""

    rank: int = 0
    event_id: str = ""
    kind: str = ""
    ts: str | None = None
    score: float = 0.0
    match: float = 0.0
    proximity: float = 0.0
    prior: float = 0.0
    shift: float | None = None
    before_onset_ms: int | None = None
    dimensions: dict[str, str] = field(default_factory=dict)
    description: str = ""
    why: str = ""


@dataclass(frozen=True, slots=True)
class UserShare(Part):
    """A user or tenant and its part of the attack flags (or of the anomaly)."""

    value: str = ""
    share: float = 0.0
    flagged: float = 0


@dataclass(frozen=True, slots=True)
class Adversarial(Part):
    """Signs of an attack (adversarial.py); ``first_ts`` in epoch ms."""

    suspected: bool = False
    flagged: int = 0
    rate_rise: float = 0.0
    top_users: tuple[UserShare, ...] = ()
    top_tenants: tuple[UserShare, ...] = ()
    anomaly_top_users: tuple[UserShare, ...] = ()
    why: str = ""
    anomaly_share_of_attackers: float = 0.0
    first_event: str | None = None
    first_ts: int | None = None
    concentration: float = 0.0


# --- user reports ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class AnswerCount(Part):
    value: str = ""
    reports: int = 0


@dataclass(frozen=True, slots=True)
class ReportExample(Part):
    event_id: str = ""
    ref: str | None = None
    labels: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class UserReports(Part):
    """The user reports about the incident (reports.py)."""

    reports: int = 0
    users: int = 0
    joined: int = 0  # reports naming an answer found in the log
    labels: dict[str, int] = field(default_factory=dict)
    answers: dict[str, tuple[AnswerCount, ...]] = field(default_factory=dict)
    examples: tuple[ReportExample, ...] = ()


# --- the review --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Backtest(Part):
    """The suggested rule replayed over the same events."""

    opened: str | None = None
    group: dict[str, Any] | None = None
    time_to_detect_ms: int | None = None
    incidents_in_range: int | None = None
    rule_incidents_in_range: int | None = None


@dataclass(frozen=True, slots=True)
class Suggestion(Part):
    why: str = ""
    rule_text: str = ""
    backtest: Backtest = Backtest()


@dataclass(frozen=True, slots=True)
class Review(Part):
    """The postmortem skeleton (review.py)."""

    impact: str = ""
    time_to_detect: str = ""
    time_to_contain: str = ""
    cause_candidates: tuple[str, ...] = ()
    follow_ups: tuple[str, ...] = ()
    monitoring_suggestion: Suggestion | None = None


# --- the report --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Report(Part):
    """The investigation of one incident. ``adversarial``, ``user_reports`` and ``review`` are
    None only in a report read back without them."""

    incident: Incident = Incident()
    range: Range = Range()
    anomaly: Anomaly = Anomaly()
    timeline: tuple[Mark, ...] = ()
    lags: Lags = Lags()
    series: Series = Series()
    suspected_causes: tuple[Cause, ...] = ()
    root_causes: RootCauses | None = None
    contributors: tuple[Contributor, ...] = ()
    adversarial: Adversarial | None = None
    user_reports: UserReports | None = None
    evidence: tuple[str, ...] = ()
    review: Review | None = None
    notes: tuple[str, ...] = ()


# --- JSON --------------------------------------------------------------------------------------


def _to_json(value: Any) -> Any:
    if isinstance(value, Part):
        return value.to_json()
    if isinstance(value, tuple | list):
        return [_to_json(v) for v in value]
    if isinstance(value, dict):
        return {k: _to_json(v) for k, v in value.items()}
    return value


@cache
def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _from_json(hint: Any, value: Any) -> Any:
    """``value`` read as ``hint``: parts from dicts, tuples of parts from lists; any other
    value as it is."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if isinstance(hint, type) and issubclass(hint, Part):
        return hint.from_json(value)
    if origin in (types.UnionType, typing.Union):
        if value is None:
            return None
        return _from_json(next(a for a in args if a is not type(None)), value)
    if origin is tuple:
        items = value if isinstance(value, list | tuple) else []
        return tuple(_from_json(args[0], v) for v in items)
    if origin is dict:
        items = value if isinstance(value, dict) else {}
        return {k: _from_json(args[1], v) for k, v in items.items()}
    return value
