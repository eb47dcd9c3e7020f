"""Spans of time as people write and read them: one parser, one formatter, for every command,
config file and message (a leaf module: it imports nothing of engine).

    parse_duration("1h30m") == 5_400_000          # s, m, h, d and ms, compound, no sign
    format_duration(5_400_000) == "1h30m"         # 1h5m, 4m59s, 45s, 1.5s, 250ms, 0s

The rules language has its own lexical form for durations (one number and one unit, parsed
by Lark and checked by engine/firebreak/dsl/checker.py), but the same units: `UNITS`.
"""

from __future__ import annotations

import re

UNITS = {"ms": 1, "s": 1_000, "m": 60_000, "h": 3_600_000, "d": 86_400_000}
_PART = re.compile(r"(\d+)(ms|[smhd])")


class DurationError(ValueError):
    """Not a duration; the message says why (and shows the expected form)."""


def parse_duration(text: str) -> int:
    """``"1h30m"``, ``"90s"``, ``"0m"``, ``"250ms"``, ``"2d"`` → milliseconds."""
    if not isinstance(text, str) or not text:
        raise DurationError(f'expected a duration like "1h30m", got {text!r}')
    parts = _PART.findall(text)
    if "".join(n + u for n, u in parts) != text:
        if text.isdigit():
            raise DurationError(f"`{text}` needs a unit (ms, s, m, h, d)")
        raise DurationError(f"`{text}` is not a duration; use e.g. 90s, 10m, 1h30m, 250ms")
    return sum(int(number) * UNITS[unit] for number, unit in parts)


def format_duration(ms: int) -> str:
    """A span for people: ``1h5m``, ``4m59s`` (whole seconds from a minute on), ``45s``, ``1.5s``
    (tenths under a minute), ``250ms``, ``0s``; negative spans get a ``-``."""
    if ms < 0:
        return "-" + format_duration(-ms)
    if ms == 0:
        return "0s"
    if ms < 1000:
        return f"{ms}ms"
    if ms < 60_000 and ms % 1000:
        return f"{round(ms / 1000, 1):g}s"
    hours, rest = divmod(ms // 1000, 3600)
    minutes, seconds = divmod(rest, 60)
    return "".join(f"{n}{u}" for n, u in ((hours, "h"), (minutes, "m"), (seconds, "s")) if n)
