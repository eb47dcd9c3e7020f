"""ContainmentState, the listener's pure decision logic: records and a `now` in, decisions out."""

from __future__ import annotations

from typing import Any

import pytest
from firebreak.core import format_ts
from firebreak.sdk import ContainmentState

T = 1_800_000_000_000  # epoch ms
S = 1000
INC = "inc_00000000000000aa"


def cid(name: str) -> str:
    return "cmd_" + name.encode().hex().rjust(16, "0")[:16]


def cmd(name: str, exp: int | None, *, hold: bool = False, action: str = "fallback") -> dict[str, Any]:
    return {
        "type": "containment.command",
        "command_id": cid(name),
        "incident_id": INC,
        "rule": "r",
        "action": action,
        "target": {"model": "gpt-4o"},
        "params": {"model": "gpt-4o-mini"},
        "ts": format_ts(T),
        "expires_at": None if exp is None else format_ts(exp),
        "hold": hold,
    }


def ren(name: str, exp: int) -> dict[str, Any]:
    return {
        "type": "containment.renewed",
        "command_id": cid(name),
        "incident_id": INC,
        "rule": "r",
        "action": "fallback",
        "target": {"model": "gpt-4o"},
        "ts": format_ts(T),
        "expires_at": format_ts(exp),
    }


def rel(name: str, action: str = "fallback") -> dict[str, Any]:
    return {
        "type": "containment.release",
        "command_id": cid(name),
        "incident_id": INC,
        "rule": "r",
        "action": action,
        "target": {"model": "gpt-4o"},
        "ts": format_ts(T),
    }


