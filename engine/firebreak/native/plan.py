"""The native engine's side of the compiled plan (engine/firebreak/dsl/plan.py).

The DSL compiler emits the plan once; this module only says which rules the native engine
runs (`unsupported`) and serializes the plan it loads (`plans_json`). A rule this engine
cannot run is refused by it (`NativeEngine`: one line) and runs on the Python core only
(`--engine python`); every rule the DSL accepts runs natively.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable

import orjson

from firebreak.dsl.compiler import CompiledRule
from firebreak.dsl.plan import PLAN_VERSION, compile_plan

__all__ = ["KNOWN_FIELDS", "PLAN_VERSION", "plans_json", "unsupported"]

# The CompiledRule fields the plan carries (dsl/plan.py, rule_plan). A field added to the
# compiler later runs on the native engine only once the plan (and the engine) know it:
# until then, a rule that sets it to anything but its default is refused by the native engine.
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
    "warmup_ms",
    "slices_every_ms",
    "trim",
    "prior",
    "population_fallback",
    "step_ms",
    "by",
    "where",
    "where_plan",
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
    "grouping",  # read by the lifecycle and the case component (Python)
    "reopen_within_ms",
}


def unsupported(rule: CompiledRule) -> str | None:
    """Why the native engine cannot run ``rule``, or None when it can."""
    for f in dataclasses.fields(rule):
        if f.name not in KNOWN_FIELDS:
            default = f.default if f.default is not dataclasses.MISSING else None
            if getattr(rule, f.name) != default:
                return f"`{f.name}` is not in the native rule plan yet"
    if not rule.metric.native:
        return f"metric function {rule.metric.func}() is not native yet"
    if rule.where is not None and rule.where_plan is None:
        return "its `where` has no plan data (a CompiledRule made without compile_rule)"
    return None


def plans_json(rules: Iterable[CompiledRule]) -> bytes:
    """The compiled plan of ``rules`` as the JSON bytes `_native.Core` and `NativeRouter` take."""
    return orjson.dumps(compile_plan(rules))
