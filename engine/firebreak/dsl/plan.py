"""The compiled plan: what one compile of the rules gives both engines, as plain data.

`compile_rule` turns a rule's `where` into plan data once (`where_plan`) and builds the
Python core's predicate from that data (`compiler.compile_where`); `rule_plan` writes every
other part of the `CompiledRule` beside it. The native engine deserializes the same document
with serde (native/src/plan.rs) — no rule text is parsed twice. The format
(docs/native.md, Rule plans):

    {"plan_version": 5, "rules": [RulePlan, ...]}

A `where` expression is serde's externally tagged form:

    {"and": [A, B]}  {"or": [A, B]}  {"not": A}  {"truthy": PATH}
    {"in": [PATH, [VALUES], NEGATED]}  {"compare": [OP, PATH, VALUE]}

A PATH is a list of names (``["scores", "quality"]``); a VALUE a string, number or boolean.
Change the layout only with `PLAN_VERSION`: the crate refuses a version it does not read.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any, Literal, TypedDict

from firebreak.dsl import ast

if TYPE_CHECKING:
    from firebreak.dsl.compiler import CompiledRule

PLAN_VERSION = 5  # 3: `warmup_ms` (window), `population_fallback` and `prior` (condition): cold start;
# 4: `slices_every_ms` (window) and `trim` (condition): robust and seasonal references;
# 5: `keeps_squares` (options): `avg(FIELD) … with C% confidence`, a mean's t-test

Path = list[str]
Value = str | int | float | bool
# One `where` expression: a one-key dict, the key its kind (see the module's docstring).
WherePlan = dict[str, Any]


class MetricPlan(TypedDict):
    """What the rule measures: its `MetricKind` (engine/firebreak/dsl/metrics.py) and argument."""

    func: str  # rate count sum avg min max distinct p50 p90 p95 p99
    accumulates: Literal["events", "flagged", "distinct", "values"]
    quantile: float | None  # pNN: the quantile
    rate: bool  # a fraction: binomial test, baselines floored at one flagged event
    additive: bool  # count and sum: a baseline span scales with its length
    arg: Path | None  # flags.<name> for rate/count(FLAG), the field path otherwise
    source: Literal["inference", "report"]  # the event type it counts
    label: str | None  # reports(LABEL): only reports carrying this label


class WindowPlan(TypedDict):
    window_ms: int
    baseline_ms: int  # 0 for absolute and population rules
    warmup_ms: int  # `baseline(S, warmup D)`: the own history that serves while S is incomplete; 0: none
    # `baseline(S, median | trimmed P% | seasonal D)`: the reference read from window-length
    # slices starting this often back from the window; 0: the span pooled
    slices_every_ms: int
    step_ms: int


class ConditionPlan(TypedDict):
    """`metric OP limit`: the limit is a threshold, K× the baseline or K× the population rate."""

    op: Literal[">", ">=", "<", "<="]
    reference: Literal["absolute", "baseline", "population"]
    threshold: float | None
    factor: float | None
    population: float | None
    population_fallback: bool  # `baseline(S, population)`: the rest's rate before the prior
    prior: float | None  # `baseline(S, prior P)`: the reference before any own history serves
    trim: float  # the slices' share cut from each end before their mean (0.5: the median)


class OptionsPlan(TypedDict):
    for_ms: int
    min_events: int
    needs_sample: bool  # whether `min N events` gates the rule
    min_flagged: int
    confidence: float | None  # `with C% confidence` as a fraction
    alpha: float  # 1 − confidence (1.0 without a test)
    keeps_squares: bool  # buckets keep their values' sum of squares (a mean's t-test)
    reopen_within_ms: int


class EscalationPlan(TypedDict):
    severity: int
    measure: str  # users | events
    op: str
    value: float


class ContainPlan(TypedDict):
    action: str
    params: list[list[Any]]  # [[key, value], ...]
    hold: bool
    ttl_ms: int | None


class ActionsPlan(TypedDict):
    """What an incident of the rule does: read by the lifecycle and the record writer (Python)."""

    severity: int
    category: str
    escalations: list[EscalationPlan]
    contains: list[ContainPlan]
    notify: list[str]


class RulePlan(TypedDict):
    name: str
    path: str
    line: int
    metric: MetricPlan
    window: WindowPlan
    condition: ConditionPlan
    by: list[Path]
    where: WherePlan | None
    options: OptionsPlan
    scope: list[str]  # the case dimensions its group lacks: evidence keeps its events' values of them
    actions: ActionsPlan


class Plan(TypedDict):
    plan_version: int
    rules: list[RulePlan]


def where_plan(e: ast.Expr) -> WherePlan:
    """A checked `where` expression as plan data (the compiler calls this once per rule)."""
    if isinstance(e, ast.And):
        return {"and": [where_plan(e.left), where_plan(e.right)]}
    if isinstance(e, ast.Or):
        return {"or": [where_plan(e.left), where_plan(e.right)]}
    if isinstance(e, ast.Not):
        return {"not": where_plan(e.operand)}
    if isinstance(e, ast.Truthy):
        return {"truthy": list(e.path.parts)}
    if isinstance(e, ast.InList):
        return {"in": [list(e.path.parts), list(e.values), e.negated]}
    if isinstance(e, ast.Compare):
        return {"compare": [e.op, list(e.path.parts), e.value]}
    raise TypeError(f"not an expression: {e!r}")


def rule_plan(rule: CompiledRule) -> RulePlan:
    """One compiled rule as plan data (JSON-serialisable; what the crate deserializes)."""
    kind = rule.metric
    return {
        "name": rule.name,
        "path": rule.path,
        "line": rule.line,
        "metric": {
            "func": kind.func,
            "accumulates": kind.accumulates.value,
            "quantile": kind.quantile,
            "rate": kind.rate,
            "additive": kind.additive,
            "arg": list(rule.arg) if rule.arg is not None else None,
            "source": rule.source.value,
            "label": rule.label,
        },
        "window": {
            "window_ms": rule.window_ms,
            "baseline_ms": rule.baseline_ms,
            "warmup_ms": rule.warmup_ms,
            "slices_every_ms": rule.slices_every_ms,
            "step_ms": rule.step_ms,
        },
        "condition": {
            "op": rule.op,
            "reference": rule.reference_kind,
            "threshold": rule.threshold,
            "factor": rule.factor,
            "population": rule.population,
            "population_fallback": rule.population_fallback,
            "prior": rule.prior,
            "trim": rule.trim,
        },
        "by": [list(path) for path in rule.by],
        "where": rule.where_plan,
        "scope": list(rule.scope_dimensions),
        "options": {
            "for_ms": rule.for_ms,
            "min_events": rule.min_events,
            "needs_sample": rule.needs_sample,
            "min_flagged": rule.min_flagged,
            "confidence": rule.confidence,
            "alpha": rule.alpha,
            "keeps_squares": rule.keeps_squares,
            "reopen_within_ms": rule.reopen_within_ms,
        },
        "actions": {
            "severity": int(rule.severity),
            "category": rule.category,
            "escalations": [
                {"severity": int(e.severity), "measure": e.measure, "op": e.op, "value": e.value}
                for e in rule.escalations
            ],
            "contains": [
                {"action": c.action, "params": [[k, v] for k, v in c.params], "hold": c.hold, "ttl_ms": c.ttl_ms}
                for c in rule.contains
            ],
            "notify": list(rule.notify),
        },
    }


def compile_plan(rules: Iterable[CompiledRule]) -> Plan:
    """The versioned plan of a rule set: what `firebreak._native.Core` and `NativeRouter` load."""
    return {"plan_version": PLAN_VERSION, "rules": [rule_plan(rule) for rule in rules]}
