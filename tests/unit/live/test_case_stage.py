"""The worker's case stage (adapters/live/case_stage.py): four shards' records, read from four
incidents partitions in a random interleaving, a restart from a snapshot in the middle —
the same case records as `replay --cases` of the same events. The stage sees records only:
where a `by user` incident's evidence concentrates travels on the record (``evidence_scope``).
The replay and the shards run on the engine under test (the rule_engine_kind fixture)."""

from __future__ import annotations

import random
import zlib

import orjson
import pytest
from firebreak.adapters.case_replay import with_cases
from firebreak.adapters.demo import demo_traffic
from firebreak.adapters.drive import Driver
from firebreak.adapters.live.case_stage import CaseOrder, CaseStage
from firebreak.adapters.starter_pack import starter_companion_sources, starter_rule_sources
from firebreak.core.engine import Engine
from firebreak.core.events import validate_event
from firebreak.core.sharding import owner
from firebreak.dsl import load_rules
from firebreak.records import is_incident, record_key

SHARDS, PARTITIONS = 4, 3
LATENESS = 30_000
END = 2**62


@pytest.fixture(scope="module")
def replayed(rule_engine_kind):
    """The starter pack over the demo's traffic, and the records of one engine (a replay)."""
    rules, problems = load_rules(starter_rule_sources(), starter_companion_sources())
    assert not problems
    events = [validate_event(e) for e in demo_traffic(2026, 2.0).events()]
    replay = Driver(rules, LATENESS, rule_engine_kind)
    return rules, events, replay.feed_events(events).records + replay.finish()


@pytest.fixture(scope="module")
def world(replayed, rule_engine_kind):
    rules, events, records = replayed
    expected = [r for r in with_cases(records, rules) if r["type"].startswith("case.")]
    return rules, events, expected, sharded(rules, events, rule_engine_kind)


def shard_engine(rules, shard: int, kind: str):
    """One shard's engine of that kind (only its (rule, group) pairs), and how it takes events."""
    if kind == "python":
        engine = Engine(rules, LATENESS, owns=owner(shard, SHARDS))
        return engine, lambda events: [r for event in events for r in engine.process(event)]
    from firebreak.native import NativeEngine

    native = NativeEngine(rules, LATENESS)
    native.own(shard, SHARDS)
    return native, lambda events: native.feed_events(events).records


def sharded(rules, events, kind: str) -> list[list[tuple[str, object]]]:
    """Per shard, what it commits, in order: ("record", r) and after each batch ("mark", watermark)."""
    out = []
    for shard in range(SHARDS):
        engine, feed = shard_engine(rules, shard, kind)
        log: list[tuple[str, object]] = []
        for i in range(0, len(events), 500):
            log += [("record", r) for r in feed(events[i : i + 500])]
            log.append(("mark", engine.watermark))
        log += [("record", r) for r in engine.finish()]
        log.append(("mark", END))  # a replay's end: every step evaluated (a live shard never gets here)
        out.append(log)
    return out


def deliver(logs, seed: int):
    """The shards' commits as a reader of the incidents topic and the checkpoint topic sees them:
    transactions interleaved at random; a mark is applied once the partitions were read to their end."""
    rng = random.Random(seed)
    cursors = [0] * len(logs)
    offsets = [0] * PARTITIONS
    while any(c < len(log) for c, log in zip(cursors, logs, strict=True)):
        shard = rng.choice([s for s, log in enumerate(logs) if cursors[s] < len(log)])
        kind, item = logs[shard][cursors[shard]]
        cursors[shard] += 1
        if kind == "mark":
            yield "mark", shard, item
        elif is_incident(item):
            partition = zlib.crc32(record_key(item)) % PARTITIONS
            yield "record", partition, (offsets[partition], item)
            offsets[partition] += 1


def test_the_engine_emits_incident_records_in_case_order(replayed):
    rules, _, records = replayed
    records = [r for r in records if is_incident(r)]
    assert len(records) > 20
    order = CaseOrder(rules)
    assert sorted(records, key=order.key) == records


@pytest.mark.parametrize("seed", [1, 2])
def test_four_shards_read_in_any_order_give_the_cases_of_a_replay(world, seed):
    rules, _, expected, logs = world
    assert any(r["type"] == "case.updated" for r in expected)  # incidents join cases: order matters
    stage = CaseStage(rules, SHARDS)
    got, items = [], list(deliver(logs, seed))
    restart_at = len(items) // 2
    for n, (kind, where, item) in enumerate(items):
        if n == restart_at:  # a crash: the stage restores its last checkpoint, the partitions re-read from 0
            snapshot = orjson.loads(orjson.dumps(stage.snapshot()))
            stage = CaseStage.restore(rules, snapshot)
            for kind2, where2, item2 in items[:n]:
                if kind2 == "record":
                    assert not stage.take(where2, *item2)
        if kind == "mark":
            stage.heard(where, item)
            got += stage.release()
        else:
            stage.take(where, *item)
    assert stage.held == []
    assert [orjson.dumps(r) for r in got] == [orjson.dumps(r) for r in expected]


