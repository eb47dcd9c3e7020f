"""``[[maintenance]]`` in policy.toml: recurring windows in which pages are held (docs/response.md#maintenance-windows).

    [[maintenance]]
    name = "weekend deploys"
    days = ["sat", "sun"]          # mon … sun; every day when left out
    from = "02:00"                 # local time of `timezone`; `to` before `from`: over midnight
    to = "04:00"
    timezone = "Europe/Berlin"     # an IANA zone; UTC when left out
    match = { tenant = "acme" }    # like a silence's --match; everything when left out

Alertmanager's ``time_intervals`` with a mute route, as policy: checked by ``firebreak check``
(path:line:col), carried by every compiled rule (``rule.grouping.maintenance``), matched by
notify exactly like a silence (core/silences.py): held, counted, paged when it ends.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from firebreak.dsl.diagnostics import Diagnostic, did_you_mean

DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
KEYS = ("name", "days", "from", "to", "timezone", "match")
CLOCK = re.compile(r"^([01]\d|2[0-3]):([0-5]\d)$|^24:00$")


@dataclass(frozen=True)
class MaintenanceWindow:
    name: str
    days: tuple[int, ...]  # 0 = monday
    start_min: int  # minutes after local midnight
    end_min: int
    timezone: str = "UTC"
    matchers: tuple[tuple[str, str], ...] = ()

    @property
    def silence_id(self) -> str:
        return f"maintenance:{self.name}"

    def covers(self, at_ms: int) -> bool:
        """Whether ``at_ms`` (epoch ms) falls in the window, on the local clock of its zone; a
        window over midnight belongs to the day it starts on."""
        local = datetime.fromtimestamp(at_ms / 1000, UTC).astimezone(ZoneInfo(self.timezone))
        minute = local.hour * 60 + local.minute
        day = local.weekday()
        if self.start_min <= self.end_min:
            return day in self.days and self.start_min <= minute < self.end_min
        return (day in self.days and minute >= self.start_min) or ((day - 1) % 7 in self.days and minute < self.end_min)

    def matches(self, record: Any) -> bool:
        from firebreak.core.silences import record_value

        return all(record_value(record, name) == value for name, value in self.matchers)


def read_maintenance(value: Any, lines: list[str], path: str) -> tuple[tuple[MaintenanceWindow, ...], list[Diagnostic]]:
    """The checked windows of one file's ``[[maintenance]]`` array, and its problems located."""
    problems: list[Diagnostic] = []
    headers = [i for i, line in enumerate(lines) if line.strip().replace(" ", "").startswith("[[maintenance]]")]

    def problem(index: int, key: str | None, message: str) -> None:
        start = headers[index] if index < len(headers) else 0
        line_no, column = start + 1, 1
        for i in range(start + 1, len(lines)):
            stripped = lines[i].lstrip()
            if stripped.startswith("["):
                break
            if key is not None and stripped.startswith(key) and stripped[len(key) :].lstrip().startswith("="):
                line_no, column = i + 1, len(lines[i]) - len(stripped) + 1
                break
        problems.append(Diagnostic(path, line_no, column, message, column + len(key) if key else None))

    if not isinstance(value, list) or not all(isinstance(t, dict) for t in value):
        problems.append(
            Diagnostic(
                path, (headers[0] + 1) if headers else 1, 1, "`maintenance` must be an array of tables: [[maintenance]]"
            )
        )
        return (), problems
    out = []
    for index, table in enumerate(value):
        ok = True
        for key in table:
            if key not in KEYS:
                hint = did_you_mean(key, KEYS) or f"; expected one of {', '.join(KEYS)}"
                problem(index, key, f"unknown key `{key}`{hint}")
                ok = False
        name = table.get("name")
        if not isinstance(name, str) or not name.strip():
            problem(index, "name" if "name" in table else None, '`name` must be given, e.g. name = "weekend deploys"')
            ok = False
        days = table.get("days", list(DAYS))
        if not isinstance(days, list) or not days or not all(isinstance(d, str) for d in days):
            problem(index, "days", '`days` must be a list such as ["sat", "sun"]')
            ok, days = False, []
        for day in days:
            if day.lower() not in DAYS:
                hint = did_you_mean(day.lower(), DAYS) or f"; expected {', '.join(DAYS)}"
                problem(index, "days", f"unknown day `{day}`{hint}")
                ok = False
        clocks = {}
        for key in ("from", "to"):
            text = table.get(key)
            if not isinstance(text, str) or not CLOCK.match(text):
                problem(index, key if key in table else None, f'`{key}` must be a time of day such as "02:00"')
                ok = False
            else:
                hours, minutes = text.split(":")
                clocks[key] = int(hours) * 60 + int(minutes)
        if ok and clocks["from"] == clocks["to"]:
            problem(index, "to", "`to` must differ from `from` (an empty window)")
            ok = False
        zone = table.get("timezone", "UTC")
        try:
            if not isinstance(zone, str) or not zone:
                raise ZoneInfoNotFoundError(zone)
            ZoneInfo(zone)
        except (ZoneInfoNotFoundError, ValueError):
            problem(index, "timezone", f'unknown time zone `{zone}`; expected an IANA name such as "Europe/Berlin"')
            ok = False
        match = table.get("match", {})
        if not isinstance(match, dict) or not all(isinstance(v, str | int) for v in match.values()):
            problem(index, "match", '`match` must be a table of names and values, e.g. match = { tenant = "acme" }')
            ok = False
        if ok:
            out.append(
                MaintenanceWindow(
                    name,
                    tuple(sorted({DAYS.index(d.lower()) for d in days})),
                    clocks["from"],
                    clocks["to"],
                    zone,
                    tuple(sorted((k, str(v)) for k, v in match.items())),
                )
            )
    return tuple(out), problems
