"""`firebreak notify`: incident records to responders' tools (docs/notify.md).

A config file maps each `notify` target name of the rules to a destination:

    [targets."#ai-oncall"]
    kind = "pagerduty"                  # pagerduty | slack | webhook
    url = "https://events.pagerduty.com/v2/enqueue"
    routing_key_env = "PD_ROUTING_KEY"  # secrets only from the environment, never printed

The payloads are pure functions of a record (`pagerduty_event`, `slack_message`,
`webhook_body`); `Deliverer` posts them with retries: 5xx, timeouts and refused connections
are retried with backoff, 4xx are not (the body is logged). Every request carries an
idempotency key (PagerDuty: the `dedup_key` = incident id), so at-least-once delivery —
what a crash between delivering and committing gives — is safe for the receiver.

Incident records carry the response policy's ``response`` (team, page, update cadence).
Every message names the responders; a PagerDuty target with ``only_paged = true`` gets only
the incidents the policy pages for; and while an incident stays open, following a topic,
`Reminders` sends a status-update reminder every ``update_every_ms`` of wall time.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
import tomllib
from collections import Counter
from collections.abc import AsyncIterator, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson

from firebreak.adapters.incident_text import REMINDER, investigate_command, responders, summary
from firebreak.core import format_ts, parse_ts
from firebreak.core.events import format_duration
from firebreak.core.silences import ACKNOWLEDGED, CONTROL_TYPES, ControlError, SilenceBook
from firebreak.records import RecordKind, Severity

log = logging.getLogger("firebreak.notify")

KINDS = ("pagerduty", "slack", "webhook", "alertmanager", "slack_bot")  # alertmanager: adapters/alertmanager.py
SLACK_POST_MESSAGE = "https://slack.com/api/chat.postMessage"  # slack_bot: one thread per case
INCIDENT_TYPES = tuple(
    k.value for k in (RecordKind.OPENED, RecordKind.ESCALATED, RecordKind.RESOLVED, RecordKind.REOPENED)
)
# Cases (docs/response.md#cases): when incident records name a case, PagerDuty pages per case —
# one dedup_key per case — and the incidents go to the other targets only.
CASE_TYPES = tuple(k.value for k in (RecordKind.CASE_OPENED, RecordKind.CASE_UPDATED, RecordKind.CASE_RESOLVED))
PD_SEVERITY = {Severity.SEV1: "critical", Severity.SEV2: "error", Severity.SEV3: "warning", Severity.SEV4: "info"}
MAX_BACKOFF_S = 30.0


class NotifyConfigError(ValueError):
    """A bad notify config: one line, `path:line: message` where the line is known."""


@dataclass(frozen=True)
class Secret:
    value: str = field(repr=False)

    def __str__(self) -> str:
        return "'***'"


@dataclass(frozen=True)
class Target:
    name: str
    kind: str
    url: Secret  # a Slack webhook URL is a secret; PagerDuty's is not, but is treated alike
    routing_key: Secret | None = None
    timeout_s: float = 10.0
    retries: int = 5  # after the first attempt, for 5xx / timeouts / refused connections
    backoff_s: float = 0.5  # doubled after each retry, at most 30 s
    only_paged: bool = False  # only incidents whose response policy pages (response.page)
    resend_s: float = 60.0  # alertmanager: open incidents' alerts re-sent this often
    token: Secret | None = None  # slack_bot: the bot token (xoxb-…), from the environment
    channel: str = ""  # slack_bot: the channel its case threads start in


@dataclass(frozen=True)
class NotifyConfig:
    targets: dict[str, Target]
    default_targets: tuple[str, ...] = ()  # for incidents whose rule names no `notify` target
    investigate_hint: str = "firebreak investigate --rules rules/ --topic ai.inference.events"


def load_notify_config(path: str, env: Mapping[str, str] | None = None) -> NotifyConfig:
    env = os.environ if env is None else env
    try:
        with open(path, "rb") as file:
            data = tomllib.load(file)
    except FileNotFoundError:
        raise NotifyConfigError(f"{path}: no such file") from None
    except tomllib.TOMLDecodeError as error:
        raise NotifyConfigError(f"{path}: {error}") from None
    except OSError as error:
        raise NotifyConfigError(f"{path}: cannot be read ({error.strerror})") from None
    unknown = set(data) - {"targets", "default_targets", "investigate_hint"}
    if unknown:
        raise NotifyConfigError(
            f"{path}: unknown setting {sorted(unknown)[0]!r} (known: targets, default_targets, investigate_hint)"
        )
    targets = {}
    for name, spec in (data.get("targets") or {}).items():
        targets[name] = _target(path, name, spec, env)
    defaults = tuple(data.get("default_targets") or ())
    for name in defaults:
        if name not in targets:
            raise NotifyConfigError(f"{path}: default_targets names {name!r}, which is not a [targets.{name!r}]")
    hint = data.get("investigate_hint", NotifyConfig.investigate_hint)
    return NotifyConfig(targets, defaults, str(hint))


def _target(path: str, name: str, spec: Any, env: Mapping[str, str]) -> Target:
    where = f"{path}: [targets.{orjson.dumps(name).decode()}]"
    if not isinstance(spec, dict):
        raise NotifyConfigError(f"{where} must be a table")
    known = {
        "kind",
        "url",
        "url_env",
        "routing_key_env",
        "timeout_s",
        "retries",
        "backoff_s",
        "only_paged",
        "resend_s",
        "token_env",
        "channel",
    }
    extra = set(spec) - known
    if extra:
        raise NotifyConfigError(f"{where}: unknown key {sorted(extra)[0]!r} (known: {', '.join(sorted(known))})")
    kind = spec.get("kind")
    if kind not in KINDS:
        raise NotifyConfigError(f"{where}: kind must be one of {', '.join(KINDS)}, not {kind!r}")
    if kind == "slack_bot" and "url" not in spec and "url_env" not in spec:
        spec = {**spec, "url": SLACK_POST_MESSAGE}
    if ("url" in spec) == ("url_env" in spec):
        raise NotifyConfigError(f"{where}: give url, or url_env naming the variable that holds it (one of them)")
    url = spec.get("url") or _from_env(where, spec["url_env"], env)
    if not str(url).startswith(("http://", "https://")):
        raise NotifyConfigError(f"{where}: the url must start with http:// or https://")
    routing_key = None
    if kind == "pagerduty":
        if "routing_key_env" not in spec:
            raise NotifyConfigError(
                f"{where}: a pagerduty target needs routing_key_env (the variable holding the "
                f"integration's routing key)"
            )
        routing_key = Secret(_from_env(where, spec["routing_key_env"], env))
    try:
        timeout, retries = float(spec.get("timeout_s", 10)), int(spec.get("retries", 5))
        backoff = float(spec.get("backoff_s", 0.5))
    except (TypeError, ValueError):
        raise NotifyConfigError(f"{where}: timeout_s, retries and backoff_s are numbers") from None
    only_paged = spec.get("only_paged", False)
    if not isinstance(only_paged, bool):
        raise NotifyConfigError(f"{where}: only_paged is true or false")
    resend = spec.get("resend_s", 60.0)
    if kind == "alertmanager":
        from firebreak.adapters.alertmanager import alerts_url

        url = alerts_url(str(url))
        if not isinstance(resend, int | float) or isinstance(resend, bool) or resend <= 0:
            raise NotifyConfigError(f"{where}: resend_s is a number of seconds > 0")
    elif "resend_s" in spec:
        raise NotifyConfigError(f"{where}: resend_s is for alertmanager targets")
    token, channel = None, ""
    if kind == "slack_bot":
        if "token_env" not in spec:
            raise NotifyConfigError(f"{where}: a slack_bot target needs token_env (the variable holding the bot token)")
        token = Secret(_from_env(where, spec["token_env"], env))
        channel = spec.get("channel")
        if not isinstance(channel, str) or not channel:
            raise NotifyConfigError(f"{where}: a slack_bot target needs channel (a channel id or #name)")
    elif "token_env" in spec or "channel" in spec:
        raise NotifyConfigError(f"{where}: token_env and channel are for slack_bot targets")
    return Target(
        name, kind, Secret(str(url)), routing_key, timeout, retries, backoff, only_paged, float(resend), token, channel
    )


def _from_env(where: str, variable: Any, env: Mapping[str, str]) -> str:
    if not isinstance(variable, str) or not variable:
        raise NotifyConfigError(f"{where}: the *_env settings name an environment variable")
    value = env.get(variable)
    if not value:
        raise NotifyConfigError(f"{where}: the environment variable {variable} is not set")
    return value


# ---- payloads (pure) ------------------------------------------------------------------------


def idempotency_key(record: Mapping[str, Any]) -> str:
    if record["type"] == ACKNOWLEDGED:
        return f"{record['case_id']}:acknowledge"
    if record["type"] == REMINDER:
        return f"{record['incident_id']}:reminder:{record['slot']}"
    if record["type"] in CASE_TYPES:
        return f"{record['case_id']}:{record['type']}:{record.get('reason', '')}:{record['incident_id']}:{record['ts']}"
    return f"{record['incident_id']}:{record['type']}:{record['ts']}"


def pagerduty_event(
    record: Mapping[str, Any], routing_key: str, hint: str = NotifyConfig.investigate_hint
) -> dict[str, Any]:
    """Events API v2: trigger on open and on escalation (the new severity), resolve on resolution;
    for a case record, the same with the case id as dedup_key."""
    if record["type"] in CASE_TYPES:
        return pagerduty_case_event(record, routing_key)
    if record["type"] == ACKNOWLEDGED:  # `firebreak ack`: escalation stops, the alert stays open
        return {"routing_key": routing_key, "event_action": "acknowledge", "dedup_key": record["case_id"]}
    if record["type"] == RecordKind.RESOLVED:
        return {"routing_key": routing_key, "event_action": "resolve", "dedup_key": record["incident_id"]}
    details = {
        k: record.get(k)
        for k in (
            "value",
            "threshold",
            "baseline",
            "users_affected",
            "events",
            "why",
            "window",
            "previous_severity",
            "response",
            "reminder",
        )
        if record.get(k) is not None
    }
    details["investigate"] = investigate_command(record, hint)
    return {
        "routing_key": routing_key,
        "event_action": "trigger",
        "dedup_key": record["incident_id"],
        "payload": {
            "summary": summary(record)[:1024],
            "source": f"firebreak/{record['rule']}",
            "severity": _pd_severity(record["severity"]),
            "timestamp": record["ts"],
            "component": ", ".join(f"{k}={v}" for k, v in record.get("group", {}).items()) or "all",
            "group": record["rule"],
            "class": record.get("category", "other"),
            "custom_details": details,
        },
    }


def pagerduty_case_event(record: Mapping[str, Any], routing_key: str) -> dict[str, Any]:
    """A case's page: trigger (a new alert on opening, the same alert updated after), resolve
    when its last incident resolved; ``dedup_key`` = the case id."""
    if record["type"] == RecordKind.CASE_RESOLVED:
        return {"routing_key": routing_key, "event_action": "resolve", "dedup_key": record["case_id"]}
    scope = ", ".join(f"{k}={v}" for k, v in record.get("scope", {}).items()) or "all"
    details = {
        k: record.get(k)
        for k in ("why", "reason", "incidents", "incident_id", "rule", "previous_severity", "response")
        if record.get(k) is not None
    }
    summary_text = f"[{record['severity']}] {record['category']} on {scope}: {record['incidents']} open incident(s)"
    return {
        "routing_key": routing_key,
        "event_action": "trigger",
        "dedup_key": record["case_id"],
        "payload": {
            "summary": summary_text[:1024],
            "source": "firebreak/case",
            "severity": _pd_severity(record["severity"]),
            "timestamp": record["ts"],
            "component": scope,
            "group": record["category"],
            "class": record["category"],
            "custom_details": details,
        },
    }


def _pd_severity(name: Any) -> str:
    """PagerDuty's severity for a record's; `error` for one this version does not know."""
    try:
        return PD_SEVERITY[Severity.parse(name)]
    except ValueError:
        return "error"


def slack_message(record: Mapping[str, Any], containment: Iterable[str], hint: str) -> dict[str, Any]:
    """One message per lifecycle step: what, the value against its limit, who, containment, next step."""
    lines = [f"*{summary(record)}*", record.get("why", "") if record["type"] != REMINDER else ""]
    if record["type"] == REMINDER:
        lines.append(f"opened {record['opened']} and still open: time for a status update")
    if responders(record):
        lines.append(f"responders: {responders(record)}")
    if record["type"] != RecordKind.RESOLVED:
        facts = [f"value {record.get('value')} against limit {record.get('threshold')}"]
        if record.get("users_affected") is not None:
            facts.append(f"{record['users_affected']} users affected")
        lines.append(" · ".join(facts))
        actions = sorted(set(containment))
        lines.append(f"containment: {', '.join(actions)}" if actions else "containment: none")
    else:
        lines.append(f"open for {format_duration(int(record.get('duration_s', 0)) * 1000)}")
    lines.append(f"investigate: `{investigate_command(record, hint)}`")
    text = "\n".join(line for line in lines if line)
    return {"text": text, "blocks": [{"type": "section", "text": {"type": "mrkdwn", "text": text}}]}


def slack_case_message(record: Mapping[str, Any], channel: str, thread_ts: str | None, hint: str) -> dict[str, Any]:
    """chat.postMessage for a case record (a `slack_bot` target): the case's first message when
    ``thread_ts`` is None, else a reply in its thread — an incident that joined, a severity
    rise, a reopening, the resolution."""
    scope = ", ".join(f"{k}={v}" for k, v in record.get("scope", {}).items()) or "all"
    kind, reason = record["type"], record.get("reason")
    incident = f"{record.get('incident_id')} ({record.get('rule')})"
    if kind == RecordKind.CASE_RESOLVED:
        head = f"resolved: its last incident {incident} resolved"
        facts = [
            f"open for {format_duration(int(record.get('duration_s', 0)) * 1000)}",
            f"{len(record.get('incidents') or ())} incident(s)",
            f"{record.get('pages', 0)} page(s)",
        ]
    else:
        head = {
            RecordKind.CASE_OPENED.value: f"*[{record['severity']}] {record['category']} on {scope}*: "
            f"{incident} opened it",
            "joined": f"{incident} joined the case",
            "inhibited": f"{incident} joined the case (muted by this sev1 case on its scope)",
            "severity": f"severity rose {record.get('previous_severity')} → {record['severity']} ({incident})",
            "reopened": f"{incident} reopened the case",
        }.get(kind if kind == RecordKind.CASE_OPENED else reason or "", f"{kind} {reason or ''}: {incident}")
        facts = [f"{record.get('incidents')} open incident(s)", "paged" if record.get("page") else "not paged"]
        if responders(record):
            facts.append(f"responders: {responders(record)}")
    lines = [head, " · ".join(facts), record.get("why") or ""]
    if thread_ts is None:
        at = parse_ts(record["ts"])
        since, until = format_ts(at - 2 * 3_600_000), format_ts(at + 15 * 60_000)
        lines.append(
            f"case `{record['case_id']}` · investigate: "
            f"`{hint} --since {since} --until {until} --case {record['case_id']}`"
        )
    text = "\n".join(line for line in lines if line)
    message: dict[str, Any] = {"channel": channel, "text": text}
    if thread_ts is not None:
        message["thread_ts"] = thread_ts
    return message


def webhook_body(record: Mapping[str, Any]) -> dict[str, Any]:
    return {"idempotency_key": idempotency_key(record), "record": dict(record)}


# ---- delivery -------------------------------------------------------------------------------


@dataclass
class NotifyStats:
    delivered: Counter[str] = field(default_factory=Counter)  # by target
    refused: Counter[str] = field(default_factory=Counter)  # 4xx: not retried
    gave_up: Counter[str] = field(default_factory=Counter)  # 5xx / timeouts past the retries
    retries: int = 0
    unrouted: Counter[str] = field(default_factory=Counter)  # notify names with no target in the config
    records: int = 0
    reminders: int = 0
    # pages not sent, by why: grouping (joined a case), inhibition (a sev1 case on its scope), update (a
    # severity rise within `wait` of the case's page), silenced, maintenance (a [[maintenance]] window)
    suppressed: Counter[str] = field(default_factory=Counter)
    released: int = 0  # held pages sent once their silence or window ended, the case still open
    acknowledged: int = 0
    bad_control: int = 0  # control events that could not be used (logged)

    @property
    def failed(self) -> int:
        return sum(self.refused.values()) + sum(self.gave_up.values())

    def prometheus(self) -> str:
        """The counters of what was held back, in Prometheus' text format."""
        lines = [
            "# HELP firebreak_notify_pages_suppressed_total Pages not sent, by reason.",
            "# TYPE firebreak_notify_pages_suppressed_total counter",
        ]
        lines += [
            f'firebreak_notify_pages_suppressed_total{{reason="{reason}"}} {n}'
            for reason, n in sorted(self.suppressed.items())
        ]
        lines += [
            "# TYPE firebreak_notify_pages_released_total counter",
            f"firebreak_notify_pages_released_total {self.released}",
            "# TYPE firebreak_notify_acknowledged_total counter",
            f"firebreak_notify_acknowledged_total {self.acknowledged}",
        ]
        return "\n".join(lines) + "\n"

    def summary(self) -> str:
        parts = [
            f"{self.records} incident records",
            f"{self.reminders} reminders",
            f"{sum(self.delivered.values())} deliveries",
            f"{self.retries} retries",
            f"{sum(self.refused.values())} refused (4xx)",
            f"{sum(self.gave_up.values())} given up",
        ]
        if self.suppressed or self.released:
            held = ", ".join(f"{reason} {n}" for reason, n in sorted(self.suppressed.items()))
            parts.append(
                f"{sum(self.suppressed.values())} pages suppressed ({held or 'none'}), "
                f"{self.released} released when their silence ended"
            )
        if self.acknowledged:
            parts.append(f"{self.acknowledged} cases acknowledged")
        if self.unrouted:
            parts.append("no target for " + ", ".join(f"{name} ({n})" for name, n in sorted(self.unrouted.items())))
        return "notify: " + "; ".join(parts)


