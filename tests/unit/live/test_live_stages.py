"""The worker's two stages without Kafka: routing, re-delivery, checkpoints, idle partitions."""

from __future__ import annotations

import struct
import zlib

import cramjam
import orjson
import pytest
from firebreak.adapters.live import routed as routed_format
from firebreak.adapters.live.routed import RoutedFormatError
from firebreak.adapters.live.routing import RouteStage
from firebreak.adapters.live.settings import WorkerSettings
from firebreak.adapters.live.shard import ShardState
from test_core_properties import BASE, BASE_RECORDS, RULES

PARTITIONS, SHARDS = 4, 3
SETTINGS = WorkerSettings(rules=(), shards=SHARDS, input_partitions=PARTITIONS)


def input_messages():
    """BASE as it sits on a 4-partition input topic keyed by user: (partition, offset, bytes)."""
    offsets = [0] * PARTITIONS
    for event in BASE:
        partition = zlib.crc32(event.data["user"].encode()) % PARTITIONS
        yield partition, offsets[partition], orjson.dumps(event.data)
        offsets[partition] += 1


def beat(partition, ts):
    """A routed message with no event: input partition ``partition``'s time is ``ts``."""
    return routed_format.encode("x", [(partition, ts)], [b""])[0]


def route_all(route, messages, size):
    """Stage 1 over ``messages`` in batches of ``size``: each shard's routed log."""
    routed: list[list[bytes]] = [[] for _ in range(SHARDS)]
    for start in range(0, len(messages), size):
        for out in route.handle(messages[start : start + size]):
            if out.topic == "routed":
                routed[out.partition].append(out.value)
    return routed


def multiset(records):
    return sorted(map(orjson.dumps, records))


@pytest.fixture
def engine(rule_engine: str) -> str:
    """The shards' engine: the engine under test (stage 1 is native); checkpoints cross engines below."""
    return rule_engine


def test_route_then_evaluate_equals_replay_even_with_redelivery_and_a_restart(engine):
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
        state = ShardState(RULES, shard, SHARDS, PARTITIONS, SETTINGS.lateness_ms, engine)
        log = routed[shard]
        cut = len(log) // 3
        for offset, value in enumerate(log[:cut]):
            state.accept(offset, value)
            state.tick()
        records += state.pending
        # crash after a checkpoint at `cut`; Faust re-delivers from an earlier committed offset
        saved = orjson.loads(orjson.dumps(state.snapshot()))
        state = ShardState.restore(RULES, saved, PARTITIONS, SETTINGS.lateness_ms, engine)
        back = min(50, cut - 1)  # messages before the checkpoint's position, delivered again
        for offset in range(cut - back, len(log)):
            state.accept(offset, log[offset])
            state.tick()
        records += state.pending  # after the restore: only what came after the checkpoint
        records += state.engine.finish(max(e.ts for e in BASE))
        assert state.stats["redelivered"] == back > 0
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
    outs = route.handle(
        [
            (
                0,
                0,
                orjson.dumps(
                    {
                        "event_id": "e",
                        "ts": 5,
                        "model": "a",
                        "prompt": "SECRET",
                        "output": "SECRET",
                        "flags": {"hallucination": True},
                    }
                ),
            )
        ]
    )
    assert outs and all(b"SECRET" not in out.value for out in outs)


def test_watermark_waits_for_every_partition_unless_idle(engine):
    state = ShardState(RULES, 0, 1, 2, lateness_ms=1000, engine=engine)
    state.accept(0, beat(0, 50_000))
    assert state.watermark() is None  # partition 1 not heard of yet
    state.accept(1, beat(1, 20_000))
    assert state.watermark() == 19_000  # the slower partition holds time back
    state.accept(2, RouteStage(RULES, SETTINGS).idle(1)[0].value)
    assert state.watermark() == 49_000  # idle: no longer counted
    state.tick()
    state.accept(3, beat(1, 21_000))
    assert 1 not in state.idle  # it spoke again: counted again ...
    assert state.watermark() == 49_000  # ... but time never goes backwards
    state.accept(4, beat(1, 60_000))
    assert state.watermark() == 49_000  # partition 0, now the slower one, holds time


