"""Checked AST → `CompiledRule`: plain data plus small closures the evaluator runs.

Nothing is eval'd: a `where` expression becomes plan data once (`dsl/plan.py`,
`where_plan`), and the Python core's predicate is a tree of closures built from that
data (`compile_where`) — the same data the native engine deserializes
(`CompiledRule.plan()`, `dsl.plan.compile_plan`). Compile only rules the checker accepted.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from firebreak.dsl import ast
from firebreak.dsl.checker import duration_ms, rule_name
from firebreak.dsl.grouping import DEFAULT_GROUPING, Grouping
from firebreak.dsl.limits import BASELINE_SPAN_FACTOR, MIN_STEPS_PER_WINDOW, STEPS_MS, pick_step  # noqa: F401
from firebreak.dsl.metrics import FUNCTIONS, Argument, MetricKind, kind_of
from firebreak.dsl.plan import RulePlan, WherePlan, rule_plan, where_plan
from firebreak.dsl.policy import DEFAULT_RESPONSES, Response
from firebreak.dsl.printer import print_rule
from firebreak.event_types import EventType
from firebreak.records import Severity

DEFAULT_MIN_EVENTS = 20
DEFAULT_CONTAIN_TTL_MS = 3_600_000  # a containment command expires after 1h unless renewed

Path = tuple[str, ...]
Predicate = Callable[[Mapping[str, Any]], bool]

_COMPARE: dict[str, Callable[[float, float], bool]] = {
    ">": lambda a, b: a > b,
    ">=": lambda a, b: a >= b,
    "<": lambda a, b: a < b,
    "<=": lambda a, b: a <= b,
}

# Category from the metric when a rule gives none: first matching word wins.
_CATEGORY_WORDS = (
    ("data_leakage", ("pii", "leak", "secret", "system_prompt", "cross_tenant", "exfil", "credential")),
    ("adversarial", ("injection", "jailbreak", "adversarial", "abuse", "attack", "toxic_request")),
    ("hallucination", ("hallucinat", "ungrounded", "fabricat", "factual")),
    ("cost", ("cost", "token", "spend")),
    ("quality_degradation", ("quality", "score", "relevance", "helpful", "satisfaction", "refusal")),
)


@dataclass(frozen=True, slots=True)
class ContainSpec:
    action: str
    params: tuple[tuple[str, Any], ...]
    hold: bool  # True: not released when the incident resolves
    ttl_ms: int | None  # `for D`; None: the default TTL (or no expiry when held)


@dataclass(frozen=True, slots=True)
class Escalation:
    severity: Severity
    measure: str  # users | events
    op: str
    value: float


@dataclass(frozen=True, slots=True)
class CompiledRule:
    name: str
    text: str  # canonical text
    path: str
    line: int
    metric: MetricKind  # what the rule measures (engine/firebreak/dsl/metrics.py)
    arg: Path | None  # flags.<name> for rate/count, the field path otherwise
    op: str
    threshold: float | None  # absolute threshold, or None for a relative rule
    factor: float | None  # K of `Kx baseline`
    window_ms: int
    baseline_ms: int  # 0 for absolute rules
    step_ms: int
    by: tuple[Path, ...]
    where: Predicate | None
    for_ms: int
    min_events: int
    severity: Severity
    escalations: tuple[Escalation, ...]
    category: str
    contains: tuple[ContainSpec, ...]
    notify: tuple[str, ...]
    confidence: float | None = None  # `with C% confidence` as a fraction (0.999); None: no test
    population: float | None = None  # K of `Kx population` (threshold and factor are then None)
    # `Kx baseline(S, warmup D, prior P)`: the cold-start fallbacks (docs/detection.md#cold-start-
    # the-reference-fallback-chain). warmup_ms: while the span is incomplete, the group's own
    # history once it covers this long (0: none); prior: the reference before that (None: none).
    warmup_ms: int = 0
    population_fallback: bool = False  # then the rest of the rule's groups (`Kx population`'s rate)
    prior: float | None = None
    # `baseline(S, median | trimmed P% | seasonal D)` (docs/detection.md#robust-and-seasonal-
    # references): the reference is read from the window-length slices of the span that start
    # every `slices_every_ms` back from the window (the window's length for `median`/`trimmed`,
    # D for `seasonal`; 0: the span pooled), as their mean with `trim` of them cut from each end
    # (0.5: the median; 0: the plain mean).
    slices_every_ms: int = 0
    trim: float = 0.0
    min_flagged: int = 0  # `min N flagged`: at least N flagged events in the window
    # The event type the rule counts: inference, or report for reports(LABEL) — which
    # compiles to count() over the `report` events carrying ``label`` (any label when None).
    source: EventType = EventType.INFERENCE
    label: str | None = None
    # Who responds and how often they update, for sev1..sev4 (engine/firebreak/dsl/policy.py)
    responses: tuple[Response, ...] = DEFAULT_RESPONSES
    # An incident that would open again within this long of resolving reopens instead
    # (flapping: engine/firebreak/core/flapping.py; the policy's [grouping] reopen_within)
    reopen_within_ms: int = 3_600_000
    # How its incidents join cases (engine/firebreak/core/cases.py): the policy's [grouping]
    grouping: Grouping = DEFAULT_GROUPING
    # `where` as plan data (dsl/plan.py): what `where` was built from, and what the native
    # engine reads. Not hashed (a dict), compared.
    where_plan: WherePlan | None = field(default=None, hash=False)

    def plan(self) -> RulePlan:
        """This rule in the compiled plan (dsl/plan.py): plain, JSON-serialisable data."""
        return rule_plan(self)

    def response(self, severity: int) -> Response:
        return self.responses[min(max(severity, 1), len(self.responses)) - 1]

    @property
    def scope_dimensions(self) -> tuple[str, ...]:
        """The case dimensions of its category (``[grouping.by]``) its group lacks: the event
        fields its evidence keeps, and its incident records' ``evidence_scope`` reports."""
        grouped = {".".join(path) for path in self.by}
        return tuple(d for d in self.grouping.dimensions(self.category) if d not in grouped)

    @property
    def metric_text(self) -> str:
        """The metric as written: ``rate(pii)``, ``count()``, ``p95(latency_ms)``, ``reports(wrong)``."""
        if self.source is EventType.REPORT:
            return f"reports({self.label or ''})"
        return self.metric.text(self.arg)

    def admits(self, kind: str, data: dict) -> bool:
        """Whether an event of this type and data is one the rule counts (before `where`)."""
        if kind != self.source:
            return False
        if self.label is None:
            return True
        labels = data.get("labels")
        return isinstance(labels, list) and self.label in labels

    @property
    def relative(self) -> bool:
        return self.factor is not None

    @property
    def reference_wait_ms(self) -> int:
        """How long after a group's first step (beyond one window) it has a reference: the
        baseline span; the warm-up with `baseline(S, warmup D)`; none with a `population` or
        `prior` fallback (docs/detection.md#cold-start-the-reference-fallback-chain)."""
        if self.prior is not None or self.population_fallback:
            return 0
        return self.warmup_ms or self.baseline_ms

    @property
    def alpha(self) -> float:
        """The largest p-value that still counts as significant: 1 − confidence."""
        return 1.0 - self.confidence if self.confidence is not None else 1.0

    @property
    def reference_kind(self) -> str:
        """What the threshold is measured against: absolute, baseline or population."""
        return "population" if self.population is not None else "baseline" if self.factor is not None else "absolute"

    def compare(self, value: float, limit: float) -> bool:
        return _COMPARE[self.op](value, limit)

    @property
    def keeps_squares(self) -> bool:
        """Whether its buckets keep their values' sum of squares: `avg(FIELD) … with C%
        confidence`, whose t-test reads the window's spread (core/significance.py)."""
        return self.confidence is not None and self.metric.keeps_squares

    @property
    def needs_sample(self) -> bool:
        """Whether `min N events` gates this rule: rates, averages, percentiles,
        extrema and every baseline comparison."""
        return self.relative or not self.metric.grows_with_window


