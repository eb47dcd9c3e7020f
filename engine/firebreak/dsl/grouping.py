"""The ``[grouping]`` section of policy.toml: one problem, one page (docs/response.md#cases).

    [grouping]
    reopen_within = "1h"   # flapping: an incident firing again this soon after it resolved reopens
    window = "1h"          # a case takes new incidents while open and this long after it resolved
    wait = "1h"            # after a page, a severity rise only updates it for this long
    group_wait = "0s"      # a case's first page waits this long (event time) for incidents that join
    inhibit = true         # a sev1 case mutes lower-severity incidents on its scope

    [grouping.by]          # the scope dimensions of a case, per category, the first found deciding
    adversarial = ["tenant"]

`Grouping` is the checked, merged value; each compiled rule carries it (``CompiledRule.grouping``)
so that whatever takes the rules — the drive loop, the demo, the worker — finds it.
Pure: `read_grouping` checks one file's section through the policy reader (path:line:col).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from firebreak.dsl.diagnostics import did_you_mean
from firebreak.durations import DurationError, parse_duration

KEYS = ("reopen_within", "window", "wait", "group_wait", "inhibit", "by")
DURATIONS = ("reopen_within", "window", "wait", "group_wait")
HOUR_MS = 3_600_000
# The scope of a case, per category: the dimension, in this order, whose value its incidents
# share — the rule's group value, else the value their evidence concentrates in.
DEFAULT_BY: dict[str, tuple[str, ...]] = {
    "hallucination": ("model", "service"),
    "data_leakage": ("tenant", "service"),
    "quality_degradation": ("service", "model"),
    "adversarial": ("tenant",),
    "cost": ("service", "tenant"),
    "other": ("service", "tenant"),
}


@dataclass(frozen=True)
class Grouping:
    """How incidents become cases (engine/firebreak/core/cases.py) and when they reopen."""

    reopen_within_ms: int = HOUR_MS
    window_ms: int = HOUR_MS
    wait_ms: int = HOUR_MS
    group_wait_ms: int = 0  # Alertmanager's group_wait; 0: a case pages as its first incident opens
    inhibit: bool = True
    by: dict[str, tuple[str, ...]] = field(default_factory=lambda: dict(DEFAULT_BY))
    maintenance: tuple = ()  # the policy's [[maintenance]] windows (dsl/maintenance.py): pages held in them

    def __hash__(self) -> int:  # a rule field: rules are hashed by value nowhere, but stay hashable
        return hash(
            (
                self.reopen_within_ms,
                self.window_ms,
                self.wait_ms,
                self.group_wait_ms,
                self.inhibit,
                tuple(sorted(self.by.items())),
                self.maintenance,
            )
        )

    def dimensions(self, category: str) -> tuple[str, ...]:
        return self.by.get(category, DEFAULT_BY.get(category, ("service",)))

    def merged(self, overrides: dict[str, Any]) -> Grouping:
        """These settings with a file's (checked) ``overrides`` applied, key by key."""
        values = {
            "reopen_within_ms": self.reopen_within_ms,
            "window_ms": self.window_ms,
            "wait_ms": self.wait_ms,
            "group_wait_ms": self.group_wait_ms,
            "inhibit": self.inhibit,
            "by": dict(self.by),
            "maintenance": self.maintenance,
        }
        for key, value in overrides.items():
            if key == "by":
                values["by"].update(value)
            else:
                values[key] = value
        return Grouping(**values)


DEFAULT_GROUPING = Grouping()


def read_grouping(table: Any, reader: Any, categories: tuple[str, ...]) -> dict[str, Any]:
    """The checked overrides of one ``[grouping]`` table; problems go to ``reader.problem``."""
    out: dict[str, Any] = {}
    if not isinstance(table, dict):
        reader.problem([], "grouping", "`grouping` must be a table: [grouping]")
        return out
    for key, value in table.items():
        if key not in KEYS:
            hint = did_you_mean(key, KEYS) or f"; expected one of {', '.join(KEYS)}"
            reader.problem(["grouping"], key, f"unknown key `{key}`{hint}")
        elif key in DURATIONS:
            ms = duration_or_none(value)
            if ms is None or (key == "window" and ms == 0):
                reader.problem(["grouping"], key, f'`{key}` must be a duration such as "30m", "1h" or "1d"')
            else:
                out[f"{key}_ms"] = ms
        elif key == "inhibit":
            if isinstance(value, bool):
                out["inhibit"] = value
            else:
                reader.problem(["grouping"], key, "`inhibit` must be true or false")
        else:
            by = _read_by(value, reader, categories)
            if by:
                out["by"] = by
    return out


def duration_or_none(value: Any) -> int | None:
    """A duration of zero or more (``"0s"``: off), or None."""
    if not isinstance(value, str):
        return None
    try:
        ms = parse_duration(value)
    except DurationError:
        return None
    return ms if ms >= 0 else None


def _read_by(table: Any, reader: Any, categories: tuple[str, ...]) -> dict[str, tuple[str, ...]]:
    if not isinstance(table, dict):
        reader.problem(["grouping"], "by", '`by` must be a table: [grouping.by] with adversarial = ["tenant"]')
        return {}
    out = {}
    for category, dims in table.items():
        if category not in categories:
            hint = did_you_mean(category, categories) or f"; expected one of {', '.join(categories)}"
            reader.problem(["grouping", "by"], category, f"unknown category `{category}`{hint}")
        elif not (isinstance(dims, list) and dims and all(isinstance(d, str) and d.strip() for d in dims)):
            reader.problem(
                ["grouping", "by"],
                category,
                f'`{category}` must be a list of event fields, e.g. {category} = ["tenant"]',
            )
        else:
            out[category] = tuple(dims)
    return out