@pytest.mark.parametrize("before, after", [("python", "native"), ("native", "python"), ("native", "native")])
def test_restore_from_an_older_full_snapshot_sends_each_record_once(before, after):
    """Heads (records + derived count) are committed often, full snapshots rarely: after a
    crash the shard replays from the full snapshot and must not re-send what heads committed.
    A checkpoint written on one engine restores on the other (the Python core is the oracle):
    differential, these pairs in every pass whatever the engine under test."""
    route = RouteStage(RULES, SETTINGS)
    routed: list[list[bytes]] = [[] for _ in range(SHARDS)]
    messages = list(input_messages())
    for start in range(0, len(messages), 100):
        for out in route.handle(messages[start : start + 100]):
            routed[out.partition].append(out.value)
    committed = []
    for shard in range(SHARDS):
        log = routed[shard]
        state = ShardState(RULES, shard, SHARDS, PARTITIONS, SETTINGS.lateness_ms, before)
        full, head = None, None
        for offset, value in enumerate(log[: 2 * len(log) // 3]):
            state.accept(offset, value)
            state.tick()
            if state.pending:  # a head commit: these records are now visible
                committed += state.pending
                state.pending = []
                head = orjson.loads(orjson.dumps(state.header()))
            if offset == len(log) // 3:  # what the worker commits: on the native engine, JSON the core wrote
                full = orjson.loads(orjson.dumps(state.checkpoint()))
                assert full == orjson.loads(orjson.dumps(state.snapshot()))
        # crash; restore the full snapshot and replay from its position
        restored = ShardState.restore(RULES, full, PARTITIONS, SETTINGS.lateness_ms, after)
        restored.suppress = head["derived"] - restored.derived
        assert restored.suppress > 0, "the test must cross committed heads after the full snapshot"
        for offset in range(restored.routed_next, len(log)):
            restored.accept(offset, log[offset])
            restored.tick()
        committed += restored.pending
        committed += restored.engine.finish(max(e.ts for e in BASE))
    assert multiset(committed) == multiset(BASE_RECORDS)


def test_boolean_group_values_survive_routing_and_checkpoints(engine):
    from corekit import rules

    pack = rules("count(pii) >= 1 over 1m by tier -> sev3")
    settings = WorkerSettings(rules=(), shards=1, input_partitions=1)
    route = RouteStage(pack, settings)
    raw = [
        orjson.dumps({"event_id": f"e{i}", "ts": 1_000 + i, "tier": tier, "flags": {"pii": True}})
        for i, tier in enumerate([True, 1, True])
    ]
    [message] = route.handle([(0, i, r) for i, r in enumerate(raw)])
    state = ShardState(pack, 0, 1, 1, lateness_ms=0, engine=engine)
    state.accept(0, message.value)
    state = ShardState.restore(pack, orjson.loads(orjson.dumps(state.snapshot())), 1, 0, "python")  # to look in
    groups = state.engine.states[0].groups
    seen = {(repr(g.group["tier"]), sum(b.n for b in g.buckets.values())) for g in groups.values()}
    assert seen == {("True", 2), ("1", 1)}


# a format-5 row: LEN PARTITION OFFSET TS MASK, then {"event_id": "a", "ts": 4000}, uncompressed
# (format 6: the same row in a zstd frame)
FORMAT_5_ROW = (
    struct.pack("<IIqqQ", 28 + 26, 0, 0, 4_000, 1)
    + b"\x07\x02\x08event_id\x05\x01a\x02ts\x03"
    + struct.pack("<q", 4_000)
)


def test_routed_messages_of_an_earlier_format_are_refused_with_what_to_do(engine):
    """Formats 1-6 (events as objects, per-partition payloads, references into the input, JSON
    lines, uncompressed binary rows, rows without the population masks) may still be on the
    routed topic when a worker of this release starts: it stops with one line rather than guess
    (docs/live.md, "The data path")."""
    state = ShardState(RULES, 0, 1, 1, lateness_ms=0, engine=engine)
    earlier = [
        orjson.dumps({"p": 0, "hb": 4_000, "rv": "x", "ev": []}),
        b'{"v":2,"p":0,"hb":4000,"rv":"x"}\n1 4000 1 {}\n',
        orjson.dumps({"v": 3, "b": "k:1", "rv": "x", "parts": [[0, 4000, 0, 5, 5]]}),
        b'{"v":4,"rv":"x","parts":[[0,4000]]}\n{"event_id":"a","ts":4000}\n',
        b'{"v":5,"rv":"x","parts":[[0,4000]]}\n' + FORMAT_5_ROW,
        b'{"v":6,"rv":"x","parts":[[0,4000]]}\n' + bytes(cramjam.zstd.compress(FORMAT_5_ROW)),
        b"junk",
    ]
    for offset, value in enumerate(earlier):
        with pytest.raises(RoutedFormatError, match=r"format [1-6]?.*reads format 7 only|not JSON"):
            state.accept(offset, value)
    assert state.stats["events"] == 0


def test_an_unknown_checkpoint_version_is_refused_with_what_to_do(engine):
    from firebreak.adapters.live.shard import CheckpointError

    state = ShardState(RULES, 0, 1, 1, lateness_ms=0, engine=engine)
    future = {**state.snapshot(), "version": 9}
    with pytest.raises(CheckpointError, match=r"version 9 .*reads version 1.*--app-id"):
        ShardState.restore(RULES, future, 1, 0, engine)


def test_a_population_rule_counts_every_group_on_every_shard(engine):
    """`Kx population` compares a group with all groups: each shard must count the events of
    groups it does not own too, or a shard's population is a quarter of the users and the
    worker's records differ from a replay's."""
    from corekit import rules
    from firebreak.core import Event, run_events

    pack = rules("rule probing:\n  rate(prompt_injection) > 3x population over 1m by user min 3 events -> sev2\n")
    events = []
    for i in range(4000):
        user = f"u{i % 97}"
        flagged = (i % 7 == 0) or (user == "u5" and i > 2000)
        events.append(
            Event(
                f"e{i}",
                1_000 + i * 100,
                "inference",
                {"event_id": f"e{i}", "ts": 1_000 + i * 100, "user": user, "flags": {"prompt_injection": flagged}},
            )
        )
    expected = run_events(pack, events, lateness_ms=0, finish=False)
    assert any(r["type"] == "incident.opened" for r in expected)
    settings = WorkerSettings(rules=(), shards=SHARDS, input_partitions=1, lateness_ms=0)
    route = RouteStage(pack, settings)
    shards = [ShardState(pack, s, SHARDS, 1, 0, engine) for s in range(SHARDS)]
    offsets = [0] * SHARDS
    records = []
    for start in range(0, len(events), 250):
        batch = [(0, i, orjson.dumps(e.data)) for i, e in enumerate(events[start : start + 250], start)]
        for out in route.handle(batch):
            shards[out.partition].accept(offsets[out.partition], out.value)
            offsets[out.partition] += 1
            records += shards[out.partition].tick()
    assert multiset(records) == multiset(expected)


def test_report_events_reach_the_shards_of_report_rules(engine):
    """`reports(LABEL)` rules count report events: stage 1 routes them like inference events."""
    from corekit import rules
    from firebreak.core import Event, run_events

    pack = rules(
        "rule exposed:\n  reports(data_exposure) >= 2 over 1m by tenant -> sev1\n"
        "rule leak:\n  count(pii) >= 2 over 1m by tenant -> sev2\n"
    )
    events = []
    for i in range(600):
        data = {"event_id": f"e{i}", "ts": 1_000 + i * 500, "tenant": f"t{i % 5}", "flags": {"pii": i % 40 == 0}}
        if i % 9 == 0:
            data = {**data, "type": "report", "labels": ["data_exposure" if i % 2 else "wrong"]}
            del data["flags"]
        events.append(Event(data["event_id"], data["ts"], data.get("type", "inference"), data))
    expected = run_events(pack, events, lateness_ms=0, finish=False)
    assert {r["rule"] for r in expected if r["type"] == "incident.opened"} == {"exposed", "leak"}
    settings = WorkerSettings(rules=(), shards=SHARDS, input_partitions=1, lateness_ms=0)
    route = RouteStage(pack, settings)
    shards = [ShardState(pack, s, SHARDS, 1, 0, engine) for s in range(SHARDS)]
    offsets = [0] * SHARDS
    records = []
    for start in range(0, len(events), 50):
        batch = [(0, i, orjson.dumps(e.data)) for i, e in enumerate(events[start : start + 50], start)]
        for out in route.handle(batch):
            assert out.topic == "routed"
            shards[out.partition].accept(offsets[out.partition], out.value)
            offsets[out.partition] += 1
            records += shards[out.partition].tick()
    assert multiset(records) == multiset(expected)


def test_stage_1_sends_each_shard_its_events_once_as_data():
    """Format 4: one routed message per (batch, shard), its header naming every input partition
    of the batch with its time, then one line per event the shard must see — each event at most
    once per shard, with the rules to look at; nothing refers to the input topic."""
    route = RouteStage(RULES, SETTINGS)
    batch = list(input_messages())[:400]
    outs = [o for o in route.handle(batch) if o.topic == "routed"]
    assert sorted(o.partition for o in outs) == list(range(SHARDS))  # one message per shard
    partitions = sorted({p for p, _, _ in batch})
    seen = {}
    for out in outs:
        message = routed_format.decode(out.value)
        assert sorted(message.heads) == [(p, route.max_ts[p]) for p in partitions]
        for partition, offset, ts, mask, event in routed_format.rows(routed_format.plain(message.body)):
            key = (partition, offset)
            assert (key, out.partition) not in seen and mask > 0
            seen[key, out.partition] = event
            assert event["ts"] is not None and ts > 0
    assert {key for key, _ in seen} == {(p, o) for p, o, _ in batch}  # every event reaches a shard


def test_a_routed_row_carries_the_event_as_the_input_had_it_but_its_raw_text(engine):
    """Format 5's rows (binary, native/src/rows.rs) read back as the input line's JSON — every
    field and value, nested, escaped and non-ASCII, a repeated key's last value in its first
    place (as orjson) — without `prompt` and `output`; a malformed row is refused, not guessed."""
    lines = [
        b'{"event_id":"a\\u00e9\\"1","ts":1767600000000,"user":"\xc3\xbcser","tenant":"t","flags":{"pii":true,'
        b'"x":false},"scores":{"h":0.1,"b":1e-7},"tokens_in":12,"cost_usd":0.000123,"prompt":"p","output":"o",'
        b'"labels_x":[1,-2,3.5e300,null,"s",[{}],{"k":[]}],"user":"last"}',
        b'{"event_id":"b","ts":"2026-01-05T08:00:00.250+01:00","model":"m","latency_ms":9.5,"big":9007199254740993,'
        b'"nested":{"a":{"b":{"c":[true]}}},"empty":"","t\\tab":"\\n"}',
    ]
    lines[1] = lines[1][:-1] + b',"long":"' + b"y" * 300 + b'"}'  # lengths past 127: two bytes
    route = RouteStage(RULES, WorkerSettings(rules=(), shards=1, input_partitions=1))
    (out,) = [o for o in route.handle([(0, i, line) for i, line in enumerate(lines)]) if o.topic == "routed"]
    got = list(routed_format.rows(routed_format.plain(routed_format.decode(out.value).body)))
    assert [(p, o) for p, o, _, _, _ in got] == [(0, 0), (0, 1)]
    for line, (_, _, ts, mask, event) in zip(lines, got, strict=True):
        expected = orjson.loads(line)
        expected.pop("prompt", None), expected.pop("output", None)
        assert orjson.dumps(event) == orjson.dumps(expected) and mask > 0 and ts > 0
    body = routed_format.plain(routed_format.decode(out.value).body)
    with pytest.raises(RoutedFormatError):
        list(routed_format.rows(body[:-1]))
    shard = ShardState(RULES, 0, 1, 1, 30_000, engine)  # rows cut short, in a sound frame
    with pytest.raises(ValueError, match="cut short"):
        shard.accept(0, routed_format.encode("x", [(0, 1)], [bytes(cramjam.zstd.compress(body[:-1]))])[0])


def test_a_routed_body_is_one_zstd_frame_and_a_broken_one_is_refused_in_one_line(engine):
    """Format 6: stage 1 sends each shard its rows as one zstd frame (compressed in the native
    call, not by the producer), several times smaller than the rows; a shard refuses a body that
    is not one (cut, or not zstd) with one line naming what is wrong, and takes nothing of it."""
    route = RouteStage(RULES, SETTINGS)
    outs = [o for o in route.handle(list(input_messages())[:400]) if o.topic == "routed"]
    packed = [routed_format.decode(o.value).body for o in outs]
    assert all(b[:4] == b"\x28\xb5\x2f\xfd" for b in packed)
    plain = [routed_format.plain(b) for b in packed]
    assert sum(map(len, packed)) * 3 < sum(map(len, plain))
    assert sum(len(list(routed_format.rows(p))) for p in plain) >= 400
    body = packed[0]
    for broken, why in ((body[:-3], "broken zstd frame|not a zstd frame"), (b"rows" + body, "not a zstd frame")):
        shard = ShardState(RULES, 0, SHARDS, PARTITIONS, 30_000, engine)
        with pytest.raises(ValueError, match=why) as error:
            shard.accept(0, routed_format.encode("x", [(0, 1)], [broken])[0])
        assert "\n" not in str(error.value) and shard.stats["events"] == 0


def test_a_shards_large_batch_is_split_and_time_moves_after_its_last_part():
    """Lines past MESSAGE_BYTES go on in another message; only the last carries the heartbeats,
    so no shard evaluates a batch's time before it has every event of it."""
    from firebreak.native import _Host
    from firebreak.native.plan import plans_json

    route = RouteStage(RULES, SETTINGS)
    from firebreak import _native

    route.native = _native.NativeRouter(plans_json(RULES), SHARDS, _Host(RULES), 2_000)
    outs = [o for o in route.handle(list(input_messages())[:400]) if o.topic == "routed"]
    for shard in range(SHARDS):
        mine = [routed_format.decode(o.value) for o in outs if o.partition == shard]
        assert len(mine) > 1 and all(len(routed_format.plain(m.body)) <= 2_000 + 300 for m in mine)
        assert [bool(m.heads) for m in mine] == [False] * (len(mine) - 1) + [True]


async def test_the_worker_path_feeding_and_evaluating_in_one_call_gives_a_replays_records(engine):
    """The worker takes a routed message with `accept_offloaded` (feeding and evaluating in one
    native call, on a thread); the records are those of `accept` then `tick` — a replay's."""
    import asyncio

    async def offload(call):
        return await asyncio.get_running_loop().run_in_executor(None, call)

    route = RouteStage(RULES, SETTINGS)
    routed = route_all(route, list(input_messages()), 150)
    records = []
    for shard in range(SHARDS):
        state = ShardState(RULES, shard, SHARDS, PARTITIONS, SETTINGS.lateness_ms, engine)
        for offset, value in enumerate(routed[shard]):
            assert await state.accept_offloaded(offset, value, offload)
        assert not await state.accept_offloaded(0, routed[shard][0], offload)  # a re-delivery
        assert state.stats["events"] > 0 and state.engine.watermark is not None
        records += state.pending + state.engine.finish(max(e.ts for e in BASE))
    assert multiset(records) == multiset(BASE_RECORDS)


# ---- the maximum skew in stage 1 (issue 31): one far-future event must not blind a partition ----

DAY = 86_400_000


def one_partition(extra: dict[int, list[bytes]]):
    """BASE on one input partition, with ``extra`` messages inserted before the event at each index."""
    values = []
    for index, event in enumerate(BASE):
        values += extra.get(index, [])
        values.append(orjson.dumps(event.data))
    return [(0, offset, value) for offset, value in enumerate(values)]


def far(ts: int, n: int = 0) -> bytes:
    return orjson.dumps({"event_id": f"far-{n}", "ts": ts, "model": "gpt-4o", "user": "u1", "latency_ms": 5})


def shard_records(route, messages, partitions, engine, size=100):
    """Stage 1 over ``messages`` then every shard over its routed log: (records, dead letters, late)."""
    routed: list[list[bytes]] = [[] for _ in range(SHARDS)]
    dead = []
    for start in range(0, len(messages), size):
        for out in route.handle(messages[start : start + size]):
            if out.topic == "routed":
                routed[out.partition].append(out.value)
            else:
                dead.append(orjson.loads(out.value))
    records, late = [], 0
    for shard in range(SHARDS):
        state = ShardState(RULES, shard, SHARDS, partitions, SETTINGS.lateness_ms, engine)
        for offset, value in enumerate(routed[shard]):
            state.accept(offset, value)
            state.tick()
        records += state.pending + state.engine.finish(max(e.ts for e in BASE))
        late += state.stats["late"]
    return records, dead, late


def test_one_far_future_event_is_dead_lettered_and_moves_no_partition_time(engine):
    from firebreak.adapters.drive import ahead_text

    at = 500
    known = max(e.ts for e in BASE[:at])
    messages = one_partition({at: [far(known + 30 * DAY)]})
    route = RouteStage(RULES, WorkerSettings(rules=(), shards=SHARDS, input_partitions=1))
    records, dead, late = shard_records(route, messages, 1, engine)
    assert [letter["reason"] for letter in dead] == [ahead_text(known + 30 * DAY, known, 3_600_000)]
    assert dead[0]["offset"] == at and dead[0]["partition"] == 0
    assert route.max_ts[0] == max(e.ts for e in BASE)  # the partition's time is the honest events'
    assert route.stats["dead_lettered"] == 1 and route.stats["events"] == len(BASE)
    assert late == 0  # the events after it were routed and taken, not late
    assert multiset(records) == multiset(BASE_RECORDS)  # the shards' records are a replay's of BASE


@pytest.mark.parametrize("size", [3, 1000])  # the run of refusals carried across batches, or in one
def test_the_eighth_event_ahead_in_a_row_is_taken_a_producer_back_after_an_outage(size):
    route = RouteStage(RULES, WorkerSettings(rules=(), shards=SHARDS, input_partitions=2))
    base = 1_700_000_000_000
    jump = base + 2 * 3_600_000
    values = [far(base + i, i) for i in range(5)]
    values += [far(jump + i, 100 + i) for i in range(7)]  # 7 ahead ...
    values += [far(base + 10, 200)]  # ... then one that is not: the run starts again
    values += [far(jump + 100 + i, 300 + i) for i in range(8)]  # 8 ahead in a row: the 8th is taken
    values += [far(jump + 200, 400), far(base + 20, 401)]  # after the jump: the new time holds
    messages = [(1, offset, value) for offset, value in enumerate(values)]
    dead = [orjson.loads(o.value) for o in route.handle(messages[:5]) if o.topic != "routed"]  # its time: base
    for start in range(5, len(messages), size):
        dead += [orjson.loads(o.value) for o in route.handle(messages[start : start + size]) if o.topic != "routed"]
    assert [letter["offset"] for letter in dead] == [*range(5, 12), *range(13, 20)]
    assert all(letter["reason"].startswith("ahead: ") for letter in dead)
    assert route.max_ts == {1: jump + 200}
    assert route.stats["events"] == len(values) - 14 and route.stats["dead_lettered"] == 14


@pytest.mark.parametrize("crafted", [0, 1_700_000_000_000 + 30 * DAY])
def test_a_crafted_first_event_after_a_start_neither_refuses_the_next_nor_moves_the_clock(crafted):
    """Stage 1 knows no partition's time after a start: the first batch's median time seeds it
    (`RouteStage._seed_times`), not the first event. An epoch-0 event read first is taken as an
    old one and the honest events after it are not "ahead" of it (before: the next 7 were
    dead-lettered); a far-future one read first is refused as ahead and moves no time (before:
    taken, the partition's time and the shards' watermark 30 days ahead of every real event)."""
    from firebreak.adapters.drive import ahead_text

    t = 1_700_000_000_000
    values = [far(crafted, 0), *(far(t + 1_000 * i, i) for i in range(1, 40))]
    route = RouteStage(RULES, WorkerSettings(rules=(), shards=SHARDS, input_partitions=1))
    outs = route.handle([(0, offset, value) for offset, value in enumerate(values)])
    dead = [orjson.loads(out.value) for out in outs if out.topic == "dead_letter"]
    assert route.max_ts == {0: t + 39_000}  # the honest events' time
    if crafted == 0:
        assert dead == [] and route.stats["events"] == 40
    else:
        assert [(d["offset"], d["reason"]) for d in dead] == [
            (0, ahead_text(crafted, t + 21_000, 3_600_000))
        ]  # the median
        assert route.stats["events"] == 39
    # a later batch is measured against the partition's time, no longer seeded
    later = route.handle([(0, 40, far(t + 30 * DAY, 40)), (0, 41, far(t + 40_000, 41))])
    assert [orjson.loads(o.value)["offset"] for o in later if o.topic == "dead_letter"] == [40]


def test_max_skew_off_takes_every_event():
    route = RouteStage(RULES, WorkerSettings(rules=(), shards=SHARDS, max_skew_ms=None))
    t = 1_700_000_000_000
    outs = route.handle([(0, 0, far(t, 0)), (0, 1, far(t + 365 * DAY, 1))])
    assert all(out.topic == "routed" for out in outs) and route.max_ts == {0: t + 365 * DAY}


def test_partitions_have_their_own_time_and_run():
    route = RouteStage(RULES, WorkerSettings(rules=(), shards=SHARDS, max_skew_ms=60_000))
    t = 1_700_000_000_000
    outs = route.handle([(0, 0, far(t, 0)), (1, 0, far(t + 500_000, 1))])  # each partition's time, first
    outs += route.handle([(0, 1, far(t + 200_000, 2)), (1, 1, far(t + 520_000, 3))])
    [letter] = [orjson.loads(out.value) for out in outs if out.topic == "dead_letter"]
    assert (letter["partition"], letter["offset"]) == (0, 1) and "more than 1m after" in letter["reason"]
    assert route.max_ts == {0: t, 1: t + 520_000}


def test_the_max_skew_options_parse_a_duration_or_off():
    from firebreak.cli import build_parser

    parser = build_parser()
    worker = ["worker", "--rules", "r"]
    assert parser.parse_args(worker).max_skew == 3_600_000 == WorkerSettings(rules=()).max_skew_ms
    assert parser.parse_args([*worker, "--max-skew", "90m"]).max_skew == 90 * 60_000
    assert parser.parse_args([*worker, "--max-skew", "off"]).max_skew is None
    assert parser.parse_args(["replay", "--rules", "r", "--max-skew", "off", "f"]).max_skew is None
    assert parser.parse_args(["test", "--max-skew", "2h", "p"]).max_skew == 7_200_000
    with pytest.raises(SystemExit):
        parser.parse_args([*worker, "--max-skew", "soon"])


# --- routed format 7: rows that only count population rules ------------------------------------

POPULATION_PACK = (
    "rule probing:\n"
    '  rate(prompt_injection) > 3x population over 1m by user where model == "a" min 3 events -> sev2\n'
    "rule tenant_wave:\n"
    "  rate(jailbreak) > 2x baseline(10m, population) over 1m by tenant min 5 events -> sev3\n"
    "rule leak:\n"
    "  count(pii) >= 2 over 1m by model -> sev3\n"
)
RELOADED_PACK = (
    "rule probing:\n"
    "  rate(prompt_injection) > 2x population over 2m by user min 3 events -> sev2\n"
    "rule leak:\n"
    "  count(pii) >= 2 over 1m by model -> sev3\n"
    "rule by_tenant:\n"
    "  rate(prompt_injection) > 3x population over 1m by tenant min 5 events -> sev3\n"
)


def population_traffic(seed: int, n: int = 5000) -> list[bytes]:
    """One input partition: users probing now and then (flagged, some with another model), a few
    late events (behind the 20 s lateness), and far-future ones (ahead of the clock: stage 1
    refuses seven in a row; near the end eight, and takes the eighth)."""
    import random

    rng = random.Random(seed)
    values, t = [], 1_700_000_000_000
    for i in range(n):
        t += rng.randrange(20, 60)
        user = f"u{rng.randrange(40)}"
        probing = user in ("u3", "u7") and i > n // 3
        data = {
            "event_id": f"e{i}",
            "ts": t - (60_000 if i % 211 == 0 else 0),  # late: a minute behind
            "user": user,
            "tenant": f"t{rng.randrange(6)}",
            "model": rng.choice(["a", "a", "b"]),
            "flags": {
                "prompt_injection": rng.random() < (0.5 if probing else 0.02),
                "jailbreak": rng.random() < (0.3 if user == "u11" and i > n // 2 else 0.02),
                "pii": rng.random() < 0.01,
            },
        }
        values.append(orjson.dumps(data))
        if i == n // 2:  # seven ahead: refused (dead-lettered), the clock stays
            values += [far(t + 5 * 3_600_000 + k, 10_000 + k) for k in range(7)]
        if i == n - 40:  # eight ahead in a row: the 8th is taken, the clock jumps, the rest is late
            values += [far(t + 5 * 3_600_000 + k, 20_000 + k) for k in range(8)]
    return values


def run_shards(shards: int, engine: str, values: list[bytes], reload_at: int | None = None, in_flight: bool = False):
    """Stage 1 over ``values`` (batches of 97, one input partition, lateness 20 s) and ``shards``
    shards on ``engine``: their records, and how many population-only rows they took. With
    ``reload_at``, stage 1 and every shard load RELOADED_PACK at that batch: after the shards took
    every routed message of the batches before (``in_flight`` False) or before they take the
    last batch routed with the old rules (True: its rows name the old rules)."""
    from corekit import rules

    first, second = rules(POPULATION_PACK), rules(RELOADED_PACK)
    settings = WorkerSettings(rules=(), shards=shards, input_partitions=1, lateness_ms=20_000, max_skew_ms=3_600_000)
    route = RouteStage(first, settings)
    states = [ShardState(first, s, shards, 1, 20_000, engine) for s in range(shards)]
    offsets = [0] * shards
    records, compact = [], 0
    size = 97
    for batch, start in enumerate(range(0, len(values), size)):
        if batch == reload_at and not in_flight:
            route.set_rules(second)
            for state in states:
                records += state.set_rules(second)
        outs = [o for o in route.handle([(0, i, v) for i, v in enumerate(values[start : start + size], start)])]
        if batch == reload_at and in_flight:
            route.set_rules(second)
            for state in states:
                records += state.set_rules(second)
        for out in outs:
            if out.topic != "routed":
                continue
            message = routed_format.decode(out.value)
            compact += sum(1 for head in routed_format.heads(routed_format.plain(message.body)) if head[3] == 0)
            states[out.partition].accept(offsets[out.partition], out.value)
            offsets[out.partition] += 1
            records += states[out.partition].tick()
    for state in states:
        records += state.engine.finish()
    late = sum(state.stats["late"] for state in states)
    return records, compact, late


def test_a_row_only_for_population_rules_carries_its_time_and_counts(engine):
    """Format 7's row head: MASK names the rules whose pair the shard owns (a population rule's
    too, on its owner only), POP the population rules counted there without owning the pair, and
    FLAGGED those of them whose flag is set; a row with an empty MASK only counts them."""
    from corekit import rules

    pack = rules(POPULATION_PACK)
    settings = WorkerSettings(rules=(), shards=SHARDS, input_partitions=1)
    route = RouteStage(pack, settings)
    event = {"event_id": "e", "ts": 5_000, "user": "u1", "tenant": "t1", "model": "a"}
    event["flags"] = {"prompt_injection": True, "jailbreak": False}
    other = {**event, "event_id": "f", "model": "b"}  # fails probing's `where`
    heads = {}
    for out in route.handle([(0, 0, orjson.dumps(event)), (0, 1, orjson.dumps(other))]):
        for _partition, offset, _ts, mask, pop, flagged in routed_format.heads(
            routed_format.plain(routed_format.decode(out.value).body)
        ):
            heads[out.partition, offset] = (mask, pop, flagged)
    for offset, counted in ((0, 0b011), (1, 0b010)):  # probing (bit 0) and tenant_wave (bit 1)
        owners = {}
        for shard in range(SHARDS):
            mask, pop, flagged = heads.get((shard, offset), (0, 0, 0))
            assert mask & pop == 0 and flagged & ~pop == 0
            assert (mask | pop) & 0b011 == counted  # every shard counts the population
            for bit in (0, 1):
                if mask >> bit & 1:
                    owners.setdefault(bit, []).append(shard)
            assert flagged == pop & 0b001  # only prompt_injection is set
        assert all(len(shards) == 1 for shards in owners.values())  # one owner per pair
    assert any(mask == 0 for mask, _, _ in heads.values())  # some shard has only population rules


def test_a_population_only_row_naming_rules_the_shard_has_not_is_an_event_and_nothing_more(engine):
    """A row (the routed topic is written by stage 1 only, but a shard must not stop on what it
    reads) whose POP names rule bits past the shard's rules: the event is taken and counted for
    no rule, on both engines — no traceback."""
    state = ShardState(RULES, 0, 1, 1, lateness_ms=0, engine=engine)
    value = b"\x07\x00"  # an empty object: a population-only row's value is not read
    row = struct.pack("<IIqqQQQ", 44 + len(value), 0, 0, 5_000, 0, 1 << 63, 1 << 63) + value
    body = bytes(cramjam.zstd.compress(row))
    state.accept(0, routed_format.encode(state.rules_version, [(0, 5_000)], [body])[0])
    assert state.stats["events"] == 1 and state.stats["late"] == 0


@pytest.mark.parametrize("seed", [1, 2])
def test_shards_fed_population_only_rows_equal_one_engine(engine, seed):
    """Shards that get an event only for population rules count it without reading it: their
    records equal one shard's (one engine over the same events), with late events, events
    ahead of the clock, a population rule with a `where` and a flag, and a baseline that falls
    back to the population."""
    values = population_traffic(seed)
    one, compact_one, late_one = run_shards(1, engine, values)
    many, compact, late = run_shards(SHARDS, engine, values)
    assert compact_one == 0 and compact > 100  # the new rows were there, and used
    assert late_one > 0
    assert any(r["type"] == "incident.opened" and r["rule"] == "probing" for r in one)
    assert multiset(many) == multiset(one)


@pytest.mark.parametrize("in_flight", [False, True])
def test_population_only_rows_through_a_rule_reload(engine, in_flight):
    """A reload re-routes: rows routed with the new rules count them. Rows routed with the old
    rules and taken after the reload (``rv`` not the shard's) keep their event, so the shard
    evaluates them in full with its new rules, as with format 6: the records are the same on
    both engines and, with nothing in flight, one engine's."""
    values = population_traffic(3)
    reload_at = len(values) // 97 // 2
    many, compact, _ = run_shards(SHARDS, engine, values, reload_at, in_flight)
    assert compact > 100
    assert any(r["rule"] == "by_tenant" for r in many)  # the new rules evaluated
    if not in_flight:
        one, _, _ = run_shards(1, engine, values, reload_at, in_flight)
        assert multiset(many) == multiset(one)
    other = "python" if engine == "native" else "native"
    assert multiset(run_shards(SHARDS, other, values, reload_at, in_flight)[0]) == multiset(many)


@pytest.mark.parametrize("crafted", [0, 1_700_000_000_000 + 30 * DAY])
@pytest.mark.parametrize("known", ["before", "same batch"])
def test_a_crafted_event_alone_in_a_partitions_first_batch_is_measured_from_the_others(crafted, known):
    """A partition whose first batch holds one event has no median to outvote it: it is measured
    from the latest time of the partitions stage 1 knows — a far-future event is refused as
    ahead (before: taken, the partition's time 30 days ahead), an epoch-0 one is taken as an
    old event and the honest events after it are not ahead of it."""
    from firebreak.adapters.drive import ahead_text

    t = 1_700_000_000_000
    route = RouteStage(RULES, WorkerSettings(rules=(), shards=SHARDS, input_partitions=2))
    honest = [(0, i, far(t + 1_000 * i, i)) for i in range(10)]
    if known == "before":
        route.handle(honest)
        first = [(1, 0, far(crafted, 100))]
    else:
        first = [*honest, (1, 0, far(crafted, 100))]
    outs = route.handle(first)
    dead = [orjson.loads(out.value) for out in outs if out.topic == "dead_letter"]
    other = t + 9_000 if known == "before" else t + 5_000  # partition 0's time, or its first batch's median
    if crafted != 0:
        assert [(d["partition"], d["offset"], d["reason"]) for d in dead] == [
            (1, 0, ahead_text(crafted, other, 3_600_000))
        ]
        assert 1 not in route.max_ts  # no time of its own: the shards wait for one
    else:
        assert dead == [] and route.max_ts[1] == other  # taken as an old event; measured from the others' time
    # the partition's honest events after it are taken, none of them "ahead"
    later = route.handle([(1, 1 + i, far(t + 10_000 + i, 101 + i)) for i in range(8)])
    assert [o for o in later if o.topic == "dead_letter"] == []
    assert route.max_ts[1] == t + 10_007


def test_a_lone_first_event_is_its_partitions_time_when_nothing_is_known():
    # no other partition's time: the one event seeds its own (as before), valid or not
    t = 1_700_000_000_000
    route = RouteStage(RULES, WorkerSettings(rules=(), shards=SHARDS, input_partitions=2))
    outs = route.handle([(1, 0, far(t + 30 * DAY, 0))])
    assert all(out.topic == "routed" for out in outs) and route.max_ts == {1: t + 30 * DAY}
