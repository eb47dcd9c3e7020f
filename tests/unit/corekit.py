"""Small builders for core tests: engine.testing (shipped for users too), under its old name."""

from engine.testing import HOUR, MIN, SEC, T0, event, merged, of_type, offset, rules, run, steady

__all__ = ["HOUR", "MIN", "SEC", "T0", "event", "merged", "of_type", "offset", "rules", "run", "steady"]
