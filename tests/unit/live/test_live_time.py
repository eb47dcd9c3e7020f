"""Time in the worker's shards when input partitions go quiet (issue: the quiet-time stall).

Partitions that end at different event times, one of them carrying only early events and
published last; idle markers in every order, several at once, a restore in between, a
partition that speaks again. A quiet system must finish every decision its events allow:
the records equal a replay of the same events up to the largest event time less the lateness.
"""

from __future__ import annotations

import itertools
import zlib

import orjson
import pytest
from corekit import MIN
from firebreak.adapters.drive import default_engine
from firebreak.adapters.live.routing import RouteStage
from firebreak.adapters.live.settings import WorkerSettings
from firebreak.adapters.live.shard import ShardState
from firebreak.core import Event, run_events
from test_core_properties import BASE, RULES

# The shards run on the engine under test (tests/conftest.py): every test here evaluates rules.
pytestmark = pytest.mark.usefixtures("rule_engine")

PARTITIONS, SHARDS, LATENESS = 4, 2, 5_000
SETTINGS = WorkerSettings(rules=(), shards=SHARDS, input_partitions=PARTITIONS, lateness_ms=LATENESS)
T_START = min(e.ts for e in BASE)
ENDS = {0: 90 * MIN, 1: 80 * MIN, 2: 61 * MIN, 3: 45 * MIN}  # each partition's last event time (from the start)


def partition_of(event: Event) -> int:
    return zlib.crc32(event.data["user"].encode()) % PARTITIONS


def partitioned() -> dict[int, list[Event]]:
    """BASE spread over the partitions by user, each cut at its own end time."""
    out: dict[int, list[Event]] = {p: [] for p in range(PARTITIONS)}
    for event in BASE:
        p = partition_of(event)
        if event.ts - T_START < ENDS[p]:
            out[p].append(event)
    return out


PARTS = partitioned()
EVENTS = sorted((e for events in PARTS.values() for e in events), key=lambda e: e.ts)
MAX_TS = max(e.ts for e in EVENTS)
# What a replay of the same events decides once it has seen them all: time at the last event less the lateness.
EXPECTED = run_events(RULES, EVENTS, lateness_ms=LATENESS, finish=False)


def multiset(records):
    return sorted(map(orjson.dumps, records))


class Cluster:
    """Route stage + every shard, fed by hand: the worker's stages without Kafka."""

    def __init__(self) -> None:
        self.route = RouteStage(RULES, SETTINGS)
        self.shards = [ShardState(RULES, s, SHARDS, PARTITIONS, LATENESS, default_engine()) for s in range(SHARDS)]
        self.routed: list[list[bytes]] = [[] for _ in range(SHARDS)]
        self.records: list[dict] = []

    def deliver(self, outs, tick: bool = True) -> None:
        for out in outs:
            assert out.topic == "routed"
            shard = self.shards[out.partition]
            shard.accept(len(self.routed[out.partition]), out.value)
            self.routed[out.partition].append(out.value)
            if tick:
                self.tick()

    def tick(self) -> None:
        for shard in self.shards:
            shard.tick()
            self.records += shard.pending
            shard.pending = []

    def interleaved(self, partitions: list[int], batch: int = 200) -> None:
        """The partitions published side by side, batch by batch (each in its own order)."""
        cursors = {p: 0 for p in partitions}
        while any(cursors[p] < len(PARTS[p]) for p in partitions):
            for p in partitions:
                start = cursors[p]
                chunk = [(p, start + i, orjson.dumps(e.data)) for i, e in enumerate(PARTS[p][start : start + batch])]
                cursors[p] += len(chunk)
                if chunk:
                    self.deliver(self.route.handle(chunk))

    def idle(self, partition: int, tick: bool = True) -> None:
        self.deliver(self.route.idle(partition), tick=tick)

    def watermarks(self) -> set[int | None]:
        return {shard.engine.watermark for shard in self.shards}


def published_with_the_early_partition_last() -> Cluster:
    cluster = Cluster()
    cluster.interleaved([0, 1, 2])
    assert cluster.records == [], "partition 3 has not spoken: time must wait for it"
    cluster.interleaved([3])  # only early events, published last
    return cluster


def test_the_scenario_opens_incidents_after_the_last_partition_would_have_stopped_time():
    """Guard: the bug only shows if decisions remain after the second-latest partition's end."""
    second_latest = T_START + ENDS[1]
    assert any(r["type"].startswith("incident.") and r["ts"] > second_latest for r in map(_ts_ms, EXPECTED))


def _ts_ms(record: dict) -> dict:
    from firebreak.core import parse_ts

    return {**record, "ts": parse_ts(record["ts"])}