class Deliverer:
    """Posts payloads with retries; `async with` holds one HTTP session."""

    def __init__(self, config: NotifyConfig, stats: NotifyStats | None = None) -> None:
        self.config = config
        self.stats = stats or NotifyStats()
        self.containment: dict[str, list[str]] = {}  # incident id -> containment actions seen
        self.paged: dict[str, bool] = {}  # incident id -> whether the policy paged for it
        self.session: Any = None
        self.silences = SilenceBook()  # silences and acknowledgements (core/silences.py)
        self.windows: tuple[Any, ...] = ()  # the policy's [[maintenance]] windows (dsl/maintenance.py)
        self.cases: dict[str, dict[str, Any]] = {}  # open case id -> its latest record
        self.case_incidents: dict[str, set[str]] = {}  # case id -> the incidents its records named
        self.held: dict[str, tuple[dict[str, Any], str]] = {}  # silenced case id -> (its page, held by)
        self.triggered: set[str] = set()  # cases PagerDuty has an alert for
        self.threads: dict[tuple[str, str], str] = {}  # (slack_bot target, case id) -> its thread's ts
        # PagerDuty pages per case: set by --per-case, or once a case record was seen (the worker's
        # incident records do not name their case: its case stage's records do, a moment later)
        self.per_case = False

    async def __aenter__(self) -> Deliverer:
        import aiohttp

        self.session = aiohttp.ClientSession()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.session.close()

    def targets_of(self, record: Mapping[str, Any]) -> list[Target]:
        names = list(record.get("notify") or ()) or list(self.config.default_targets)
        out = []
        for name in names:
            target = self.config.targets.get(name)
            if target is None:
                if not self.stats.unrouted[name]:
                    log.warning("no target named %r in the notify config: its incidents are not delivered", name)
                self.stats.unrouted[name] += 1
            else:
                out.append(target)
        return out

    async def handle(self, record: Mapping[str, Any]) -> bool:
        """Deliver one record to its targets; False if a delivery gave up (retry later)."""
        if record.get("type") == RecordKind.COMMAND:
            self.containment.setdefault(record["incident_id"], []).append(record["action"])
            return True
        if record.get("type") in CASE_TYPES:
            return await self.handle_case(record)
        if record.get("type") in CONTROL_TYPES:
            return await self.control(record)
        if record.get("type") not in INCIDENT_TYPES + (REMINDER,):
            return True
        if record["type"] == REMINDER:
            self.stats.reminders += 1
        else:
            self.stats.records += 1
        paged = self.remember(record)
        ok = True
        for target in self.targets_of(record):
            if target.only_paged and not paged:
                continue  # the policy opens a ticket, not a page; resolved: only if it was paged
            if target.kind == "pagerduty" and (record.get("case_id") or self.per_case):
                continue  # its case pages (handle_case)
            if target.kind == "slack_bot":
                continue  # per case: its case's thread carries it (handle_case)
            if record["type"] == REMINDER and target.kind == "alertmanager":
                continue  # its alert is kept firing by re-sends (alertmanager.AlertResends), not reminders
            ok = await self.deliver(target, record) and ok
        return ok

    async def handle_case(self, record: Mapping[str, Any], at: int | None = None) -> bool:
        """A case record to the PagerDuty targets of its incidents: an only_paged target gets
        the case once it paged (its updates then, and its resolution). A page held back —
        grouping, inhibition, an update within `wait`, a silence, a maintenance window — is
        counted by reason; a silenced case's page is sent when the silence ends, if still open."""
        case_id = record["case_id"]
        self.per_case = True
        at = parse_ts(record["ts"]) if at is None else at
        self.case_incidents.setdefault(case_id, set()).add(record["incident_id"])
        resolved = record["type"] == RecordKind.CASE_RESOLVED
        if not resolved and not record.get("page"):
            reason = {"joined": "grouping", "inhibited": "inhibition"}.get(record.get("reason", ""), "update")
            self.stats.suppressed[reason] += 1
        if resolved:
            self.cases.pop(case_id, None)
            if case_id in self.held:
                _, by = self.held.pop(case_id)
                log.info(
                    "case %s resolved while silenced (silenced_by=%s): never paged",
                    case_id,
                    by,
                    extra={"fields": {"event": "case_resolved_silenced", "case_id": case_id, "silenced_by": by}},
                )
                return True
        else:
            self.cases[case_id] = dict(record)
            silence = self.silencing(record, at)
            if silence is not None and case_id not in self.triggered:
                page = record if record.get("page") or case_id not in self.held else self.held[case_id][0]
                if record.get("page") and case_id not in self.held:
                    self.stats.suppressed["maintenance" if silence.startswith("maintenance:") else "silenced"] += 1
                    log.info(
                        "case %s: page held (silenced_by=%s)",
                        case_id,
                        silence,
                        extra={"fields": {"event": "page_silenced", "case_id": case_id, "silenced_by": silence}},
                    )
                self.held[case_id] = (
                    {**page, "severity": record["severity"], "incidents": record["incidents"]},
                    silence,
                )
                return True
        return await self._deliver_case(record)

    async def _deliver_case(self, record: Mapping[str, Any]) -> bool:
        case_id = record["case_id"]
        paged = self.paged.get(case_id, False) or bool(record.get("page"))
        self.paged[case_id] = paged
        ok = True
        for target in self.targets_of(record):
            if target.kind not in ("pagerduty", "slack_bot") or (target.only_paged and not paged):
                continue
            if target.kind == "slack_bot":
                ok = await self.post_to_thread(target, record) and ok
                continue
            ok = await self.deliver(target, record) and ok
            if record["type"] != RecordKind.CASE_RESOLVED:
                self.triggered.add(case_id)
        if record["type"] == RecordKind.CASE_RESOLVED:
            self.triggered.discard(case_id)
        return ok

    def silencing(self, record: Mapping[str, Any], at: int) -> str | None:
        """What holds this record's page at ``at``: a silence's id, ``maintenance:NAME``, or None."""
        silence = self.silences.silencing(record, at)
        if silence is not None:
            return silence.silence_id
        for window in self.windows:
            if window.covers(at) and window.matches(record):
                return window.silence_id
        return None

    async def release(self, at: int) -> bool:
        """Page the held cases whose silence (or window) has ended at ``at`` and that are still open."""
        ok = True
        for case_id, (record, by) in sorted(self.held.items()):
            if self.silencing(record, at) is None:
                del self.held[case_id]
                self.stats.released += 1
                log.info(
                    "case %s: %s ended and the case is still open: paged now",
                    case_id,
                    by,
                    extra={"fields": {"event": "page_released", "case_id": case_id, "silenced_by": by}},
                )
                ok = await self._deliver_case({**record, "page": True}) and ok
        return ok

    async def control(self, event: Mapping[str, Any]) -> bool:
        """A silence, its expiry, or an acknowledgement (PagerDuty: ``acknowledge``; reminders stop)."""
        try:
            self.silences.apply(event)
        except ControlError as error:
            self.stats.bad_control += 1
            log.warning("control event not used: %s", error)
            return True
        if event["type"] != ACKNOWLEDGED:
            return True
        case_id = event["case_id"]
        self.stats.acknowledged += 1
        case = self.cases.get(case_id)
        if case is None or case_id not in self.triggered:
            log.info("case %s acknowledged by %s (no page of it is open here)", case_id, event.get("by"))
            return True
        ok = True
        ack = {**event, "incident_id": case_id, "notify": case.get("notify")}
        for target in self.targets_of(case):
            if target.kind == "pagerduty":
                ok = await self.deliver(target, ack) and ok
        return ok

    def remember(self, record: Mapping[str, Any]) -> bool:
        """Note what a record says of its incident (containment, whether it was paged) without
        delivering it; whether the incident is paged. An incident not seen opened (notify
        restarted after it) counts as paged: resolving an alert that is not open is harmless."""
        if record.get("type") == RecordKind.COMMAND:
            self.containment.setdefault(record["incident_id"], []).append(record["action"])
            return True
        if record.get("type") in CASE_TYPES:
            self.per_case = True
            self.case_incidents.setdefault(record["case_id"], set()).add(record["incident_id"])
            if record["type"] == RecordKind.CASE_RESOLVED:
                self.cases.pop(record["case_id"], None)
            else:
                self.cases[record["case_id"]] = dict(record)
                if record.get("page"):
                    self.triggered.add(record["case_id"])
            self.paged[record["case_id"]] = self.paged.get(record["case_id"], False) or bool(record.get("page"))
            return self.paged[record["case_id"]]
        incident = record["incident_id"]
        if record["type"] in (RecordKind.OPENED, RecordKind.ESCALATED, RecordKind.REOPENED):
            response = record.get("response")
            paged = self.paged.get(incident, False) or response is None or bool(response.get("page"))
            self.paged[incident] = paged
            return paged
        return self.paged.get(incident, True)

    def payload(self, target: Target, record: Mapping[str, Any]) -> dict[str, Any]:
        if target.kind == "pagerduty":
            key = target.routing_key.value if target.routing_key else ""
            return pagerduty_event(record, key, self.config.investigate_hint)
        if target.kind == "slack":
            return slack_message(record, self.containment.get(record["incident_id"], ()), self.config.investigate_hint)
        if target.kind == "alertmanager":
            from firebreak.adapters.alertmanager import alerts

            return alerts(record, self.config.investigate_hint, target.resend_s)  # type: ignore[return-value]
        return webhook_body(record)

    async def post_to_thread(self, target: Target, record: Mapping[str, Any]) -> bool:
        """A case record to a slack_bot target: the case's first message (its ``ts`` kept as the
        thread), then replies in that thread; the thread is forgotten when the case resolves. A
        reply whose case has no thread here (notify restarted) starts one. Slack's ``ok: false``
        is a refusal: logged with its ``error``, not retried."""
        key = (target.name, record["case_id"])
        message = slack_case_message(record, target.channel, self.threads.get(key), self.config.investigate_hint)
        token = target.token.value if target.token else ""
        ok, text = await self._post(target, record, message, {"Authorization": f"Bearer {token}"})
        if text is None:
            return ok
        try:
            answer = orjson.loads(text)
        except orjson.JSONDecodeError:
            answer = None
        if not isinstance(answer, dict) or not answer.get("ok"):
            error = answer.get("error") if isinstance(answer, dict) else "not a Slack API answer"
            self.stats.delivered[target.name] -= 1
            self.stats.refused[target.name] += 1
            log.error(
                "%s: Slack refused %s of %s: %s (not retried)", target.name, record["type"], record["case_id"], error
            )
            return True
        if record["type"] == RecordKind.CASE_RESOLVED:
            self.threads.pop(key, None)
        elif key not in self.threads and isinstance(answer.get("ts"), str):
            self.threads[key] = answer["ts"]
        return True

    async def deliver(self, target: Target, record: Mapping[str, Any]) -> bool:
        """POST with retries: True when delivered or refused (4xx: retrying cannot help), False when
        5xx / timeouts / refused connections outlasted the retries."""
        ok, _ = await self._post(target, record, self.payload(target, record))
        return ok

    async def _post(
        self,
        target: Target,
        record: Mapping[str, Any],
        payload: Mapping[str, Any],
        extra_headers: Mapping[str, str] | None = None,
    ) -> tuple[bool, str | None]:
        """`deliver`'s POST: (True, the answer's text) when delivered, (True, None) when refused,
        (False, None) when it gave up."""
        import aiohttp

        body = orjson.dumps(payload)
        headers = {
            "Content-Type": "application/json",
            "Idempotency-Key": idempotency_key(record),
            **(extra_headers or {}),
        }
        delay = target.backoff_s
        for attempt in range(target.retries + 1):
            if attempt:
                self.stats.retries += 1
                await asyncio.sleep(delay)
                delay = min(delay * 2, MAX_BACKOFF_S)
            try:
                async with self.session.post(
                    target.url.value, data=body, headers=headers, timeout=aiohttp.ClientTimeout(total=target.timeout_s)
                ) as response:
                    text = await response.text()
                    status = response.status
            except (TimeoutError, aiohttp.ClientError, OSError) as error:
                why = f"{type(error).__name__}" + (f": {error}" if str(error) else "")
                log.info(
                    "%s: %s for %s (attempt %d): %s",
                    target.name,
                    record["type"],
                    record["incident_id"],
                    attempt + 1,
                    why.replace(target.url.value, "<url>"),
                )
                continue
            if 200 <= status < 300:
                self.stats.delivered[target.name] += 1
                log.info("%s: delivered %s of %s (%s)", target.name, record["type"], record["incident_id"], status)
                return True, text
            if 400 <= status < 500 and status != 429:
                self.stats.refused[target.name] += 1
                log.error(
                    "%s: refused %s of %s: HTTP %d %s (not retried)",
                    target.name,
                    record["type"],
                    record["incident_id"],
                    status,
                    text[:300],
                )
                return True, None
            log.info(
                "%s: HTTP %d for %s of %s (attempt %d)",
                target.name,
                status,
                record["type"],
                record["incident_id"],
                attempt + 1,
            )
        self.stats.gave_up[target.name] += 1
        log.error(
            "%s: gave up on %s of %s after %d attempts",
            target.name,
            record["type"],
            record["incident_id"],
            target.retries + 1,
        )
        return False, None


