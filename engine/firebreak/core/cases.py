"""Cases: the incidents of one problem, paged once (docs/response.md#cases).

Downstream of an engine's records (either engine: it reads only records), pure and bounded:

    book = CaseBook(rules[0].grouping)                  # the policy's [grouping]
    for record in engine_records:
        out += book.process(record)                     # the record (naming its case), case records

An incident joins a case of its category that shares its scope — a (dimension, value) of
the category's ``by`` list, taken from the incident's group or else from the record's
``evidence_scope`` (the value its evidence concentrates in, which the engine that saw its
events writes: core/window.py ``evidence_scope``) — while the case is open
or resolved less than ``window`` ago; otherwise it opens a case. With ``inhibit``, an
incident less severe than an open sev1 case on its scope (any category) joins that case
without paging; should it reach sev1 itself, it leaves for a case of its own.

Records: ``case.opened``, ``case.updated`` (reason ``joined``, ``inhibited``, ``severity``,
``reopened``), ``case.resolved`` (its last incident resolved); each says whether it
``page``s. A page is a case opening, or reopening after it resolved, at a severity whose
response pages; or a severity rise that pages a team not yet paged for the case or comes
``wait`` or more after the case's last page (before that, the page already out is updated).
Every incident record passed on carries ``case_id``.

With ``group_wait`` (Alertmanager's), a new case's ``case.opened`` — its first page — is held
that long in event time: incidents that join meanwhile, and severity rises, are folded into it
(no records of their own). It leaves with the first record at or after its due time (stamped
with that time), at ``advance(t)`` for t past it (the live case stage: its shards' committed
watermark), at ``finish()``, or early, when the case's last incident resolves before it.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from firebreak.core.events import format_ts, parse_ts
from firebreak.core.incidents import canonical_group
from firebreak.dsl.grouping import Grouping
from firebreak.durations import format_duration
from firebreak.records import RecordKind, Severity

Pair = tuple[str, Any]  # (dimension, value): a scope


@dataclass(slots=True)
class Member:
    rule: str
    severity: int
    open: bool = True
    inhibited: bool = False  # joined a sev1 case of its scope without paging


@dataclass(slots=True)
class Case:
    case_id: str
    category: str
    scope: dict[str, Any]
    opened_at: int
    severity: int
    response: dict[str, Any] | None
    members: dict[str, Member] = field(default_factory=dict)
    paged_teams: list[str] = field(default_factory=list)
    last_page: int | None = None
    pages: int = 0
    resolved_at: int | None = None
    # group_wait: its case.opened, held until ``due`` (the first incident, and why it opened)
    held: dict[str, Any] | None = None

    @property
    def pair(self) -> Pair:
        [(dim, value)] = self.scope.items() if len(self.scope) == 1 else [("", canonical_group(self.scope))]
        return dim, value

    def to_json(self) -> dict[str, Any]:
        return {
            "case_id": self.case_id,
            "category": self.category,
            "scope": self.scope,
            "opened_at": self.opened_at,
            "severity": self.severity,
            "response": self.response,
            "members": {i: [m.rule, m.severity, m.open, m.inhibited] for i, m in self.members.items()},
            "paged_teams": list(self.paged_teams),
            "last_page": self.last_page,
            "pages": self.pages,
            "resolved_at": self.resolved_at,
            "held": self.held,
        }

    @staticmethod
    def from_json(data: dict[str, Any]) -> Case:
        members = {i: Member(*m) for i, m in data["members"].items()}
        return Case(**{**data, "members": members, "paged_teams": list(data["paged_teams"])})


class CaseBook:
    """Every case still taking incidents, and which incident is in which."""

    def __init__(self, grouping: Grouping) -> None:
        self.grouping = grouping
        self.cases: dict[str, Case] = {}
        self.of_incident: dict[str, str] = {}
        self.stats: Counter[str] = Counter()  # incidents, cases, pages, grouped, inhibited, updates

    @classmethod
    def for_rules(cls, rules: Sequence[Any]) -> CaseBook:
        from firebreak.dsl.grouping import DEFAULT_GROUPING

        return cls(rules[0].grouping if rules else DEFAULT_GROUPING)

    # ---- records in, records out ------------------------------------------------------

    def process(self, record: dict[str, Any]) -> list[dict[str, Any]]:
        kind = record.get("type")
        if kind not in _INCIDENT_TYPES:
            return [record]
        at = parse_ts(record["ts"])
        due = self.advance(at)  # held first pages (group_wait) that came due before this record
        self._expire(at)
        incident_id = record["incident_id"]
        case = self.cases.get(self.of_incident.get(incident_id, ""))
        out: list[dict[str, Any]] = []
        if kind == RecordKind.OPENED or case is None:
            if kind == RecordKind.OPENED:
                self.stats["incidents"] += 1
            case = self._place(record, at, out, inhibit=True)
        elif kind == RecordKind.ESCALATED:
            case = self._escalated(case, record, at, out)
        elif kind == RecordKind.REOPENED:
            member = case.members[incident_id]
            member.open = True
            if case.resolved_at is not None:
                case.resolved_at = None
                self._raise(case, record, at, out, "reopened", force=True)
        elif kind == RecordKind.RESOLVED:
            case.members[incident_id].open = False
            if not any(m.open for m in case.members.values()):
                if case.held is not None:  # resolved within group_wait: its page goes out now
                    self._release(case, at, out)
                case.resolved_at = at
                out.append(
                    self._record(
                        RecordKind.CASE_RESOLVED,
                        case,
                        record,
                        at,
                        opened_at=format_ts(case.opened_at),
                        duration_s=(at - case.opened_at) // 1000,
                        incidents=sorted(case.members),
                        pages=case.pages,
                    )
                )
        return [*due, {**record, "case_id": case.case_id}, *out]

    def advance(self, at: int) -> list[dict[str, Any]]:
        """The held first pages (group_wait) due at or before ``at``, oldest due first."""
        held = sorted(
            (c.held["due"], n, c)
            for n, c in enumerate(self.cases.values())
            if c.held is not None and c.held["due"] <= at
        )
        out: list[dict[str, Any]] = []
        for due, _, case in held:
            self._release(case, due, out)
        return out

    def finish(self) -> list[dict[str, Any]]:
        """Every held first page, at its due time: the end of a replay."""
        return self.advance(2**62)

    def _release(self, case: Case, at: int, out: list) -> None:
        """The held case.opened leaves: as the case stands now (severity, incidents), paging if
        its response pages."""
        held, case.held = case.held, None
        page = bool(case.response and case.response.get("page"))
        if page:
            self._paged(case, at)
        joined = len(case.members) - 1
        why = (
            f"{held['why']}; its page waited {format_duration(self.grouping.group_wait_ms)} (group_wait) "
            f"for incidents that join: {joined} joined"
        )
        out.append(self._record(RecordKind.CASE_OPENED, case, held, at, page=page, why=why))

    # ---- placing an incident ---------------------------------------------------------------

    def scope_pairs(self, record: dict[str, Any]) -> list[Pair]:
        """The incident's candidate scopes, in its category's order: the group's value of each
        dimension, else the value its evidence concentrates in (the record's ``evidence_scope``)."""
        group = record.get("group") or {}
        evidence = record.get("evidence_scope") or {}
        pairs = []
        for dim in self.grouping.dimensions(record["category"]):
            value = group.get(dim)
            if value is None:
                value = evidence.get(dim)
            if value is not None:
                pairs.append((dim, value))
        return pairs

    def _place(self, record: dict, at: int, out: list, inhibit: bool) -> Case:
        category, incident_id = record["category"], record["incident_id"]
        severity = int(Severity.parse(record["severity"]))
        pairs = self.scope_pairs(record)
        for case in self._taking(at):
            if case.category == category and case.pair in pairs:
                self._join(case, record, at, out, severity, inhibited=False)
                return case
        if inhibit and self.grouping.inhibit and severity > Severity.SEV1:
            for case in self._taking(at):
                if case.resolved_at is None and case.severity == Severity.SEV1 and case.pair in pairs:
                    self._join(case, record, at, out, severity, inhibited=True)
                    return case
        scope = dict([pairs[0]]) if pairs else dict(record.get("group") or {})
        text = canonical_group(scope)
        case_id = "case_" + hashlib.sha256(f"{category}|{text}|{record['ts']}|{incident_id}".encode()).hexdigest()[:16]
        case = Case(case_id, category, scope, at, severity, record.get("response"))
        case.members[incident_id] = Member(record["rule"], severity)
        self.cases[case_id] = case
        self.of_incident[incident_id] = case_id
        self.stats["cases"] += 1
        if self.grouping.group_wait_ms > 0:  # its first page waits for incidents that join
            case.held = {
                "due": at + self.grouping.group_wait_ms,
                "incident_id": incident_id,
                "rule": record["rule"],
                "notify": list(record.get("notify") or ()),
                "why": self._why_opened(record, pairs),
            }
            return case
        page = bool(case.response and case.response.get("page"))
        if page:
            self._paged(case, at)
        out.append(
            self._record(RecordKind.CASE_OPENED, case, record, at, page=page, why=self._why_opened(record, pairs))
        )
        return case

    def _join(self, case: Case, record: dict, at: int, out: list, severity: int, inhibited: bool) -> None:
        incident_id = record["incident_id"]
        case.members[incident_id] = Member(record["rule"], severity, inhibited=inhibited)
        self.of_incident[incident_id] = case.case_id
        if case.held is not None:  # folded into the held first page (group_wait): no record of its own
            self.stats["inhibited" if inhibited else "grouped"] += 1
            if severity < case.severity and not inhibited:
                case.severity, case.response = severity, record.get("response") or case.response
            return
        if inhibited:
            self.stats["inhibited"] += 1
            why = (
                f"{record['rule']} ({_scope_text(record.get('group') or {})}, {record['severity']}) is muted by "
                f"this open sev1 case on {_scope_text(case.scope)}"
            )
            out.append(self._record(RecordKind.CASE_UPDATED, case, record, at, reason="inhibited", page=False, why=why))
            return
        reopened = case.resolved_at is not None
        case.resolved_at = None
        if severity < case.severity or reopened:
            self._raise(case, record, at, out, "reopened" if reopened else "severity", force=reopened, joined=True)
            return
        self.stats["grouped"] += 1
        why = f"{record['rule']} ({_scope_text(record.get('group') or {})}) joins the case on {_scope_text(case.scope)}"
        out.append(self._record(RecordKind.CASE_UPDATED, case, record, at, reason="joined", page=False, why=why))

    def _escalated(self, case: Case, record: dict, at: int, out: list) -> Case:
        incident_id = record["incident_id"]
        member = case.members[incident_id]
        member.severity = int(Severity.parse(record["severity"]))
        if member.inhibited and member.severity == Severity.SEV1:
            # severe in its own right: it leaves the case that muted it, for one of its own
            del case.members[incident_id]
            del self.of_incident[incident_id]
            return self._place(record, at, out, inhibit=False)
        if member.severity < case.severity and not member.inhibited:
            if case.held is not None:  # the held first page will say it
                case.severity, case.response = member.severity, record.get("response") or case.response
            else:
                self._raise(case, record, at, out, "severity")
        return case

    def _raise(
        self, case: Case, record: dict, at: int, out: list, reason: str, force: bool = False, joined: bool = False
    ) -> None:
        """The case's severity rises to the incident's (or it reopens, ``force``): a page when
        the new response pages a team not yet paged for it, or ``wait`` after its last page."""
        previous = case.severity
        severity = min(case.severity, int(Severity.parse(record["severity"])))
        if severity < case.severity or force:
            case.severity = severity
            case.response = record.get("response") or case.response
        response = case.response or {}
        page = bool(response.get("page")) and (
            reason == "reopened"  # the problem is back after the all-clear
            or response.get("team") not in case.paged_teams
            or case.last_page is None
            or at - case.last_page >= self.grouping.wait_ms
        )
        if page:
            self._paged(case, at)
        else:
            self.stats["updates"] += 1
        if joined and not page:
            self.stats["grouped"] += 1
        verb = "reopens" if reason == "reopened" else f"rises to sev{case.severity}"
        why = f"the case {verb}: {record['rule']} ({_scope_text(record.get('group') or {})}, {record['severity']})"
        if not page and response.get("page"):
            why += f"; {response.get('team')} was paged for it at {format_ts(case.last_page)}: an update, not a page"
        out.append(
            self._record(
                RecordKind.CASE_UPDATED,
                case,
                record,
                at,
                reason=reason,
                page=page,
                previous_severity=f"sev{previous}",
                why=why,
            )
        )

    def _paged(self, case: Case, at: int) -> None:
        team = (case.response or {}).get("team")
        if team not in case.paged_teams:
            case.paged_teams.append(team)
        case.last_page = at
        case.pages += 1
        self.stats["pages"] += 1

    def _taking(self, at: int) -> list[Case]:
        """The cases that take incidents at ``at``, oldest first."""
        window = self.grouping.window_ms
        return [c for c in self.cases.values() if c.resolved_at is None or at - c.resolved_at <= window]

    def _expire(self, at: int) -> None:
        window = self.grouping.window_ms
        for case_id in [i for i, c in self.cases.items() if c.resolved_at is not None and at - c.resolved_at > window]:
            for incident_id in self.cases.pop(case_id).members:
                self.of_incident.pop(incident_id, None)

    # ---- records ------------------------------------------------------------------------------

    def _record(self, kind: RecordKind, case: Case, record: dict, at: int, **extra: Any) -> dict[str, Any]:
        out = {
            "type": kind.value,
            "case_id": case.case_id,
            "category": case.category,
            "scope": case.scope,
            "severity": f"sev{case.severity}",
            "ts": format_ts(at),
            "incident_id": record["incident_id"],
            "rule": record["rule"],
            "incidents": sum(1 for m in case.members.values() if m.open),
            "notify": list(record.get("notify") or ()),
        }
        if kind is not RecordKind.CASE_RESOLVED:
            out["response"] = case.response
        out.update(extra)
        return out

    def _why_opened(self, record: dict, pairs: list[Pair]) -> str:
        rule = record["rule"]
        if not pairs:
            return f"{rule} opened it; no scope ({', '.join(self.grouping.dimensions(record['category']))}) known"
        return f"{rule} opened it on {_scope_text(dict(pairs))}; the case is on {_scope_text(dict([pairs[0]]))}"

    # ---- state ----------------------------------------------------------------------------------

    def snapshot(self) -> dict[str, Any]:
        return {"cases": [c.to_json() for c in self.cases.values()], "stats": dict(sorted(self.stats.items()))}

    @classmethod
    def restore(cls, grouping: Grouping, snapshot: dict[str, Any]) -> CaseBook:
        book = cls(grouping)
        for data in snapshot["cases"]:
            case = Case.from_json(data)
            book.cases[case.case_id] = case
            for incident_id in case.members:
                book.of_incident[incident_id] = case.case_id
        book.stats.update(snapshot["stats"])
        return book


def _scope_text(scope: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v}" for k, v in scope.items()) or "no group"


_INCIDENT_TYPES = frozenset(
    k.value for k in (RecordKind.OPENED, RecordKind.ESCALATED, RecordKind.RESOLVED, RecordKind.REOPENED)
)