@pytest.mark.parametrize("order", list(itertools.permutations(range(PARTITIONS))))
def test_idle_markers_in_any_order_bring_time_to_the_last_event(order):
    cluster = published_with_the_early_partition_last()
    for partition in order:
        cluster.idle(partition)
    assert cluster.watermarks() == {MAX_TS - LATENESS}
    assert multiset(cluster.records) == multiset(EXPECTED)


def test_several_idle_markers_in_one_batch():
    cluster = published_with_the_early_partition_last()
    for partition in (2, 0, 3, 1):
        cluster.idle(partition, tick=False)
    cluster.tick()
    assert cluster.watermarks() == {MAX_TS - LATENESS}
    assert multiset(cluster.records) == multiset(EXPECTED)


def test_until_every_partition_is_idle_the_slowest_active_one_holds_time():
    cluster = published_with_the_early_partition_last()
    end = {p: max(e.ts for e in PARTS[p]) for p in range(PARTITIONS)}
    cluster.idle(3)
    assert cluster.watermarks() == {end[2] - LATENESS}  # 3 is quiet: the next slowest holds time
    cluster.idle(0)
    assert cluster.watermarks() == {end[2] - LATENESS}  # 0 is ahead of 2 anyway
    cluster.idle(2)
    assert cluster.watermarks() == {end[1] - LATENESS}
    cluster.idle(1)
    assert cluster.watermarks() == {MAX_TS - LATENESS}  # all quiet: everything published was seen


def test_restore_from_a_checkpoint_taken_while_some_partitions_were_idle():
    cluster = published_with_the_early_partition_last()
    cluster.idle(3)
    cluster.idle(1)
    saved = [orjson.loads(orjson.dumps(shard.snapshot())) for shard in cluster.shards]
    assert all(snapshot["idle"] == [1, 3] for snapshot in saved)
    cluster.shards = [ShardState.restore(RULES, snapshot, PARTITIONS, LATENESS, default_engine()) for snapshot in saved]
    cluster.idle(2)
    cluster.idle(0)
    assert cluster.watermarks() == {MAX_TS - LATENESS}
    assert multiset(cluster.records) == multiset(EXPECTED)


def test_a_partition_that_speaks_again_with_older_events_gets_them_counted_late():
    cluster = published_with_the_early_partition_last()
    for partition in range(PARTITIONS):
        cluster.idle(partition)
    before = cluster.watermarks()
    old = dict(PARTS[3][-1].data, event_id="old-again", ts=PARTS[3][-1].ts + MIN)  # long before time stands
    cluster.deliver(cluster.route.handle([(3, len(PARTS[3]), orjson.dumps(old))]))
    assert cluster.watermarks() == before, "time never goes backwards"
    owning = [s for s in cluster.shards if s.stats["late"]]
    assert owning and sum(s.stats["late"] for s in cluster.shards) >= 1
    assert all(3 not in s.idle for s in cluster.shards)  # it is active again and holds time at its own
    new = dict(old, event_id="new-again", ts=MAX_TS + 10 * MIN)
    cluster.deliver(cluster.route.handle([(3, len(PARTS[3]) + 1, orjson.dumps(new))]))
    assert cluster.watermarks() == {MAX_TS + 10 * MIN - LATENESS}  # the only active partition leads


def test_a_shard_that_heard_nothing_has_no_time_and_stays_silent():
    state = ShardState(RULES, 0, 1, 2, lateness_ms=LATENESS)
    assert state.watermark() is None
    state.accept(0, RouteStage(RULES, SETTINGS).idle(0)[0].value)  # idle with nothing ever heard
    state.accept(1, RouteStage(RULES, SETTINGS).idle(1)[0].value)
    assert state.watermark() is None and state.tick() == []


def test_a_heartbeat_moves_time_and_counts_in_no_rule():
    from corekit import SEC, event, rules
    from firebreak.core import validate_event

    pack = rules("rule leak: count(pii) >= 1 over 1m by tenant -> sev2\nrule busy: count() >= 2 over 1m -> sev4")
    leak = [event("e1", 0, tenant="t", flags={"pii": True})]
    beats = [
        validate_event({"event_id": f"hb{i}", "ts": leak[0].ts + at, "type": "heartbeat"})
        for i, at in enumerate((10 * SEC, 20 * SEC, 30 * MIN))
    ]
    quiet = run_events(pack, leak, lateness_ms=0, finish=False)
    assert [r["type"] for r in quiet if r["type"].startswith("incident.")] == []  # time stands at the leak
    moved = run_events(pack, [*leak, *beats], lateness_ms=0, finish=False)
    opened = [(r["type"], r["rule"]) for r in moved if r["type"].startswith("incident.")]
    assert opened == [("incident.opened", "leak"), ("incident.resolved", "leak")]  # quiet minutes passed