class Reminders:
    """The open incidents, and when each is due a status-update reminder: every
    ``response.update_every_ms`` of wall time (``now``: epoch seconds, from the caller's clock)
    since it was opened, escalated or last reminded. Resolution ends them. A reminder's ``slot``
    (wall time ÷ the cadence) makes its idempotency key: a restart within the same slot sends
    one the receiver has seen, not a second reminder."""

    def __init__(self) -> None:
        self.open: dict[str, dict[str, Any]] = {}

    def track(self, record: Mapping[str, Any], now: float) -> None:
        """Per case when records name one (issue 25): a case's incidents are reminded of as their
        case, at its response's cadence, so one problem is one reminder."""
        kind, incident = record.get("type"), record.get("incident_id")
        if kind in CASE_TYPES:
            self.open.pop(incident, None)  # its case reminds of it
            if kind == RecordKind.CASE_RESOLVED:
                self.open.pop(record["case_id"], None)
                return
            incident, record = record["case_id"], {**record, "group": record.get("scope") or {}}
            kind = RecordKind.OPENED
        elif record.get("case_id"):
            return
        if kind == RecordKind.RESOLVED:
            self.open.pop(incident, None)
        elif kind in (RecordKind.OPENED, RecordKind.ESCALATED, RecordKind.REOPENED):
            every = (record.get("response") or {}).get("update_every_ms")
            before = self.open.get(incident)
            if not every:
                self.open.pop(incident, None)
                return
            opened = before["opened"] if before else record["ts"]
            self.open[incident] = {
                "record": record,
                "opened": opened,
                "due": now + every / 1000,
                "count": before["count"] if before else 0,
            }

    def forget(self, incidents: Iterable[str]) -> None:
        """No more reminders for these incidents or cases (acknowledged)."""
        for incident in incidents:
            self.open.pop(incident, None)

    def due(self, now: float) -> list[dict[str, Any]]:
        """The reminders due at ``now``, as records of type incident.reminder (each counted)."""
        out = []
        for incident, entry in sorted(self.open.items()):
            if now < entry["due"]:
                continue
            r = entry["record"]
            every = r["response"]["update_every_ms"]
            entry["count"] += 1
            entry["due"] = now + every / 1000
            case = {"case_id": r["case_id"]} if r.get("type") in CASE_TYPES else {}
            out.append(
                {
                    "type": REMINDER,
                    "incident_id": incident,
                    **case,
                    "reminder": entry["count"],
                    "slot": int(now * 1000) // every,
                    "opened": entry["opened"],
                    **{
                        k: r.get(k)
                        for k in (
                            "rule",
                            "category",
                            "severity",
                            "group",
                            "ts",
                            "onset",
                            "value",
                            "threshold",
                            "users_affected",
                            "response",
                            "notify",
                        )
                    },
                }
            )
        return out


