"""What the engine emits, as types: record kinds, severities, and the records themselves.

A leaf module (it imports nothing of engine): the rules language, the core, the adapters and
the SDK all speak these types.

Every record the core writes is built here, once, as a frozen value whose `to_json()` is the
wire form (docs/schemas/record.schema.json, key order included — replay and live give the same
bytes). Readers of records (checkpoints, topic replay, notify, backtest, investigate, the
SDK) route and compare by `RecordKind`, never by string prefix, and ask `stream_of` /
`record_key` where a record goes.

    kind_of(record) is RecordKind.OPENED            # record: the JSON object (a dict)
    stream_of(record) is Stream.INCIDENTS            # → the incidents topic
    Severity.parse("sev2") < Severity.SEV3           # sev1 is the most severe: it sorts first
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum, StrEnum
from typing import Any

import orjson


class Stream(StrEnum):
    """The two output streams (topics): incident lifecycle, and containment commands."""

    INCIDENTS = "incidents"
    CONTAINMENT = "containment"


class RecordKind(StrEnum):
    """A record's ``type``. A StrEnum: it equals its wire string (``RecordKind.OPENED ==
    "incident.opened"``), so it can be compared with a decoded record's ``type`` directly."""

    OPENED = "incident.opened"
    ESCALATED = "incident.escalated"
    RESOLVED = "incident.resolved"
    REOPENED = "incident.reopened"  # the same incident, open again within its cool-down (flapping)
    COMMAND = "containment.command"
    RENEWED = "containment.renewed"
    RELEASE = "containment.release"
    # cases: the incidents of one problem (engine/firebreak/core/cases.py), on the incidents stream
    CASE_OPENED = "case.opened"
    CASE_UPDATED = "case.updated"
    CASE_RESOLVED = "case.resolved"

    @property
    def stream(self) -> Stream:
        return Stream.CONTAINMENT if self in CONTAINMENT_KINDS else Stream.INCIDENTS

    @property
    def is_incident(self) -> bool:
        return self in INCIDENT_KINDS


INCIDENT_KINDS = frozenset({RecordKind.OPENED, RecordKind.ESCALATED, RecordKind.RESOLVED, RecordKind.REOPENED})
CONTAINMENT_KINDS = frozenset({RecordKind.COMMAND, RecordKind.RENEWED, RecordKind.RELEASE})
CASE_KINDS = frozenset({RecordKind.CASE_OPENED, RecordKind.CASE_UPDATED, RecordKind.CASE_RESOLVED})


class Severity(IntEnum):
    """sev1 (most severe) .. sev4. Orders as its number: a *smaller* severity is *more* severe
    (``Severity.SEV1 < Severity.SEV2``); `more_severe` says it in words."""

    SEV1 = 1
    SEV2 = 2
    SEV3 = 3
    SEV4 = 4

    @classmethod
    def parse(cls, text: str) -> Severity:
        """``"sev2"`` → SEV2; ValueError for anything else."""
        if not (isinstance(text, str) and text.startswith("sev") and text[3:].isdigit()):
            raise ValueError(f"not a severity: {text!r}; expected sev1..sev4")
        return cls(int(text[3:]))

    def more_severe(self, other: Severity | int) -> bool:
        return self < other

    def __str__(self) -> str:
        return f"sev{self.value}"


SEVERITY_NAMES = tuple(str(s) for s in Severity)


def kind_of(record: dict[str, Any]) -> RecordKind:
    """The kind of a record read back (a dict); ValueError for a type the engine never writes."""
    return RecordKind(record["type"])


def is_incident(record: dict[str, Any]) -> bool:
    return record.get("type") in _INCIDENT_TYPES


def stream_of(record: dict[str, Any]) -> Stream:
    return Stream.CONTAINMENT if record["type"] in _CONTAINMENT_TYPES else Stream.INCIDENTS


def record_key(record: dict[str, Any]) -> bytes:
    """The Kafka key of a record: its incident id (one incident's records stay in order on one
    partition), or for containment its target as canonical JSON (one target's commands in order)."""
    if record["type"] in _INCIDENT_TYPES:
        return record["incident_id"].encode()
    if record["type"] in _CASE_TYPES:
        return record["case_id"].encode()
    return orjson.dumps(record["target"], option=orjson.OPT_SORT_KEYS)


_INCIDENT_TYPES = frozenset(k.value for k in INCIDENT_KINDS)
_CONTAINMENT_TYPES = frozenset(k.value for k in CONTAINMENT_KINDS)
_CASE_TYPES = frozenset(k.value for k in CASE_KINDS)


