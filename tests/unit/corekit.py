"""Small builders for core tests: firebreak.testing (shipped for users too), under its old name,
with `run`, `driver` and `restore` on the engine under test (the rule_engine fixture,
tests/conftest.py) unless a test names one."""

from collections.abc import Iterable, Sequence
from typing import Any

from firebreak import testing
from firebreak.adapters.drive import Driver, default_engine
from firebreak.core import Event
from firebreak.dsl import CompiledRule
from firebreak.testing import HOUR, MIN, SEC, T0, event, merged, of_type, offset, rules, steady

__all__ = [
    "HOUR",
    "MIN",
    "SEC",
    "T0",
    "driver",
    "event",
    "merged",
    "of_type",
    "offset",
    "restore",
    "rules",
    "run",
    "steady",
]

RuleSet = str | Sequence[CompiledRule]


def _compiled(rule_set: RuleSet) -> Sequence[CompiledRule]:
    return rules(rule_set) if isinstance(rule_set, str) else rule_set


def run(
    rule_set: RuleSet, events: Iterable[Event], *, engine: str | None = None, **options: Any
) -> list[dict[str, Any]]:
    """`firebreak.testing.run` on ``engine``, or the engine under test (FIREBREAK_ENGINE, which
    the rule_engine fixture sets; a test without it fails here)."""
    return testing.run(rule_set, events, engine=engine or default_engine(), **options)


def driver(rule_set: RuleSet, lateness_ms: int = 30 * SEC, **options: Any) -> Driver:
    """A `Driver` (feed_events, advance, finish, snapshot) on the engine under test."""
    return Driver(_compiled(rule_set), lateness_ms, default_engine(), **options)


def restore(rule_set: RuleSet, snapshot: dict[str, Any], **options: Any) -> Driver:
    """`Driver.restore` on the engine under test: a driver that goes on from ``snapshot``."""
    return Driver.restore(_compiled(rule_set), snapshot, default_engine(), **options)
