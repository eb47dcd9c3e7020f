"""Silences, maintenance windows and acknowledgements: what holds a page back (docs/response.md#silences).

They are events, like detections, on one compacted control topic (or a JSON-lines file for
replays and the demo), so every notify process sees the same ones and they survive restarts:

    {"type": "silence.added", "silence_id": "sil_…", "matchers": {"tenant": "acme", "category": "cost"},
     "starts": "…Z", "ends": "…Z", "reason": "load test", "by": "ana", "ts": "…Z"}
    {"type": "silence.expired", "silence_id": "sil_…", "by": "ana", "ts": "…Z"}
    {"type": "case.acknowledged", "case_id": "case_…", "by": "ana", "ts": "…Z"}

A matcher ``name=value`` is matched against a record's field of that name (category, rule,
severity, case_id, incident_id), else its case ``scope``, else its incident ``group``. A
silenced incident or case is still detected, recorded and contained: only its page is held,
and paged once the silence ends while it is still open. Pure: time comes with the calls.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import orjson

from firebreak.core.events import format_ts, parse_ts

SILENCE_ADDED, SILENCE_EXPIRED, ACKNOWLEDGED = "silence.added", "silence.expired", "case.acknowledged"
CONTROL_TYPES = (SILENCE_ADDED, SILENCE_EXPIRED, ACKNOWLEDGED)
RECORD_FIELDS = ("category", "rule", "severity", "case_id", "incident_id")


class ControlError(ValueError):
    """A control event that cannot be used: one line saying why."""


@dataclass(frozen=True)
class Silence:
    silence_id: str
    matchers: tuple[tuple[str, str], ...]
    starts_ms: int
    ends_ms: int
    reason: str
    by: str

    def active(self, at: int) -> bool:
        return self.starts_ms <= at < self.ends_ms

    def matches(self, record: Mapping[str, Any]) -> bool:
        return all(record_value(record, name) == value for name, value in self.matchers)

    def text(self) -> str:
        return " ".join(f"{k}={v}" for k, v in self.matchers)


def record_value(record: Mapping[str, Any], name: str) -> str | None:
    """The value a matcher ``name`` sees in a record, as text (None: the record has none)."""
    if name in RECORD_FIELDS and record.get(name) is not None:
        return str(record[name])
    for part in ("scope", "group"):
        value = (record.get(part) or {}).get(name)
        if value is not None:
            return str(value)
    return None


def parse_matchers(items: Iterable[str]) -> dict[str, str]:
    """``["tenant=acme", "category=cost"]`` → a dict; ControlError on ``tenant`` or ``=acme``."""
    out: dict[str, str] = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep or not name.strip() or not value.strip():
            raise ControlError(f"--match {item!r}: expected NAME=VALUE, e.g. --match tenant=acme")
        out[name.strip()] = value.strip()
    if not out:
        raise ControlError("a silence needs at least one --match NAME=VALUE (a silence of everything is refused)")
    return out


DAY_MS = 86_400_000
# 366 days: what a silence may last. Longer was a mistake (`--for 99999999d` wrote an end in the
# year 275817, which no reader of the control topic could parse back).
MAX_SILENCE_MS = 366 * DAY_MS


def silence_event(matchers: Mapping[str, str], starts_ms: int, ends_ms: int, reason: str, by: str) -> dict[str, Any]:
    """A ``silence.added`` event; its id is a digest of what it says (the same request twice is one silence)."""
    if ends_ms <= starts_ms:
        raise ControlError("a silence must end after it starts (--for must be positive)")
    if ends_ms - starts_ms > MAX_SILENCE_MS:
        raise ControlError(
            f"a silence lasts at most {MAX_SILENCE_MS // DAY_MS} days (--for); "
            "a longer one is a rule change, not a silence"
        )
    body = {
        "matchers": dict(sorted(matchers.items())),
        "starts": format_ts(starts_ms),
        "ends": format_ts(ends_ms),
        "reason": reason,
        "by": by,
    }
    digest = hashlib.sha256(orjson.dumps(body, option=orjson.OPT_SORT_KEYS)).hexdigest()[:12]
    return {"type": SILENCE_ADDED, "silence_id": f"sil_{digest}", **body, "ts": format_ts(starts_ms)}


def expire_event(silence_id: str, by: str, at_ms: int) -> dict[str, Any]:
    return {"type": SILENCE_EXPIRED, "silence_id": silence_id, "by": by, "ts": format_ts(at_ms)}


def ack_event(case_id: str, by: str, at_ms: int) -> dict[str, Any]:
    return {"type": ACKNOWLEDGED, "case_id": case_id, "by": by, "ts": format_ts(at_ms)}


def control_key(event: Mapping[str, Any]) -> bytes:
    """The compacted topic's key: one per silence, one acknowledgement per case."""
    return (event.get("silence_id") or f"ack:{event.get('case_id')}").encode()


