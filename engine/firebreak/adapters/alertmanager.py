"""The `alertmanager` notify target: incidents as Prometheus Alertmanager alerts (API v2).

    [targets."#ai-oncall"]
    kind = "alertmanager"
    url = "http://alertmanager:9093"        # the Alertmanager; alerts go to <url>/api/v2/alerts
    resend_s = 60                           # re-sent while open (default 60 s)

An incident is one alert (`POST /api/v2/alerts`, a JSON list). Its labels identify it and
route it: ``alertname`` = the rule, ``severity`` (sev1→critical, sev2→error, sev3→warning,
sev4→info), ``firebreak_severity`` (sev1..sev4), ``category``, the group's dimensions
(``model="gpt-4o"``; a name that is not a label name is rewritten, ``prompt.template`` →
``prompt_template``), ``incident_id`` and ``case_id`` when the record carries one. Its
annotations say what and why (``summary``, ``description``, ``value`` against ``threshold``,
``users_affected``, ``responders``, ``investigate``: the `firebreak investigate` command).

While an incident is open its alert has an ``endsAt`` in the future (``now + resend × 4``)
and is re-sent every ``resend_s`` (`AlertResends`), so Alertmanager keeps it firing as long as
notify runs and lets it lapse if notify is gone for good — the way Prometheus sends alerts.
An escalation changes the ``severity`` labels, which makes a new alert: the alert at the old
severity is ended (``endsAt`` = the escalation's time) in the same request. The resolution
sends the alert with ``endsAt`` = the resolution's time. Every request is the same for the
same record and an Alertmanager de-duplicates alerts by their labels, so a re-delivery is
harmless.
"""

from __future__ import annotations

import re
import time
from collections.abc import Mapping
from typing import Any

from firebreak.adapters.incident_text import investigate_command, responders, summary
from firebreak.core import format_ts, parse_ts
from firebreak.records import RecordKind, Severity

ALERTS_PATH = "/api/v2/alerts"
DEFAULT_RESEND_S = 60.0
LIFETIME_RESENDS = 4  # an open alert's endsAt: this many resend intervals ahead
SEVERITY = {Severity.SEV1: "critical", Severity.SEV2: "error", Severity.SEV3: "warning", Severity.SEV4: "info"}
RESERVED = {"alertname", "severity", "firebreak_severity", "category", "incident_id", "case_id"}
_LABEL = re.compile(r"[^a-zA-Z0-9_]")


def alerts_url(url: str) -> str:
    """The alerts endpoint of an Alertmanager given by its base URL (or by the endpoint itself)."""
    url = url.rstrip("/")
    return url if url.endswith(ALERTS_PATH) else url + ALERTS_PATH


def label_name(name: str) -> str:
    """A group dimension as a label name: [a-zA-Z_][a-zA-Z0-9_]*; a reserved name gets a ``group_`` prefix."""
    out = _LABEL.sub("_", str(name)) or "_"
    if out[0].isdigit():
        out = "_" + out
    if out in RESERVED or out.startswith("__"):
        out = "group_" + out.lstrip("_")
    return out


def _severity(name: Any) -> tuple[str, str]:
    try:
        severity = Severity.parse(name)
    except ValueError:
        return "error", str(name)
    return SEVERITY[severity], str(severity)


def labels(record: Mapping[str, Any], severity: Any = None) -> dict[str, str]:
    """The labels of a record's alert (``severity``: another than the record's, for an escalation's old alert)."""
    am, sev = _severity(record.get("severity") if severity is None else severity)
    out = {
        "alertname": str(record["rule"]),
        "severity": am,
        "firebreak_severity": sev,
        "category": str(record.get("category") or "other"),
        "incident_id": str(record["incident_id"]),
    }
    if record.get("case_id"):
        out["case_id"] = str(record["case_id"])
    for name, value in (record.get("group") or {}).items():
        out.setdefault(label_name(name), str(value))
    return out


def annotations(record: Mapping[str, Any], hint: str) -> dict[str, str]:
    out = {"summary": summary(record)}
    if record.get("why"):
        out["description"] = str(record["why"])
    if record.get("value") is not None:
        out["value"] = f"{record['value']} against limit {record.get('threshold')}"
    for key in ("threshold", "baseline", "users_affected", "window"):
        if record.get(key) is not None:
            out[key] = str(record[key])
    if responders(record):
        out["responders"] = responders(record)
    out["investigate"] = investigate_command(record, hint)
    return out


def alerts(
    record: Mapping[str, Any], hint: str, resend_s: float = DEFAULT_RESEND_S, now: float | None = None
) -> list[dict[str, Any]]:
    """The body of `POST /api/v2/alerts` for an incident record (opened, reopened, escalated, reminder, resolved)."""
    now = time.time() if now is None else now
    starts = record.get("onset") or record.get("opened_at") or record["ts"]
    if record["type"] == RecordKind.RESOLVED:
        ends = record["ts"]
    else:
        ends = format_ts(int((now + resend_s * LIFETIME_RESENDS) * 1000))
    if parse_ts(ends) < parse_ts(starts):
        ends = starts  # Alertmanager refuses an alert that ends before it starts
    alert = {"labels": labels(record), "annotations": annotations(record, hint), "startsAt": starts, "endsAt": ends}
    out = [alert]
    previous = record.get("previous_severity")
    if record["type"] == RecordKind.ESCALATED and previous and _severity(previous) != _severity(record["severity"]):
        ended = {
            "labels": labels(record, previous),
            "annotations": alert["annotations"],
            "startsAt": starts,
            "endsAt": max(record["ts"], starts, key=parse_ts),
        }
        out.insert(0, ended)
    return out


class AlertResends:
    """The open incidents whose alerts must be re-sent, and when: every ``resend_s`` (wall
    time, ``now`` in epoch seconds) after the last time they were sent. Resolution ends them."""

    def __init__(self) -> None:
        self.open: dict[str, tuple[dict[str, Any], float]] = {}  # incident id -> (last record, due)

    def track(self, record: Mapping[str, Any], now: float, resend_s: float) -> None:
        kind, incident = record.get("type"), record.get("incident_id")
        if kind == RecordKind.RESOLVED:
            self.open.pop(incident, None)
        elif kind in (RecordKind.OPENED, RecordKind.ESCALATED, RecordKind.REOPENED):  # a reopened incident fires again
            self.open[incident] = (dict(record), now + resend_s)

    def due(self, now: float, resend_s: float) -> list[dict[str, Any]]:
        out = []
        for incident, (record, due) in sorted(self.open.items()):
            if now >= due:
                out.append(record)
                self.open[incident] = (record, now + resend_s)
        return out


async def resend_open_alerts(deliverer: Any, resends: AlertResends, now: float) -> None:
    """Re-send the alerts of open incidents to the alertmanager targets that had them."""
    targets = [t for t in deliverer.config.targets.values() if t.kind == "alertmanager"]
    if not targets:
        return
    for record in resends.due(now, min(t.resend_s for t in targets)):
        paged = deliverer.paged.get(record["incident_id"], True)
        for target in deliverer.targets_of(record):
            if target.kind == "alertmanager" and (paged or not target.only_paged):
                await deliverer.deliver(target, record)  # one that fails is sent again at the next resend
