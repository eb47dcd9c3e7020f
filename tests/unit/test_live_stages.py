"""The worker's two stages without Kafka: routing, re-delivery, checkpoints, idle partitions."""

from __future__ import annotations

import zlib

import orjson
from test_core_properties import BASE, BASE_RECORDS, RULES

from engine.adapters.live.routing import RouteStage
from engine.adapters.live.settings import WorkerSettings
from engine.adapters.live.shard import ShardState

PARTITIONS, SHARDS = 4, 3
SETTINGS = WorkerSettings(rules=(), shards=SHARDS, input_partitions=PARTITIONS)


def input_messages():
    """BASE as it sits on a 4-partition input topic keyed by user: (partition, offset, bytes)."""
    offsets = [0] * PARTITIONS
    for event in BASE:
        partition = zlib.crc32(event.data["user"].encode()) % PARTITIONS
        yield partition, offsets[partition], orjson.dumps(event.data)
        offsets[partition] += 1


def multiset(records):
    return sorted(map(orjson.dumps, records))


def test_route_then_evaluate_equals_replay_even_with_redelivery_and_a_restart():
    route = RouteStage(RULES, SETTINGS)
    routed: list[list[bytes]] = [[] for _ in range(SHARDS)]
    messages = list(input_messages())

    def send(batch):
        for out in route.handle(batch):
            routed[out.partition].append(out.value)

    for start in range(0, len(messages), 100):
        send(messages[start : start + 100])
        if start == 2000:  # stage 1 crashed: its last 300 messages are delivered again, in other batches
            for again in range(start - 200, start + 100, 70):
                send(messages[again : min(again + 70, start + 100)])
    records = []
    for shard in range(SHARDS):
        state = ShardState(RULES, shard, SHARDS, PARTITIONS, SETTINGS.lateness_ms)
        log = routed[shard]
        cut = len(log) // 3
        for offset, value in enumerate(log[:cut]):
            state.accept(offset, value)
            state.tick()
        records += state.pending
        # crash after a checkpoint at `cut`; Faust re-delivers from an earlier committed offset
        saved = orjson.loads(orjson.dumps(state.snapshot()))
        state = ShardState.restore(RULES, saved, PARTITIONS, SETTINGS.lateness_ms)
        for offset in range(cut - 50, len(log)):
            state.accept(offset, log[offset])
            state.tick()
        records += state.pending  # after the restore: only what came after the checkpoint
        records += state.engine.finish(max(e.ts for e in BASE))
        assert state.stats["redelivered"] == 50
        assert state.stats["duplicates"] > 0
    assert multiset(records) == multiset(BASE_RECORDS)


def test_bad_messages_are_dead_lettered_with_a_reason():
    route = RouteStage(RULES, WorkerSettings(rules=(), max_event_bytes=1000))
    cases = {
        b"{not json": "invalid JSON",
        b'{"event_id": "e"}': "`ts` is missing",
        b'{"event_id": "e", "ts": "soon"}': "is not an RFC 3339 time",
        b'{"event_id": "e", "ts": 1, "prompt": "' + b"x" * 2000 + b'"}': "the limit is 1000",
        b"": "invalid JSON",
    }
    for raw, reason in cases.items():
        [out, *heartbeats] = route.handle([(0, 7, raw)])
        assert out.topic == "dead_letter" and all(b.topic == "routed" for b in heartbeats)
        letter = orjson.loads(out.value)
        assert reason in letter["reason"] and letter["offset"] == 7 and len(letter["raw"]) <= 4096
    assert route.stats["dead_lettered"] == len(cases)


def test_raw_text_is_not_forwarded():
    route = RouteStage(RULES, SETTINGS)
    outs = route.handle([(0, 0, orjson.dumps({"event_id": "e", "ts": 5, "model": "a", "prompt": "SECRET",
                                               "output": "SECRET", "flags": {"hallucination": True}}))])  # fmt: skip
    assert outs and all(b"SECRET" not in out.value for out in outs)


def test_watermark_waits_for_every_partition_unless_idle():
    state = ShardState(RULES, 0, 1, 2, lateness_ms=1000)
    state.accept(0, orjson.dumps({"p": 0, "hb": 50_000, "ev": []}))
    assert state.watermark() is None  # partition 1 not heard of yet
    state.accept(1, orjson.dumps({"p": 1, "hb": 20_000, "ev": []}))
    assert state.watermark() == 19_000  # the slower partition holds time back
    state.accept(2, RouteStage(RULES, SETTINGS).idle(1)[0].value)
    assert state.watermark() == 49_000  # idle: no longer counted
    state.tick()
    state.accept(3, orjson.dumps({"p": 1, "hb": 21_000, "ev": []}))
    assert 1 not in state.idle  # it spoke again: counted again ...
    assert state.watermark() == 49_000  # ... but time never goes backwards
    state.accept(4, orjson.dumps({"p": 1, "hb": 60_000, "ev": []}))
    assert state.watermark() == 49_000  # partition 0, now the slower one, holds time


def test_restore_from_an_older_full_snapshot_sends_each_record_once():
    """Heads (records + derived count) are committed often, full snapshots rarely: after a
    crash the shard replays from the full snapshot and must not re-send what heads committed."""
    route = RouteStage(RULES, SETTINGS)
    routed: list[list[bytes]] = [[] for _ in range(SHARDS)]
    messages = list(input_messages())
    for start in range(0, len(messages), 100):
        for out in route.handle(messages[start : start + 100]):
            routed[out.partition].append(out.value)
    committed = []
    for shard in range(SHARDS):
        log = routed[shard]
        state = ShardState(RULES, shard, SHARDS, PARTITIONS, SETTINGS.lateness_ms)
        full, head = None, None
        for offset, value in enumerate(log[: 2 * len(log) // 3]):
            state.accept(offset, value)
            state.tick()
            if state.pending:  # a head commit: these records are now visible
                committed += state.pending
                state.pending = []
                head = orjson.loads(orjson.dumps(state.header()))
            if offset == len(log) // 3:
                full = orjson.loads(orjson.dumps(state.snapshot()))
        # crash; restore the full snapshot and replay from its position
        restored = ShardState.restore(RULES, full, PARTITIONS, SETTINGS.lateness_ms)
        restored.suppress = head["derived"] - restored.derived
        assert restored.suppress > 0, "the test must cross committed heads after the full snapshot"
        for offset in range(restored.routed_next, len(log)):
            restored.accept(offset, log[offset])
            restored.tick()
        committed += restored.pending
        committed += restored.engine.finish(max(e.ts for e in BASE))
    assert multiset(committed) == multiset(BASE_RECORDS)


def test_boolean_group_values_survive_routing_and_checkpoints():
    from corekit import rules

    pack = rules("count(pii) >= 1 over 1m by tier -> sev3")
    settings = WorkerSettings(rules=(), shards=1, input_partitions=1)
    route = RouteStage(pack, settings)
    raw = [orjson.dumps({"event_id": f"e{i}", "ts": 1_000 + i, "tier": tier, "flags": {"pii": True}})
           for i, tier in enumerate([True, 1, True])]  # fmt: skip
    [message] = route.handle([(0, i, r) for i, r in enumerate(raw)])
    state = ShardState(pack, 0, 1, 1, lateness_ms=0)
    state.accept(0, message.value)
    state = ShardState.restore(pack, orjson.loads(orjson.dumps(state.snapshot())), 1, 0)
    groups = state.engine.states[0].groups
    seen = {(repr(g.group["tier"]), sum(b.n for b in g.buckets.values())) for g in groups.values()}
    assert seen == {("True", 2), ("1", 1)}
