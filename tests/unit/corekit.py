"""Small builders for core tests: firebreak.testing (shipped for users too), under its old name."""

from firebreak.testing import HOUR, MIN, SEC, T0, event, merged, of_type, offset, rules, run, steady

__all__ = ["HOUR", "MIN", "SEC", "T0", "event", "merged", "of_type", "offset", "rules", "run", "steady"]