def compile_rule(rule: ast.Rule, path: str = "<rules>") -> CompiledRule:
    c = rule.condition
    window = duration_ms(c.window)
    step = pick_step(window)
    threshold: float | None
    factor: float | None
    population: float | None = None
    warmup, prior, peers, every, trim = 0, None, False, 0, 0.0
    if isinstance(c.threshold, ast.PopulationThreshold):
        threshold, factor, baseline, population = None, None, 0, float(c.threshold.factor)
    elif isinstance(c.threshold, ast.BaselineThreshold):
        threshold, factor = None, float(c.threshold.factor)
        span = c.threshold.span_of_baseline
        baseline = duration_ms(span) if span is not None else BASELINE_SPAN_FACTOR * window
        baseline = -(-baseline // step) * step  # whole steps
        if c.threshold.warmup is not None:
            warmup = -(-duration_ms(c.threshold.warmup) // step) * step
        if c.threshold.prior is not None:
            prior = float(c.threshold.prior)
        peers = c.threshold.population is not None
        if c.threshold.seasonal is not None:
            every = -(-duration_ms(c.threshold.seasonal) // step) * step
        if c.threshold.median is not None or c.threshold.trimmed is not None:
            every = every or window
            trim = 0.5 if c.threshold.median is not None else float(c.threshold.trimmed) / 100
    else:
        threshold, factor, baseline = float(c.threshold.value), None, 0
    arg: Path | None
    argument, source, label = FUNCTIONS[c.metric.func].argument, EventType.INFERENCE, None
    if argument is Argument.OPTIONAL_LABEL:  # reports(LABEL): count() over report events
        source = EventType.REPORT
        label = c.metric.arg.parts[0] if c.metric.arg else None
        arg = None
    elif argument.flag:
        arg = ("flags", c.metric.arg.parts[0]) if c.metric.arg else None
    else:
        arg = c.metric.arg.parts if c.metric.arg else None
    o = rule.outcome
    where = where_plan(c.where) if c.where is not None else None
    return CompiledRule(
        name=rule_name(rule),
        text=print_rule(rule),
        path=path,
        line=rule.span.line,
        metric=kind_of(c.metric.func, flagged=argument.flag and arg is not None),
        arg=arg,
        op=c.op,
        threshold=threshold,
        factor=factor,
        window_ms=window,
        baseline_ms=baseline,
        step_ms=step,
        by=tuple(p.parts for p in c.by),
        where=compile_where(where) if where is not None else None,
        for_ms=duration_ms(c.for_) if c.for_ is not None else 0,
        min_events=int(c.min_events.count)
        if c.min_events is not None and not c.min_events.flagged
        else default_min_events(c),
        severity=_severity(o.severity.name),
        escalations=tuple(
            Escalation(_severity(e.severity.name), e.measure, e.op, float(e.value)) for e in o.escalations
        )
        or default_escalations(_severity(o.severity.name)),
        category=o.category.name if o.category is not None else infer_category(c.metric),
        contains=tuple(
            ContainSpec(
                k.action,
                tuple((p.key, p.value) for p in k.params),
                k.hold,
                duration_ms(k.for_) if k.for_ is not None else None,
            )
            for k in o.contains
        ),
        notify=tuple(n.target for n in o.notifies),
        confidence=round(float(c.confidence.level) / 100, 12) if c.confidence is not None else None,
        population=population,
        warmup_ms=warmup,
        slices_every_ms=every,
        trim=trim,
        population_fallback=peers,
        prior=prior,
        min_flagged=int(c.min_events.count) if c.min_events is not None and c.min_events.flagged else 0,
        source=source,
        label=label,
        where_plan=where,
    )


def default_min_events(c: ast.Condition) -> int:
    """`min N events` when the rule gives none: 20, or 1 with `with C% confidence` on counted
    events — the test itself weighs how many events there are, so a small group can fire on
    strong evidence. A mean's test keeps 20: its spread is measured from the window's own
    values, and a few crafted ones can show almost none."""
    counted = c.confidence is not None and FUNCTIONS[c.metric.func].counts
    return 1 if counted else DEFAULT_MIN_EVENTS


DEFAULT_IMPACT_USERS = 100


def default_escalations(severity: Severity) -> tuple[Escalation, ...]:
    """Without `escalate` clauses: one level up when more than 100 users are affected."""
    if severity is Severity.SEV1:
        return ()
    return (Escalation(Severity(severity - 1), "users", ">", float(DEFAULT_IMPACT_USERS)),)


_LABEL_CATEGORIES = {"wrong": "hallucination", "data_exposure": "data_leakage", "thumbs_down": "quality_degradation"}


def infer_category(metric: ast.Metric) -> str:
    if FUNCTIONS[metric.func].argument is Argument.OPTIONAL_LABEL:
        return _LABEL_CATEGORIES.get(metric.arg.parts[0], "other") if metric.arg else "other"
    if metric.arg is None:
        return "other"
    name = metric.arg.dotted.lower()
    for category, words in _CATEGORY_WORDS:
        if any(word in name for word in words):
            return category
    return "other"


def _severity(name: str) -> Severity:
    return Severity.parse(name)


# ---- where expressions → closures --------------------------------------------------


def get_path(event: Mapping[str, Any], path: Path) -> Any:
    """The value at a dotted path, or None when any step is missing."""
    value: Any = event
    for part in path:
        if not isinstance(value, Mapping):
            return None
        value = value.get(part)
        if value is None:
            return None
    return value


def getter(path: Path) -> Callable[[Mapping[str, Any]], Any]:
    """`get_path` specialised to one path (the hot path of every rule on every event)."""
    if len(path) == 1:
        (name,) = path
        return lambda event: event.get(name)
    if len(path) == 2:
        first, second = path

        def two(event: Mapping[str, Any]) -> Any:
            inner = event.get(first)
            return inner.get(second) if isinstance(inner, dict) else None

        return two
    return lambda event: get_path(event, path)


def _same(a: Any, b: Any) -> bool:
    """Equality that keeps booleans apart from numbers (true != 1)."""
    if isinstance(a, bool) or isinstance(b, bool):
        return isinstance(a, bool) and isinstance(b, bool) and a == b
    if isinstance(a, int | float) and isinstance(b, int | float):
        return a == b
    return type(a) is type(b) and a == b


def _number(v: Any) -> float | None:
    if isinstance(v, bool) or not isinstance(v, int | float) or math.isnan(v):
        return None
    return v


def compile_expr(e: ast.Expr) -> Predicate:
    """A checked `where` expression as a predicate (through its plan data, as compile_rule does)."""
    return compile_where(where_plan(e))


def compile_where(plan: WherePlan) -> Predicate:
    """The predicate of a `where` expression's plan data (dsl/plan.py)."""
    ((kind, body),) = plan.items()
    if kind == "and":
        left, right = compile_where(body[0]), compile_where(body[1])
        return lambda ev: left(ev) and right(ev)
    if kind == "or":
        left, right = compile_where(body[0]), compile_where(body[1])
        return lambda ev: left(ev) or right(ev)
    if kind == "not":
        inner = compile_where(body)
        return lambda ev: not inner(ev)
    if kind == "truthy":
        get = getter(tuple(body))
        return lambda ev: bool(get(ev))
    if kind == "in":
        path, values, negated = body
        get, values = getter(tuple(path)), tuple(values)
        return lambda ev: any(_same(get(ev), v) for v in values) != negated
    if kind == "compare":
        op, path, value = body
        get = getter(tuple(path))
        if op == "==":
            return lambda ev: _same(get(ev), value)
        if op == "!=":
            return lambda ev: not _same(get(ev), value)
        compare = _COMPARE[op]

        def ordered(ev: Mapping[str, Any]) -> bool:
            actual = _number(get(ev))
            return actual is not None and compare(actual, value)

        return ordered
    raise TypeError(f"not a `where` plan: {plan!r}")