class SilenceBook:
    """Every silence and acknowledgement heard of, from control events in any order."""

    def __init__(self) -> None:
        self.silences: dict[str, Silence] = {}
        self.expired: dict[str, int] = {}  # silence id → when it was expired early
        self.acks: dict[str, str] = {}  # case id → who acknowledged it

    def apply(self, event: Mapping[str, Any]) -> None:
        """Take one control event; ControlError when it is not one this release can use."""
        kind = event.get("type")
        try:
            if kind == SILENCE_ADDED:
                matchers = event["matchers"]
                if not isinstance(matchers, dict) or not matchers:
                    raise ControlError("`matchers` must be a non-empty object")
                pairs = tuple(sorted((str(k), str(v)) for k, v in matchers.items()))
                silence = Silence(
                    str(event["silence_id"]),
                    pairs,
                    parse_ts(event["starts"]),
                    parse_ts(event["ends"]),
                    str(event.get("reason", "")),
                    str(event.get("by", "")),
                )
                self.silences[silence.silence_id] = silence
            elif kind == SILENCE_EXPIRED:
                self.expired[str(event["silence_id"])] = parse_ts(event["ts"])
            elif kind == ACKNOWLEDGED:
                self.acks[str(event["case_id"])] = str(event.get("by", ""))
            else:
                raise ControlError(f"unknown control event type {kind!r}; expected one of {', '.join(CONTROL_TYPES)}")
        except KeyError as missing:
            raise ControlError(f"{kind}: `{missing.args[0]}` is missing") from None
        except (TypeError, ValueError) as error:
            if isinstance(error, ControlError):
                raise
            raise ControlError(f"{kind}: {error}") from None

    def ends(self, silence: Silence) -> int:
        return min(silence.ends_ms, self.expired.get(silence.silence_id, silence.ends_ms))

    def active(self, at: int) -> list[Silence]:
        return [s for s in self.silences.values() if s.starts_ms <= at < self.ends(s)]

    def silencing(self, record: Mapping[str, Any], at: int) -> Silence | None:
        """The first active silence (by id) matching ``record`` at ``at``, or None."""
        for silence in sorted(self.active(at), key=lambda s: s.silence_id):
            if silence.matches(record):
                return silence
        return None

    def listing(self, at: int) -> list[dict[str, Any]]:
        """Every silence with its state at ``at`` (active, pending, expired), newest first."""
        out = []
        for s in sorted(self.silences.values(), key=lambda s: (-s.starts_ms, s.silence_id)):
            end = self.ends(s)
            state = "active" if s.starts_ms <= at < end else "pending" if at < s.starts_ms else "expired"
            out.append(
                {
                    "silence_id": s.silence_id,
                    "state": state,
                    "matchers": dict(s.matchers),
                    "starts": format_ts(s.starts_ms),
                    "ends": format_ts(end),
                    "reason": s.reason,
                    "by": s.by,
                }
            )
        return out
