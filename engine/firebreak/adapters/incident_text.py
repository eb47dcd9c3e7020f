"""An incident record in words, as every notify target shows it: the one-line summary, who
responds, the `firebreak investigate` command to run. Shared by notify.py and alertmanager.py
(here, so that neither imports the other)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from firebreak.core import format_ts, parse_ts
from firebreak.core.events import format_duration
from firebreak.records import RecordKind

REMINDER = "incident.reminder"  # not a record of the engine: notify's own, while an incident stays open


def summary(record: Mapping[str, Any]) -> str:
    group = ", ".join(f"{k}={v}" for k, v in record.get("group", {}).items()) or "all traffic"
    verb = {
        RecordKind.OPENED: "opened",
        RecordKind.ESCALATED: "escalated",
        RecordKind.RESOLVED: "resolved",
        RecordKind.REOPENED: "reopened",
        REMINDER: "still open",
    }
    return f"[{record['severity']}] {record['rule']} {verb[record['type']]} for {group}"


def responders(record: Mapping[str, Any]) -> str:
    """``security-oncall (paged), status update every 30m``: who responds, from the policy."""
    response = record.get("response")
    if not response:
        return ""
    how = "paged" if response.get("page") else "ticket"
    return f"{response.get('team')} ({how}), status update every {format_duration(int(response['update_every_ms']))}"


def investigate_command(record: Mapping[str, Any], hint: str) -> str:
    onset = parse_ts(record.get("onset") or record["ts"])
    since = onset - 2 * 3_600_000
    until = parse_ts(record["ts"]) + 15 * 60_000
    return f"{hint} --since {format_ts(since)} --until {format_ts(until)} --incident {record['incident_id']}"