# Each step: ("rec", record, now) | ("expire", now) | ("release", name).
# Each expected decision: "op name reason" (ignore decisions included).
CASES: list[tuple[str, dict, list[tuple], list[str], set[str]]] = [
    ("new command is applied", {}, [("rec", cmd("a", T + 60 * S), T)], ["apply a new"], {"a"}),
    (
        "duplicate command_id is ignored",
        {},
        [("rec", cmd("a", T + 60 * S), T), ("rec", cmd("a", T + 60 * S), T + S)],
        ["apply a new", "ignore a duplicate"],
        {"a"},
    ),
    ("expired on arrival", {}, [("rec", cmd("a", T - 1), T)], ["ignore a expired on arrival"], set()),
    ("expiring exactly now counts as expired", {}, [("rec", cmd("a", T), T)], ["ignore a expired on arrival"], set()),
    (
        "expiry reverts, not before",
        {},
        [("rec", cmd("a", T + 10 * S), T), ("expire", T + 10 * S - 1), ("expire", T + 10 * S), ("expire", T + 99 * S)],
        ["apply a new", "revert a expired"],
        set(),
    ),
    ("null expiry never expires", {}, [("rec", cmd("a", None), T), ("expire", T + 10**12)], ["apply a new"], {"a"}),
    (
        "renewal extends the expiry",
        {},
        [
            ("rec", cmd("a", T + 10 * S), T),
            ("rec", ren("a", T + 40 * S), T + 5 * S),
            ("expire", T + 20 * S),
            ("expire", T + 40 * S),
        ],
        ["apply a new", "ignore a renewed", "revert a expired"],
        set(),
    ),
    (
        "a renewal never shortens",
        {},
        [("rec", cmd("a", T + 40 * S), T), ("rec", ren("a", T + 20 * S), T + S), ("expire", T + 30 * S)],
        ["apply a new", "ignore a stale renewal"],
        {"a"},
    ),
    (
        "release reverts once",
        {},
        [("rec", cmd("a", T + 60 * S), T), ("rec", rel("a"), T + S), ("rec", rel("a"), T + 2 * S)],
        ["apply a new", "revert a released", "ignore a duplicate release"],
        set(),
    ),
    (
        "release after expiry does not revert twice",
        {},
        [("rec", cmd("a", T + 10 * S), T), ("expire", T + 10 * S), ("rec", rel("a"), T + 11 * S)],
        ["apply a new", "revert a expired", "ignore a release of inactive command"],
        set(),
    ),
    (
        "a late renewal re-applies an expired command",
        {},
        [("rec", cmd("a", T + 10 * S), T), ("expire", T + 10 * S), ("rec", ren("a", T + 70 * S), T + 15 * S)],
        ["apply a new", "revert a expired", "apply a reapplied on renewal"],
        {"a"},
    ),
    (
        "a renewal already past does not re-apply",
        {},
        [("rec", cmd("a", T + 10 * S), T), ("expire", T + 10 * S), ("rec", ren("a", T + 12 * S), T + 15 * S)],
        ["apply a new", "revert a expired", "ignore a renewal of inactive command"],
        set(),
    ),
    (
        "expired on arrival, then a valid renewal: applied (the incident is still open)",
        {},
        [("rec", cmd("a", T - S), T), ("rec", ren("a", T + 60 * S), T + S)],
        ["ignore a expired on arrival", "apply a reapplied on renewal"],
        {"a"},
    ),
    (
        "no renewal brings back a released command",
        {},
        [("rec", cmd("a", T + 10 * S), T), ("rec", rel("a"), T + S), ("rec", ren("a", T + 60 * S), T + 2 * S)],
        ["apply a new", "revert a released", "ignore a renewal of inactive command"],
        set(),
    ),
    (
        "a release makes an expired-on-arrival command final",
        {},
        [("rec", cmd("a", T - S), T), ("rec", rel("a"), T), ("rec", ren("a", T + 60 * S), T + S)],
        ["ignore a expired on arrival", "ignore a release of inactive command", "ignore a renewal of inactive command"],
        set(),
    ),
    (
        "a renewal without params (an older engine) of an unseen command is ignored",
        {},
        [("rec", ren("a", T + 60 * S), T)],
        ["ignore a renewal of unseen command"],
        set(),
    ),
    (
        "a renewal carries its command: an unseen one is applied",
        {},
        [("rec", {**ren("a", T + 60 * S), "params": {"model": "small"}, "hold": False}, T)],
        ["apply a new"],
        {"a"},
    ),
    (
        "... unless it has already expired",
        {},
        [("rec", {**ren("a", T - S), "params": {}, "hold": False}, T)],
        ["ignore a expired on arrival"],
        set(),
    ),
    (
        "hold: a release record does not revert it",
        {},
        [("rec", cmd("a", None, hold=True), T), ("rec", rel("a"), T + S), ("expire", T + 10**9)],
        ["apply a new", "ignore a release of hold command"],
        {"a"},
    ),
    (
        "hold: a human's release reverts it",
        {},
        [("rec", cmd("a", None, hold=True), T), ("release", "a"), ("release", "a")],
        ["apply a new", "revert a manual release", "ignore a duplicate release"],
        set(),
    ),
    (
        "hold with release_holds: a release record reverts it",
        {"release_holds": True},
        [("rec", cmd("a", None, hold=True), T), ("rec", rel("a"), T + S)],
        ["apply a new", "revert a released"],
        set(),
    ),
    (
        "hold with `for D` still expires",
        {},
        [("rec", cmd("a", T + 10 * S, hold=True), T), ("expire", T + 10 * S)],
        ["apply a new", "revert a expired"],
        set(),
    ),
    (
        "unknown action: counted, never applied nor reverted",
        {"actions": {"fallback"}},
        [("rec", cmd("a", T + 10 * S, action="page"), T), ("rec", rel("a", "page"), T + S), ("expire", T + 20 * S)],
        ["ignore a unknown action", "ignore a release of inactive command"],
        set(),
    ),
    (
        "release of an unseen command is reverted once (applied before a restart)",
        {},
        [("rec", rel("a"), T), ("rec", rel("a"), T + S), ("rec", cmd("a", T + 60 * S), T + 2 * S)],
        ["revert a release of unseen command", "ignore a duplicate release", "ignore a already released"],
        set(),
    ),
    (
        "release of an unseen command without revert_unseen_releases",
        {"revert_unseen_releases": False},
        [("rec", rel("a"), T)],
        ["ignore a release of unseen command"],
        set(),
    ),
    (
        "release of an unseen command of an unknown action",
        {"actions": {"fallback"}},
        [("rec", rel("a", "page"), T)],
        ["ignore a release of unseen command"],
        set(),
    ),
    (
        "commands expire independently, in order",
        {},
        [
            ("rec", cmd("a", T + 30 * S), T),
            ("rec", cmd("b", T + 10 * S), T),
            ("rec", cmd("c", None), T),
            ("expire", T + 10 * S),
            ("expire", T + 30 * S),
        ],
        ["apply a new", "apply b new", "apply c new", "revert b expired", "revert a expired"],
        {"c"},
    ),
]


