"""Pick one incident out of a replay's records and gather everything that belongs to it."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import orjson

from firebreak.core import parse_ts
from firebreak.dsl import CompiledRule
from firebreak.records import CONTAINMENT_KINDS, ContainmentCommand, IncidentRecord, RecordKind, Severity, kind_of


class IncidentNotFound(LookupError):
    """The selection matches no incident (or several): the message lists what there is."""


@dataclass(frozen=True)
class Selection:
    """``incident_id``; or ``rule`` with an optional ``group`` (field → value as text): the
    first incident of that rule (and group) in the range."""

    incident_id: str | None = None
    rule: str | None = None
    group: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class ContainmentStep:
    """One containment record of an incident: a command, its renewal or its release (a
    release names the command and its action only: no params, not held)."""

    kind: RecordKind
    command_id: str
    action: str
    ts: str
    params: dict[str, Any]
    hold: bool

    @staticmethod
    def from_json(data: dict[str, Any]) -> ContainmentStep:
        if data["type"] == RecordKind.RELEASE:
            return ContainmentStep(RecordKind.RELEASE, data["command_id"], data["action"], data["ts"], {}, False)
        c = ContainmentCommand.from_json(data)
        return ContainmentStep(RecordKind(data["type"]), c.command_id, c.action, c.ts, c.params, c.hold)


@dataclass(frozen=True)
class IncidentView:
    """One incident's records, typed: its opening, escalations, resolution and containment."""

    rule: CompiledRule
    opened: IncidentRecord
    escalations: tuple[IncidentRecord, ...]
    resolved: IncidentRecord | None
    commands: tuple[ContainmentStep, ...]  # in order

    @property
    def incident_id(self) -> str:
        return self.opened.incident_id

    @property
    def group(self) -> dict[str, Any]:
        return self.opened.group

    @property
    def latest(self) -> IncidentRecord:
        """The last record that set the severity: the last escalation, or the opening."""
        return self.escalations[-1] if self.escalations else self.opened

    @property
    def opened_ts(self) -> int:
        return parse_ts(self.opened.ts)

    @property
    def onset_ts(self) -> int:
        return parse_ts(self.opened.onset)

    @property
    def resolved_ts(self) -> int | None:
        return parse_ts(self.resolved.ts) if self.resolved else None

    @property
    def severity(self) -> Severity:
        """The final severity."""
        return self.latest.severity


def _group_text(group: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v}" for k, v in group.items()) or "(all)"


def list_incidents(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One line per opened incident: id, rule, group, opened, severity (final), resolved."""
    final: dict[str, str] = {}
    resolved: dict[str, str] = {}
    for r in records:
        if r["type"] == RecordKind.ESCALATED:
            final[r["incident_id"]] = r["severity"]
        elif r["type"] == RecordKind.RESOLVED:
            resolved[r["incident_id"]] = r["ts"]
    return [
        {
            "incident_id": r["incident_id"],
            "rule": r["rule"],
            "group": r["group"],
            "opened": r["ts"],
            "severity": final.get(r["incident_id"], r["severity"]),
            "resolved": resolved.get(r["incident_id"]),
        }
        for r in records
        if r["type"] == RecordKind.OPENED
    ]


def select(records: list[dict[str, Any]], rules: tuple[CompiledRule, ...], selection: Selection) -> IncidentView:
    opened = [r for r in records if r["type"] == RecordKind.OPENED]
    if selection.incident_id:
        chosen = [r for r in opened if r["incident_id"] == selection.incident_id]
        what = f"incident {selection.incident_id}"
    else:
        chosen = [r for r in opened if r["rule"] == selection.rule and _matches(r["group"], selection.group)]
        what = f"rule {selection.rule}" + (f" with {_group_text(selection.group)}" if selection.group else "")
    if not chosen:
        raise IncidentNotFound(f"no incident of {what} in this range" + _listing(opened))
    if len(chosen) > 1 and not selection.incident_id:
        groups = {orjson.dumps(r["group"], option=orjson.OPT_SORT_KEYS) for r in chosen}
        if len(groups) > 1:
            raise IncidentNotFound(f"{len(chosen)} incidents of {what}; pick one with --incident" + _listing(chosen))
    first = chosen[0]
    incident_id = first["incident_id"]
    rule = next((r for r in rules if r.name == first["rule"]), None)
    if rule is None:
        raise IncidentNotFound(f"rule {first['rule']} is not in the rules given")
    mine = [r for r in records if r.get("incident_id") == incident_id]
    resolved = next((r for r in mine if r["type"] == RecordKind.RESOLVED), None)
    return IncidentView(
        rule=rule,
        opened=IncidentRecord.from_json(first),
        escalations=tuple(IncidentRecord.from_json(r) for r in mine if r["type"] == RecordKind.ESCALATED),
        resolved=IncidentRecord.from_json(resolved) if resolved is not None else None,
        commands=tuple(ContainmentStep.from_json(r) for r in mine if kind_of(r) in CONTAINMENT_KINDS),
    )


def _matches(group: dict[str, Any], wanted: dict[str, str]) -> bool:
    return all(k in group and _text(group[k]) == v for k, v in wanted.items())


def _text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return "null" if value is None else str(value)


def _listing(opened: list[dict[str, Any]], limit: int = 20) -> str:
    if not opened:
        return "; the range has no incidents"
    lines = [f"  {r['incident_id']}  {r['ts']}  {r['rule']}  {_group_text(r['group'])}" for r in opened[:limit]]
    more = f"\n  ... and {len(opened) - limit} more" if len(opened) > limit else ""
    return ":\n" + "\n".join(lines) + more
