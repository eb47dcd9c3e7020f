"""Flapping: an incident that would open again soon after it resolved reopens instead.

A (rule, group) whose condition stops holding for a window resolves its incident; if the
condition holds again within the rule's cool-down (``CompiledRule.reopen_within_ms``, the
policy's ``[grouping] reopen_within``, default 1h) of that resolution, the lifecycle
reopens the *same* incident (``incident.reopened``, same ``incident_id``, containment
issued again) instead of opening a new one. What it needs to do so is kept here:

    cooldowns = Cooldowns()
    evaluate_group(rule, group, life, at, reading, cooldowns)   # remembers and takes

Both engines hold one (the Python core in `Engine`, the native engine in its `_Host`), so
their records stay identical; it is part of their snapshots (``"cooldowns"``) and bounded:
an entry is forgotten at the first opening or resolution (of any rule) after its cool-down
ended — points both engines reach alike, so their snapshots stay equal too.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from firebreak.core.incidents import Incident, canonical_group
from firebreak.dsl.compiler import CompiledRule

DEFAULT_REOPEN_WITHIN_MS = 3_600_000  # the compiler's default too (CompiledRule.reopen_within_ms)


@dataclass(slots=True)
class Closed:
    """A resolved incident that may still reopen, until ``until``."""

    rule: str
    group: dict[str, Any]
    incident: Incident
    resolved_at: int
    until: int

    def to_json(self) -> list:
        return [self.rule, self.group, self.resolved_at, self.until, self.incident.to_json()]

    @staticmethod
    def from_json(data: list) -> Closed:
        rule, group, resolved_at, until, incident = data
        return Closed(rule, group, Incident.from_json(incident), resolved_at, until)


class Cooldowns:
    """The incidents resolved within their rule's cool-down, by (rule, group)."""

    __slots__ = ("closed",)

    def __init__(self) -> None:
        self.closed: dict[tuple[str, str], Closed] = {}

    def __len__(self) -> int:
        return len(self.closed)

    def remember(self, rule: CompiledRule, group: dict[str, Any], incident: Incident, at: int) -> None:
        """``incident`` of ``rule`` and ``group`` resolved at ``at``."""
        self.forget(at, rule.name)
        if rule.reopen_within_ms > 0:
            closed = Closed(rule.name, group, incident, at, at + rule.reopen_within_ms)
            self.closed[(rule.name, canonical_group(group))] = closed

    def take(self, rule: CompiledRule, group: dict[str, Any], at: int) -> Closed | None:
        """The incident this (rule, group) would reopen at ``at``, if its cool-down holds; it
        is no longer remembered (it is open again)."""
        if not self.closed:
            return None
        self.forget(at, rule.name)
        closed = self.closed.pop((rule.name, canonical_group(group)), None)
        return closed if closed is not None and closed.until >= at else None

    def forget(self, at: int, rule: str) -> None:
        """Drop ``rule``'s entries whose cool-down ended before ``at``. Only the rule's own: the
        native engine evaluates rules on more than one thread, each rule's steps in time order on
        one of them, so what one rule forgets must not depend on how far another has got (the
        records and snapshots are then the same whatever the threads). ``list(...)`` copies the
        items in one call: another thread may add or drop its own entries meanwhile."""
        for key in [k for k, c in list(self.closed.items()) if k[0] == rule and c.until < at]:
            self.closed.pop(key, None)

    def to_json(self) -> list[list]:
        """The snapshot form: ordered by resolution, then rule and group (the same whichever
        engine, and whichever order its rules resolved in within one step)."""
        items = sorted(self.closed.items(), key=lambda kv: (kv[1].resolved_at, kv[0]))
        return [closed.to_json() for _, closed in items]

    @staticmethod
    def from_json(data: list[list] | None, keep: Callable[[str], bool] = lambda _: True) -> Cooldowns:
        """``keep(rule name)``: whether the rule's entries still apply (a rule whose text
        changed, or that was removed, starts afresh)."""
        cooldowns = Cooldowns()
        for item in data or []:
            closed = Closed.from_json(item)
            if keep(closed.rule):
                cooldowns.closed[(closed.rule, canonical_group(closed.group))] = closed
        return cooldowns

    def merged(self, other: Cooldowns) -> Cooldowns:
        out = Cooldowns()
        out.closed = {**self.closed, **other.closed}
        return out