async def notify_records(
    config: NotifyConfig,
    records: Iterable[Mapping[str, Any]],
    control: Iterable[Mapping[str, Any]] = (),
    windows: tuple[Any, ...] = (),
    per_case: bool = False,
) -> NotifyStats:
    """A records file (or list): every incident record to its targets, in order. ``control``:
    silences and acknowledgements (a file's), each taken at its time among the records; time is
    the records' (``ts``): a held page goes out with the first record after its silence ended."""
    records = list(records)
    pending = sorted(control, key=lambda e: parse_ts(e["ts"]))
    async with Deliverer(config) as deliverer:
        deliverer.windows, deliverer.per_case = windows, per_case
        for record in records:  # containment first: a message about an incident names its containment
            if record.get("type") == RecordKind.COMMAND:
                await deliverer.handle(record)
        for record in records:
            if record.get("type") == RecordKind.COMMAND:
                continue
            at = parse_ts(record["ts"])
            while pending and parse_ts(pending[0]["ts"]) <= at:
                await deliverer.handle(pending.pop(0))
            await deliverer.release(at)
            await deliverer.handle(record)
        for event in pending:
            await deliverer.handle(event)
    return deliverer.stats


async def notify_topics(
    config: NotifyConfig,
    kafka: Any,
    incidents_topic: str,
    containment_topic: str,
    group: str,
    idle_s: float | None = None,
    reminders: bool = True,
    clock: Any = time.time,
    control_topic: str | None = None,
    windows: tuple[Any, ...] = (),
    per_case: bool = False,
) -> NotifyStats:
    """Follow the incidents (and containment) topics in a consumer group, read_committed; offsets
    are committed after their records were delivered, so a crash re-delivers (idempotent keys),
    never skips. A delivery that gives up stops the loop without committing (exit, retry later).
    On start, the records before the group's committed offsets are read again (not delivered)
    to know which incidents are open: their reminders go on after a restart.
    ``idle_s``: return once nothing new arrived for this long (backfills, tests).
    ``control_topic``: silences and acknowledgements (core/silences.py), read whole from its
    start by every notify process, then followed; a held page goes out when its silence ends."""
    from aiokafka import AIOKafkaConsumer

    consumer = AIOKafkaConsumer(
        incidents_topic,
        containment_topic,
        bootstrap_servers=kafka.bootstrap,
        **kafka.client_options(),
        group_id=group,
        enable_auto_commit=False,
        isolation_level="read_committed",
        auto_offset_reset="earliest",
    )
    from firebreak.adapters.alertmanager import AlertResends, resend_open_alerts

    await consumer.start()
    control = await _control_reader(kafka, control_topic) if control_topic else None
    open_incidents, open_alerts = Reminders(), AlertResends()
    try:
        async with Deliverer(config) as deliverer:
            deliverer.windows, deliverer.per_case = windows, per_case
            for topic in (containment_topic, incidents_topic):  # containment first, as below
                for record in await _committed_records(consumer, kafka, topic):
                    deliverer.remember(record)
                    open_incidents.track(record, clock())
                    open_alerts.track(record, 0.0, 0.0)  # due at once: re-sent to Alertmanager after a restart
            if open_incidents.open:
                log.info("%d incidents still open before the committed offsets", len(open_incidents.open))
            async for batch in _batches(consumer, idle_s):
                if control is not None:
                    for messages in (await control.getmany(timeout_ms=0)).values():
                        for message in messages:
                            await deliverer.handle(_control_event(message.value))
                await deliverer.release(int(clock() * 1000))
                records = [orjson.loads(m.value) for m in batch]
                records.sort(key=lambda r: r.get("type") != RecordKind.COMMAND)  # containment first
                for record in records:
                    if not await deliverer.handle(record):
                        return deliverer.stats  # not committed: a restart delivers it again
                    open_incidents.track(record, clock())
                    open_alerts.track(record, clock(), min((t.resend_s for t in config.targets.values()), default=60.0))
                if batch:
                    await consumer.commit()
                acked = deliverer.silences.acks
                open_incidents.forget([*acked, *(i for case in acked for i in deliverer.case_incidents.get(case, ()))])
                if reminders:
                    for reminder in open_incidents.due(clock()):
                        await deliverer.handle(reminder)  # a reminder that fails is not retried later
                await resend_open_alerts(deliverer, open_alerts, clock())
        return deliverer.stats
    finally:
        await consumer.stop()
        if control is not None:
            await control.stop()


