"""CompiledRule → rule plan: the plain, versioned data the native engine loads.

The DSL stays Python (parse → check → compile); the native engine reads only this plan.
A `where` clause is taken from the rule's canonical text (parsed again: the compiled
rule holds it as Python closures) and written as nested lists:

    ["and", A, B]  ["or", A, B]  ["not", A]  ["truthy", PATH]
    ["in", PATH, [VALUES], NEGATED]  ["compare", OP, PATH, VALUE]

A rule this engine cannot run yet (`unsupported` says why) runs on the Python core.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from firebreak.dsl import ast
from firebreak.dsl.compiler import CompiledRule
from firebreak.dsl.parser import parse_rule

PLAN_VERSION = 1
# The CompiledRule fields this plan covers. A field added to the compiler later runs on the
# native engine only once the plan (and the engine) know it: until then, a rule that sets it
# to anything but its default runs on the Python core.
KNOWN_FIELDS = {
    "name",
    "text",
    "path",
    "line",
    "metric",
    "arg",
    "op",
    "threshold",
    "factor",
    "window_ms",
    "baseline_ms",
    "step_ms",
    "by",
    "where",
    "for_ms",
    "min_events",
    "severity",
    "escalations",
    "category",
    "contains",
    "notify",
    "confidence",
    "population",
    "min_flagged",
    "source",
    "label",
    "responses",  # read by the record writer (Python), not by the native engine
    "reopen_within_ms",
    "grouping",  # read by the lifecycle and the case component (Python)
}


class Unsupported(Exception):
    """The rule uses something the native engine does not run yet; the message says what."""


def unsupported(rule: CompiledRule) -> str | None:
    """Why the native engine cannot run ``rule``, or None when it can."""
    try:
        plan_of(rule)
    except Unsupported as error:
        return str(error)
    return None


def plan_of(rule: CompiledRule) -> dict[str, Any]:
    for f in dataclasses.fields(rule):
        if f.name not in KNOWN_FIELDS:
            default = f.default if f.default is not dataclasses.MISSING else None
            if getattr(rule, f.name) != default:
                raise Unsupported(f"`{f.name}` is not in the native rule plan yet")
    if not rule.metric.native:
        raise Unsupported(f"metric function {rule.metric.func}() is not native yet")
    where = None
    if rule.where is not None:
        condition = parse_rule(rule.text).condition
        where = expr_plan(condition.where)
    return {
        "version": PLAN_VERSION,
        "name": rule.name,
        "func": rule.metric.func,
        "arg": list(rule.arg) if rule.arg is not None else None,
        "op": rule.op,
        "threshold": rule.threshold,
        "factor": rule.factor,
        "population": rule.population,
        "window_ms": rule.window_ms,
        "baseline_ms": rule.baseline_ms,
        "step_ms": rule.step_ms,
        "by": [list(path) for path in rule.by],
        "where": where,
        "min_events": rule.min_events,
        "needs_sample": rule.needs_sample,
        "min_flagged": rule.min_flagged,
        "confidence": rule.confidence,
        "alpha": rule.alpha,
        "source": rule.source.value,
        "label": rule.label,
    }


def expr_plan(e: ast.Expr) -> list:
    if isinstance(e, ast.And):
        return ["and", expr_plan(e.left), expr_plan(e.right)]
    if isinstance(e, ast.Or):
        return ["or", expr_plan(e.left), expr_plan(e.right)]
    if isinstance(e, ast.Not):
        return ["not", expr_plan(e.operand)]
    if isinstance(e, ast.Truthy):
        return ["truthy", list(e.path.parts)]
    if isinstance(e, ast.InList):
        return ["in", list(e.path.parts), list(e.values), e.negated]
    if isinstance(e, ast.Compare):
        return ["compare", e.op, list(e.path.parts), e.value]
    raise Unsupported(f"`where` expression {type(e).__name__} is not native yet")