def _label(decision) -> str:
    names = {cid(n): n for n in "abc"}
    return f"{decision.op} {names.get(decision.command_id, decision.command_id)} {decision.reason}"


@pytest.mark.parametrize(("options", "steps", "expected", "active"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_decisions(options, steps, expected, active):
    state = ContainmentState(**options)
    got = []
    for step in steps:
        if step[0] == "rec":
            got += state.on_record(step[1], step[2])
        elif step[0] == "expire":
            got += state.expire(step[1])
        else:
            got += state.release(cid(step[1]))
    assert [_label(d) for d in got] == expected
    assert set(state.active()) == {cid(n) for n in active}


@pytest.mark.parametrize(
    ("record", "reason"),
    [
        ("not an object", "invalid: a record is a JSON object, not str"),
        ({**cmd("a", None), "command_id": None}, "invalid: `command_id` must be a non-empty string"),
        ({**cmd("a", None), "action": ""}, "invalid: `action` must be a non-empty string"),
        ({**cmd("a", None), "target": "gpt-4o"}, "invalid: `target` must be an object"),
        ({**cmd("a", None), "params": []}, "invalid: `params` must be an object"),
        ({**cmd("a", None), "hold": "yes"}, "invalid: `hold` must be a boolean"),
        ({**cmd("a", None), "expires_at": "soon"}, "invalid: `expires_at` 'soon' is not an RFC 3339 time"),
        ({**cmd("a", None), "expires_at": 5}, "invalid: `expires_at` must be an RFC 3339 time or null"),
        ({**ren("a", T), "expires_at": None}, "invalid: a renewal needs `expires_at`"),
        ({"type": "incident.opened", "incident_id": INC}, "not a containment record"),
    ],
)
def test_invalid_records_are_ignored_with_a_reason(record, reason):
    state = ContainmentState()
    [decision] = state.on_record(record, T)
    assert (decision.op, decision.reason) == ("ignore", reason)
    assert state.active() == {}


def test_handlers_get_the_command_with_its_renewed_expiry_and_snapshots_do_not_change():
    state = ContainmentState()
    [applied] = state.on_record(cmd("a", T + 10 * S), T)
    state.on_record(ren("a", T + 40 * S), T + S)
    [reverted] = state.expire(T + 40 * S)
    assert applied.command["expires_at"] == format_ts(T + 10 * S)
    assert reverted.command["expires_at"] == format_ts(T + 40 * S)
    assert reverted.command["params"] == {"model": "gpt-4o-mini"}


def test_counts_next_expiry_and_status():
    state = ContainmentState()
    state.on_record(cmd("a", T + 30 * S), T)
    state.on_record(cmd("a", T + 30 * S), T)
    state.on_record(cmd("b", T + 10 * S), T)
    state.on_record(cmd("c", T - S), T)
    assert state.next_expiry() == T + 10 * S
    assert state.counts == {"new": 2, "duplicate": 1, "expired on arrival": 1}
    assert [state.status(cid(n)) for n in "abcd"] == ["active", "active", "not_applied", None]
    state.expire(T + 10 * S)
    assert state.next_expiry() == T + 30 * S and state.status(cid("b")) == "expired"


def test_memory_is_bounded_but_active_commands_are_kept():
    state = ContainmentState(remember=10)
    state.on_record(cmd("keep", None), T)
    for i in range(100):
        state.on_record({**cmd("x", T - S), "command_id": f"cmd_{i:016x}"}, T)  # expired on arrival
    assert len(state._entries) == 10
    assert set(state.active()) == {cid("keep")}