def test_the_attackers_by_user_incidents_are_one_case_from_records_alone(world):
    """The demo's attack: five users of tenant globex, each a `by user` incident on two rules,
    and the tenant's own wave incidents (injection_wave_new_tenant and its hour-long tier:
    globex is younger than their span, so it is compared with the other tenants; and the
    tenant rules with a warm-up, against its own first hour). The stage, fed the shards' records and
    nothing else, puts them in one case on tenant=globex."""
    rules, _, expected, logs = world
    stage = CaseStage(rules, SHARDS)
    got = []
    for kind, where, item in deliver(logs, 3):
        if kind == "mark":
            stage.heard(where, item)
            got += stage.release()
        else:
            stage.take(where, *item)
    attack = [r for r in got if r["category"] == "adversarial"]
    opened = [r for r in attack if r["type"] == "case.opened"]
    assert [r["scope"] for r in opened] == [{"tenant": "globex"}]
    joined = {r["incident_id"] for r in attack if r["type"] == "case.updated"}
    records = [r for log in logs for kind, r in log if kind == "record" and r.get("category") == "adversarial"]
    by_user = {r["incident_id"] for r in records if r["type"] == "incident.opened"}
    assert len(by_user) >= 5 and joined == by_user - {opened[0]["incident_id"]}
    # what made it one case: each by-user record says where its evidence concentrates; the
    # tenant's own incident is scoped by its group
    opened_records = [r for r in records if r["type"] == "incident.opened"]
    assert all(r["evidence_scope"] == {"tenant": "globex"} for r in opened_records if "user" in r["group"])
    tenant_wide = [r for r in opened_records if "user" not in r["group"]]
    # the wave rules on the tenant (the half hour and, since issue 30's sixth round, the hour;
    # since its tenth, the tenant rules with a warm-up, judging globex against its own first hour;
    # since its twelfth, the hour against the other tenants at any age)
    assert tenant_wide and all(r["group"] == {"tenant": "globex"} for r in tenant_wide)
    assert {r["rule"] for r in tenant_wide} <= {
        "injection_wave_new_tenant",
        "injection_wave_new_tenant_hour",
        "injection_wave_by_tenant",
        "jailbreak_wave_by_tenant",
        "injection_wave_vs_population_by_tenant",
    }
    assert [orjson.dumps(r) for r in got] == [orjson.dumps(r) for r in expected]


def test_group_wait_holds_first_pages_as_a_replay_does(world, replayed):
    """With [grouping] group_wait the stage releases a held first page once every shard is
    past its due time: each case's records are those of `replay --cases`, in its order."""
    import dataclasses

    rules, events, _, logs = world
    waiting = [
        dataclasses.replace(r, grouping=dataclasses.replace(r.grouping, group_wait_ms=5 * 60_000)) for r in rules
    ]
    expected = [r for r in with_cases(replayed[2], waiting) if r["type"].startswith("case.")]
    stage = CaseStage(waiting, SHARDS)
    got = []
    for kind, where, item in deliver(logs, 4):
        if kind == "mark":
            stage.heard(where, item)
            got += stage.release()
        else:
            stage.take(where, *item)

    def by_case(records):
        out: dict[str, list[bytes]] = {}
        for r in records:
            out.setdefault(r["case_id"], []).append(orjson.dumps(r))
        return out

    assert by_case(got) == by_case(expected)
    opened = [r for r in expected if r["type"] == "case.opened"]
    assert opened and all("(group_wait)" in r["why"] for r in opened)
    assert any(not r["why"].endswith(": 0 joined") for r in opened)  # incidents joined before the page


def test_nothing_is_released_before_every_shard_is_heard_of(world):
    rules = world[0]
    stage = CaseStage(rules, 2)
    record = {
        "type": "incident.opened",
        "incident_id": "i1",
        "rule": rules[0].name,
        "category": rules[0].category,
        "severity": "sev2",
        "group": {},
        "ts": "2026-03-02T10:00:00Z",
        "response": None,
    }
    assert stage.take(0, 0, record)
    stage.heard(0, 10**15)
    assert stage.release() == [] and stage.through is None
    stage.heard(1, 0)  # shard 1 is behind the record's time
    assert stage.release() == []
    stage.heard(1, 10**15)
    [opened] = stage.release()
    assert opened["type"] == "case.opened" and opened["incident_id"] == "i1"
    stage.heard(1, 5)  # a mark never goes back
    assert stage.marks[1] == 10**15


def test_a_checkpoint_of_another_version_is_refused(world):
    rules = world[0]
    snapshot = CaseStage(rules, 1).snapshot() | {"version": 99}
    with pytest.raises(ValueError, match="version 99"):
        CaseStage.restore(rules, snapshot)
