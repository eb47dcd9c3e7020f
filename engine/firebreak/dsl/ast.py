"""The typed, frozen syntax tree of the rules language.

Every node carries the `Span` of the text it came from. Spans never take part in
equality (``compare=False``), so ``parse(print(rule)) == rule`` holds although the
printed text is laid out differently from the original.

The tree records what the author wrote, not what it means: a duration written
``10x`` is still a `Duration` with unit ``"x"``. Judging it is the checker's job
(engine/firebreak/dsl/checker.py); turning it into something executable is the compiler's.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class Span:
    """1-based line and column of the first character; end is exclusive."""

    line: int
    column: int
    end_line: int
    end_column: int

    @staticmethod
    def unknown() -> Span:
        return Span(0, 0, 0, 0)


def _span() -> Span:
    return field(default_factory=Span.unknown, compare=False, repr=False)


Number = int | float
Literal = str | int | float | bool


@dataclass(frozen=True, slots=True)
class FieldPath:
    """A dotted path into an event: ``model``, ``scores.quality``."""

    parts: tuple[str, ...]
    span: Span = _span()

    @property
    def dotted(self) -> str:
        return ".".join(self.parts)


@dataclass(frozen=True, slots=True)
class Duration:
    amount: Number
    unit: str
    span: Span = _span()


@dataclass(frozen=True, slots=True)
class Metric:
    """``rate(hallucination)``, ``p95(latency_ms)``, ``count()``."""

    func: str
    arg: FieldPath | None
    span: Span = _span()


@dataclass(frozen=True, slots=True)
class AbsoluteThreshold:
    value: Number
    unit: str = ""  # anything but "" is a mistake the checker reports
    span: Span = _span()


@dataclass(frozen=True, slots=True)
class BaselineThreshold:
    """``3x baseline``, ``0.8x baseline(6h)`` or ``3x baseline(6h, warmup 1h, prior 0.02)``.

    The cold-start fallbacks (docs/detection.md#cold-start-the-reference-fallback-chain):
    ``warmup``: the shortest own history that serves as the reference while the span is
    incomplete; ``population``: the rest of the rule's groups in the same window before that;
    ``prior``: the reference while the group has neither.

    How the reference is read (docs/detection.md#robust-and-seasonal-references): ``median``
    or ``trimmed`` (a percentage cut from each end) over the window-length slices of the span,
    ``seasonal``: only the slices a whole number of these periods back (the same hour
    yesterday, ...); without them, the span pooled."""

    factor: Number
    unit: str = "x"  # anything but "x" is a mistake the checker reports
    span_of_baseline: Duration | None = None
    span: Span = _span()
    warmup: Duration | None = None
    population: Span | None = None  # `population` given: where (rates with `by` only)
    prior: Number | None = None
    prior_text: str | None = None  # the prior as written (a unit on it is a mistake the checker reports)
    prior_span: Span | None = None
    median: Span | None = None  # `median` given: where
    trimmed: Number | None = None  # `trimmed P%`: P
    trimmed_text: str | None = None  # as written (the checker wants a percentage)
    trimmed_span: Span | None = None
    seasonal: Duration | None = None


@dataclass(frozen=True, slots=True)
class PopulationThreshold:
    """``5x population``: K times the rate of the rule's other groups in the same window."""

    factor: Number
    unit: str = "x"  # anything but "x" is a mistake the checker reports
    span: Span = _span()


Threshold = AbsoluteThreshold | BaselineThreshold | PopulationThreshold


@dataclass(frozen=True, slots=True)
class Confidence:
    """``with 99.9% confidence``: the threshold must be exceeded significantly."""

    level: Number  # the percentage as written: 99.9
    unit: str = "%"  # anything but "%" is a mistake the checker reports
    span: Span = _span()


# ---- where expressions -------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Compare:
    path: FieldPath
    op: str  # == != < <= > >=
    value: Literal
    span: Span = _span()


@dataclass(frozen=True, slots=True)
class InList:
    path: FieldPath
    values: tuple[Literal, ...]
    negated: bool = False
    span: Span = _span()


@dataclass(frozen=True, slots=True)
class Truthy:
    path: FieldPath
    span: Span = _span()


@dataclass(frozen=True, slots=True)
class Not:
    operand: Expr
    span: Span = _span()


@dataclass(frozen=True, slots=True)
class And:
    left: Expr
    right: Expr
    span: Span = _span()


@dataclass(frozen=True, slots=True)
class Or:
    left: Expr
    right: Expr
    span: Span = _span()


Expr = Compare | InList | Truthy | Not | And | Or


# ---- condition -----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class MinEvents:
    """``min N events``, or ``min N flagged`` (flagged events only)."""

    count: Number
    unit: str = ""
    flagged: bool = False
    span: Span = _span()


@dataclass(frozen=True, slots=True)
class Condition:
    metric: Metric
    op: str  # > >= < <=
    threshold: Threshold
    window: Duration
    by: tuple[FieldPath, ...] = ()
    where: Expr | None = None
    for_: Duration | None = None
    min_events: MinEvents | None = None
    confidence: Confidence | None = None
    span: Span = _span()


# ---- outcome -------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Severity:
    name: str  # sev1..sev4 once checked
    span: Span = _span()


@dataclass(frozen=True, slots=True)
class Param:
    key: str
    value: Literal
    span: Span = _span()


@dataclass(frozen=True, slots=True)
class Contain:
    """``contain ACTION[(k=v, ...)] [hold] [for DURATION]``."""

    action: str
    params: tuple[Param, ...] = ()
    hold: bool = False
    for_: Duration | None = None
    span: Span = _span()


@dataclass(frozen=True, slots=True)
class Notify:
    target: str
    span: Span = _span()


@dataclass(frozen=True, slots=True)
class Escalate:
    """``escalate sev1 if users > 100``."""

    severity: Severity
    measure: str  # users | events
    op: str
    value: Number
    span: Span = _span()


@dataclass(frozen=True, slots=True)
class CategoryOverride:
    name: str
    span: Span = _span()


@dataclass(frozen=True, slots=True)
class Outcome:
    severity: Severity
    contains: tuple[Contain, ...] = ()
    escalations: tuple[Escalate, ...] = ()
    category: CategoryOverride | None = None
    notifies: tuple[Notify, ...] = ()
    extra_categories: tuple[CategoryOverride, ...] = ()  # a second `category` clause: an error
    span: Span = _span()


@dataclass(frozen=True, slots=True)
class Rule:
    name: str | None  # None: unnamed; the checker derives a stable name
    condition: Condition
    outcome: Outcome
    name_span: Span = _span()
    span: Span = _span()


@dataclass(frozen=True, slots=True)
class RuleFile:
    path: str
    rules: tuple[Rule, ...]