async def _control_reader(kafka: Any, topic: str) -> Any:
    """A consumer of every partition of the control topic from its start, outside any group."""
    from aiokafka import AIOKafkaConsumer, TopicPartition

    reader = AIOKafkaConsumer(
        bootstrap_servers=kafka.bootstrap,
        **kafka.client_options(),
        group_id=None,
        enable_auto_commit=False,
        isolation_level="read_committed",
    )
    await reader.start()
    partitions = reader.partitions_for_topic(topic) or set()
    if not partitions:
        await reader._client.force_metadata_update()  # noqa: SLF001 - a topic created a moment ago
        partitions = reader.partitions_for_topic(topic) or {0}
    tps = [TopicPartition(topic, p) for p in sorted(partitions)]
    reader.assign(tps)
    await reader.seek_to_beginning(*tps)
    return reader


def _control_event(value: bytes) -> dict[str, Any]:
    try:
        event = orjson.loads(value)
    except orjson.JSONDecodeError:
        return {"type": "not JSON"}
    return event if isinstance(event, dict) else {"type": "not an object"}


async def _committed_records(group_consumer: Any, kafka: Any, topic: str, deadline_s: float = 60.0) -> list[dict]:
    """The records of ``topic`` before the group's committed offsets (read_committed)."""
    from aiokafka import AIOKafkaConsumer, TopicPartition

    partitions = group_consumer.partitions_for_topic(topic) or set()
    ends = {}
    for p in sorted(partitions):
        tp = TopicPartition(topic, p)
        committed = await group_consumer.committed(tp)
        if committed:
            ends[tp] = committed
    if not ends:
        return []
    reader = AIOKafkaConsumer(
        bootstrap_servers=kafka.bootstrap,
        **kafka.client_options(),
        group_id=None,
        enable_auto_commit=False,
        isolation_level="read_committed",
    )
    await reader.start()
    out: list[dict] = []
    try:
        reader.assign(list(ends))
        await reader.seek_to_beginning(*ends)
        stop = time.monotonic() + deadline_s
        remaining = dict(ends)
        while remaining and time.monotonic() < stop:
            polled = await reader.getmany(timeout_ms=500)
            for tp, messages in polled.items():
                out += [orjson.loads(m.value) for m in messages if m.offset < ends[tp]]
            for tp in list(remaining):
                if await reader.position(tp) >= remaining[tp]:
                    del remaining[tp]
        if remaining:
            log.warning(
                "could not read %s up to the committed offsets in %g s: reminders of older incidents may be missing",
                topic,
                deadline_s,
            )
    finally:
        await reader.stop()
    return out


async def _batches(consumer: Any, idle_s: float | None) -> AsyncIterator[list[Any]]:
    """Each poll's messages, an empty list when there were none (so that reminders run)."""
    quiet = 0.0
    while idle_s is None or quiet < idle_s:
        polled = await consumer.getmany(timeout_ms=500)
        batch = [m for messages in polled.values() for m in messages]
        quiet = 0.0 if batch else quiet + 0.5
        yield batch