# ---- the records the core writes ---------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ContainmentCommand:
    """``containment.command``: apply an action to a target until ``expires_at`` (null: held)."""

    command_id: str
    incident_id: str
    rule: str
    action: str
    target: dict[str, Any]
    params: dict[str, Any]
    ts: str
    expires_at: str | None
    hold: bool

    def to_json(self, kind: RecordKind = RecordKind.COMMAND) -> dict[str, Any]:
        return {
            "type": kind.value,
            "command_id": self.command_id,
            "incident_id": self.incident_id,
            "rule": self.rule,
            "action": self.action,
            "target": self.target,
            "params": self.params,
            "ts": self.ts,
            "expires_at": self.expires_at,
            "hold": self.hold,
        }

    def renewed(self, ts: str, expires_at: str) -> dict[str, Any]:
        """``containment.renewed``: the same command, a later expiry."""
        return ContainmentCommand(
            self.command_id,
            self.incident_id,
            self.rule,
            self.action,
            self.target,
            self.params,
            ts,
            expires_at,
            self.hold,
        ).to_json(RecordKind.RENEWED)

    def released(self, ts: str) -> dict[str, Any]:
        """``containment.release``: undo the action (held commands are never released by the engine)."""
        return {
            "type": RecordKind.RELEASE.value,
            "command_id": self.command_id,
            "incident_id": self.incident_id,
            "rule": self.rule,
            "action": self.action,
            "target": self.target,
            "ts": ts,
        }

    @staticmethod
    def from_json(data: dict[str, Any]) -> ContainmentCommand:
        """A command or a renewal read back (a release is not a command: it has no params,
        expiry or hold)."""
        return ContainmentCommand(
            data["command_id"],
            data["incident_id"],
            data["rule"],
            data["action"],
            data["target"],
            data["params"],
            data["ts"],
            data["expires_at"],
            data["hold"],
        )


@dataclass(frozen=True, slots=True)
class IncidentRecord:
    """``incident.opened`` / ``escalated`` / ``resolved``: one step of an incident's lifecycle.
    The fields after ``why`` belong to some kinds only and are written when set."""

    kind: RecordKind
    incident_id: str
    rule: str
    category: str
    severity: Severity
    group: dict[str, Any]
    ts: str
    onset: str
    window: dict[str, str]
    value: float | None
    baseline: float | None
    threshold: float | None
    events: int
    sample: int
    users_affected: int
    evidence: list[str]
    notify: list[str]
    why: str
    response: dict[str, Any] | None = None  # opened, escalated: who responds at this severity
    significance: dict[str, Any] | None = None  # rules `with C% confidence`
    previous_severity: Severity | None = None  # escalated
    reason: str | None = None  # escalated: sensitivity | impact | urgency
    opened_at: str | None = None  # resolved, reopened
    duration_s: int | None = None  # resolved
    peak: float | None = None  # resolved
    held_commands: list[str] | None = None  # resolved
    resolved_at: str | None = None  # reopened: when it had resolved
    case_id: str | None = None  # the case it belongs to (core/cases.py), when cases are formed
    # {dimension: value} more than half its evidence events share, for the case dimensions its
    # group lacks (CompiledRule.scope_dimensions); only for rules with such dimensions
    evidence_scope: dict[str, str] | None = None

    @staticmethod
    def from_json(data: dict[str, Any]) -> IncidentRecord:
        """A record read back; ``to_json`` of the result gives the same record."""
        previous = data.get("previous_severity")
        return IncidentRecord(
            RecordKind(data["type"]),
            data["incident_id"],
            data["rule"],
            data["category"],
            Severity.parse(data["severity"]),
            data["group"],
            data["ts"],
            data["onset"],
            data["window"],
            data["value"],
            data["baseline"],
            data["threshold"],
            data["events"],
            data["sample"],
            data["users_affected"],
            data["evidence"],
            data["notify"],
            data["why"],
            response=data.get("response"),
            significance=data.get("significance"),
            previous_severity=Severity.parse(previous) if previous is not None else None,
            reason=data.get("reason"),
            opened_at=data.get("opened_at"),
            duration_s=data.get("duration_s"),
            peak=data.get("peak"),
            held_commands=data.get("held_commands"),
            resolved_at=data.get("resolved_at"),
            case_id=data.get("case_id"),
            evidence_scope=data.get("evidence_scope"),
        )

    def to_json(self) -> dict[str, Any]:
        record = {
            "type": self.kind.value,
            "incident_id": self.incident_id,
            "rule": self.rule,
            "category": self.category,
            "severity": str(self.severity),
            "group": self.group,
            "ts": self.ts,
            "onset": self.onset,
            "window": self.window,
            "value": self.value,
            "baseline": self.baseline,
            "threshold": self.threshold,
            "events": self.events,
            "sample": self.sample,
            "users_affected": self.users_affected,
            "evidence": self.evidence,
            "notify": self.notify,
            "why": self.why,
        }
        if self.response is not None:
            record["response"] = self.response
        if self.significance is not None:
            record["significance"] = self.significance
        if self.evidence_scope is not None:
            record["evidence_scope"] = self.evidence_scope
        if self.kind is RecordKind.ESCALATED:
            record["previous_severity"] = str(self.previous_severity)
            record["reason"] = self.reason
        elif self.kind is RecordKind.RESOLVED:
            record["opened_at"] = self.opened_at
            record["duration_s"] = self.duration_s
            record["peak"] = self.peak
            record["held_commands"] = self.held_commands
        elif self.kind is RecordKind.REOPENED:
            record["opened_at"] = self.opened_at
            record["resolved_at"] = self.resolved_at
        if self.case_id is not None:
            record["case_id"] = self.case_id
        return record
