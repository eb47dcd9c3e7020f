"""Small builders for core tests: firebreak.testing (shipped for users too), under its old name,
with `run` on the engine under test (the rule_engine fixture, tests/conftest.py) unless a test
names one."""

from collections.abc import Iterable, Sequence
from typing import Any

from firebreak import testing
from firebreak.adapters.drive import default_engine
from firebreak.core import Event
from firebreak.dsl import CompiledRule
from firebreak.testing import HOUR, MIN, SEC, T0, event, merged, of_type, offset, rules, steady

__all__ = ["HOUR", "MIN", "SEC", "T0", "event", "merged", "of_type", "offset", "rules", "run", "steady"]


def run(
    rule_set: str | Sequence[CompiledRule], events: Iterable[Event], *, engine: str | None = None, **options: Any
) -> list[dict[str, Any]]:
    """`firebreak.testing.run` on ``engine``, or the engine under test (FIREBREAK_ENGINE, which
    the rule_engine fixture sets; a test without it fails here)."""
    return testing.run(rule_set, events, engine=engine or default_engine(), **options)
