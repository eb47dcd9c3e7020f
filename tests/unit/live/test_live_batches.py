"""Stage 1's input in batches (engine/firebreak/adapters/live/batches.py) across rebalances, without a broker.

The drain loop holds input messages past a fetch while it lingers for a fuller batch: read (past
Faust's read offset) but not yet routed nor acked. These tests drive the real loop
(`batches._drain`) and the worker's real `InputSource.route_batch` over a consumer that keeps
Faust's own offset bookkeeping (`_new_offset`, `_should_commit`, `perform_seek`, `_add_gap` of
faust-streaming's `Consumer`; acks by `batches.ack_offsets`, checked against Faust's `ack`
below) and rebalances as Faust over aiokafka does: a revoke
stops the flow and forgets the partition's read, acked and committed offsets; an assignment
starts fetching again from the group's committed offset (aiokafka makes new partition states; Faust
seeks to the committed offsets and resumes the flow). What must hold: every input message is
routed by some member before the group's committed offset passes it.
"""

from __future__ import annotations

import asyncio
import random
from collections import Counter, defaultdict
from functools import partial
from types import SimpleNamespace
from weakref import WeakSet

import pytest
from faust.transport.consumer import Consumer as FaustConsumer
from faust.types import TP
from firebreak.adapters.live import batches
from firebreak.adapters.live.committer import Committer
from firebreak.adapters.live.input_source import InputSource
from firebreak.adapters.live.routing import Out
from firebreak.adapters.live.settings import WorkerSettings
from firebreak.adapters.live.shard_host import ShardHost
from intervaltree import IntervalTree
from mode.utils.queues import FlowControlEvent

TOPIC = "events"
P0, P1 = TP(TOPIC, 0), TP(TOPIC, 1)


class Record:  # aiokafka's ConsumerRecord: the fields the drain loop reads
    def __init__(self, tp: TP, offset: int) -> None:
        self.topic, self.partition, self.offset = tp.topic, tp.partition, offset
        self.value = b'{"n": %d}' % offset


class Group:
    """The broker's side: each partition's log length and the group's committed offsets."""

    def __init__(self) -> None:
        self.ends: dict[TP, int] = {P0: 0, P1: 0}
        self.committed: dict[TP, int] = {}
        self.routed: dict[TP, set[int]] = defaultdict(set)  # by any member

    def publish(self, tp: TP, count: int) -> None:
        self.ends[tp] += count


class Consumer:
    """The part of Faust's consumer the drain loop and `InputSource.route_batch` use."""

    _new_offset = FaustConsumer._new_offset
    _should_commit = FaustConsumer._should_commit
    _filter_committable_offsets = FaustConsumer._filter_committable_offsets
    _add_gap = FaustConsumer._add_gap
    perform_seek = FaustConsumer.perform_seek

    def __init__(self, group: Group, app: SimpleNamespace, fetch_max: int = 3) -> None:
        self.group, self.app, self.fetch_max = group, app, fetch_max
        self._buffered_partitions: set[TP] = set()
        self.callback = None
        self._stopped = asyncio.Event()
        self.diag = SimpleNamespace(set_flag=lambda flag: None, unset_flag=lambda flag: None)
        self._commit_every = None
        self._n_acked = 0
        self._gap = defaultdict(IntervalTree)
        self._acked = defaultdict(list)
        self._acked_index = defaultdict(set)
        self._read_offset = defaultdict(lambda: None)
        self._committed_offset = defaultdict(lambda: None)
        self._unacked_messages = WeakSet()
        self._waiting_for_ack = None
        self.assigned: set[TP] = set()
        self.position: dict[TP, int] = {}
        self.flow_active = True
        self.can_resume_flow = asyncio.Event()
        self.can_resume_flow.set()
        self.suspend_flow = asyncio.Event()
        self.should_stop = False
        self.consumer_stopped_errors = ()

    def assignment(self) -> set[TP]:
        return set(self.assigned)

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)

    async def _wait_next_records(self, timeout: float):
        """Faust's `_wait_next_records` over aiokafka's `fetched_records`: wait for the flow, return
        what is there (aiokafka's position moves past what it returns) and the active partitions."""
        if not self.flow_active:
            await self.can_resume_flow.wait()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while not self._available() and loop.time() < deadline:
            await asyncio.sleep(0.002)
        records = {}
        for tp in sorted(self.assigned):
            end = min(self.group.ends[tp], self.position[tp] + self.fetch_max)
            if end > self.position[tp]:
                records[tp] = [Record(tp, offset) for offset in range(self.position[tp], end)]
            self.position[tp] = max(self.position[tp], end)
        return records, set(self.assigned)

    def highwater(self, tp: TP) -> int:
        return self.group.ends[tp]

    def _to_message(self, tp: TP, record: Record):  # pragma: no cover - only the input topic here
        raise AssertionError("only the input topic is fetched here")

    def _available(self) -> bool:
        return any(self.position[tp] < self.group.ends[tp] for tp in self.assigned)

    async def seek_to_committed(self) -> dict[TP, int | None]:  # aiokafka: seeks only to an offset > 0
        committed = {tp: self.group.committed.get(tp) for tp in self.assigned}
        for tp, offset in committed.items():
            if offset and offset > 0:
                self.position[tp] = offset
        return committed

    async def commit(self) -> None:
        """Faust's `force_commit`: the acked offsets' first consecutive run, for assigned partitions."""
        offsets = self._filter_committable_offsets(list(self._acked))
        for tp, offset in offsets.items():
            if tp in self.assigned:
                self.group.committed[tp] = offset
                self._committed_offset[tp] = offset

    def revoke(self) -> None:
        """Faust's `Consumer.on_partitions_revoked` and `App._on_partitions_revoked` (eager: all)."""
        self.flow_active = False
        self.can_resume_flow.clear()
        self.suspend_flow.set()
        self.app.flow_control.suspend()
        for tp in self.assigned:
            for offsets in (self._gap, self._acked, self._acked_index, self._read_offset, self._committed_offset):
                offsets.pop(tp, None)
        self.assigned = set()

    async def assign(self, tps: set[TP]) -> None:
        """aiokafka's new assignment (positions from the committed offsets, else the earliest), then
        Faust's recovery: seek to the committed offsets, resume the flow."""
        self.assigned = set(tps)
        self.position = {tp: self.group.committed.get(tp, 0) for tp in tps}
        await self.perform_seek()
        self.flow_active = True
        self.can_resume_flow.set()
        self.suspend_flow.clear()
        self.app.flow_control.resume()


class Member:
    """One worker of the group: the drain loop and `InputSource.route_batch` over a `Consumer`."""

    def __init__(self, group: Group, linger_s: float, size: int = 1_000, send_gate: asyncio.Event | None = None):
        flow = FlowControlEvent(initially_suspended=False)
        self.app = SimpleNamespace(
            flow_control=flow,
            should_stop=False,
            consumer_generation_id=0,
            monitor=SimpleNamespace(track_tp_end_offset=lambda tp, offset: None),
            topics=SimpleNamespace(acks_enabled_for=lambda topic: True),
        )
        self.consumer = self.app.consumer = Consumer(group, self.app)
        self.group = group
        self.send_gate = send_gate
        stage1 = SimpleNamespace(handle_offloaded=self._route_offloaded)
        self.source = InputSource(
            WorkerSettings(rules=(), input_topic=TOPIC), self.app, stage1, SimpleNamespace(events_in=0), self._send
        )
        drain = batches._drain(self.app, self.consumer, TOPIC, self.source.route_batch, size, linger_s)
        self.task = asyncio.ensure_future(drain(SimpleNamespace(_stopped=asyncio.Event())))

    async def _route_offloaded(self, batch, offload):
        return self._route(batch)

    def _route(self, batch):
        for partition, offset, _ in batch:
            self.group.routed[TP(TOPIC, partition)].add(offset)
        return [Out("routed", 0, b"")]

    async def _send(self, out):
        if self.send_gate is not None:
            await self.send_gate.wait()

    def held(self) -> bool:
        """Messages read past a fetch but not routed."""
        return any(o is not None and o not in self.group.routed[tp] for tp, o in self.consumer._read_offset.items())

    async def stop(self) -> None:
        self.task.cancel()
        await asyncio.gather(self.task, return_exceptions=True)


async def until(condition, timeout: float = 5.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not condition():
        assert loop.time() < deadline, "timed out"
        await asyncio.sleep(0.002)


def all_routed(group: Group) -> bool:
    return all(group.routed[tp] >= set(range(end)) for tp, end in group.ends.items())


def routed_before_committed(group: Group) -> None:
    for tp, committed in group.committed.items():
        missing = set(range(committed)) - group.routed[tp]
        assert not missing, f"{tp}: committed {committed} but offsets {sorted(missing)} were never routed"


async def test_messages_held_across_a_revoke_and_return_are_routed():
    group = Group()
    member = Member(group, linger_s=0.3)
    await member.consumer.assign({P0})
    group.publish(P0, 5)
    try:
        await until(lambda: member.consumer._read_offset[P0] == 4)
        assert member.held() and not group.routed[P0]  # lingering: read, not routed
        member.consumer.revoke()
        await member.consumer.assign({P0})  # the same worker is given it back
        group.publish(P0, 5)
        await until(lambda: group.routed[P0] >= set(range(10)))
        await until(lambda: len(member.consumer._acked[P0]) == 10)
        await member.consumer.commit()
        assert group.committed[P0] == 10
    finally:
        await member.stop()


async def test_a_revoke_and_return_while_a_batch_is_being_sent():
    gate = asyncio.Event()
    group = Group()
    member = Member(group, linger_s=0.05, send_gate=gate)
    await member.consumer.assign({P0, P1})
    group.publish(P0, 4)
    group.publish(P1, 4)
    try:
        await until(lambda: group.routed[P0] or group.routed[P1])  # routed, its sends not done: not acked
        member.consumer.revoke()
        await member.consumer.assign({P0, P1})
        gate.set()
        group.publish(P0, 3)
        await until(lambda: group.routed[P0] >= set(range(7)) and group.routed[P1] >= set(range(4)))
        await asyncio.sleep(0.1)
        await member.consumer.commit()
        assert group.committed == {P0: 7, P1: 4}
        routed_before_committed(group)
    finally:
        await member.stop()


async def test_messages_held_when_their_partition_moves_are_routed_by_the_next_owner_first():
    group = Group()
    first = Member(group, linger_s=0.3)
    await first.consumer.assign({P0, P1})
    group.publish(P0, 5)
    try:
        await until(lambda: first.consumer._read_offset[P0] == 4)
        first.consumer.revoke()
        await first.consumer.assign({P1})  # P0 went to another member, which reads it from the committed offset
        await asyncio.sleep(0.4)
        assert not first.consumer._acked[P0]
        second = Member(group, linger_s=0.0)
        await second.consumer.assign({P0})
        await until(lambda: group.routed[P0] >= set(range(5)))
        await asyncio.sleep(0.05)
        await second.consumer.commit()
        await first.consumer.commit()
        assert group.committed[P0] == 5
        await second.stop()
    finally:
        await first.stop()


async def test_random_rebalances_never_commit_past_an_unrouted_message():
    """Publishing, lingering, revokes with the partitions given back or moved to a second member,
    commits, in random order: the group's committed offsets never pass a message nobody routed,
    and in the end every message is routed."""
    for seed in range(12):
        rng = random.Random(seed)
        group = Group()
        members = [Member(group, linger_s=rng.choice([0.0, 0.02, 0.2])) for _ in range(2)]
        await members[0].consumer.assign({P0, P1})
        await members[1].consumer.assign(set())
        try:
            for _ in range(40):
                action = rng.random()
                if action < 0.4:
                    group.publish(rng.choice([P0, P1]), rng.randint(1, 6))
                elif action < 0.6:
                    for member in members:
                        member.consumer.revoke()
                    tps = [P0, P1]
                    rng.shuffle(tps)
                    cut = rng.randint(0, 2)
                    await members[0].consumer.assign(set(tps[:cut]))
                    await members[1].consumer.assign(set(tps[cut:]))
                else:
                    await rng.choice(members).consumer.commit()
                routed_before_committed(group)
                await asyncio.sleep(rng.choice([0.0, 0.005, 0.05]))
            await until(partial(all_routed, group), 5)
        finally:
            for member in members:
                await member.stop()


async def test_the_loop_fetches_the_next_batch_while_stage_1_sends_the_last_one_in_order():
    """Stage 1 does not hold up the drain loop (which also hands the shards their routed messages):
    while a batch's sends wait, the loop reads on — up to `STAGE1_AHEAD` batches in hand, no more —
    and every batch is routed and acked in the order it was fetched, none before it is sent."""
    gate = asyncio.Event()
    group = Group()
    member = Member(group, linger_s=0.0, size=3, send_gate=gate)
    order: list[int] = []
    route = member._route

    def routed_in_order(batch):
        order.extend(offset for _, offset, _ in batch)
        return route(batch)

    member._route = routed_in_order
    await member.consumer.assign({P0})
    group.publish(P0, 12)  # four fetches of 3: four batches
    try:
        ahead = batches.STAGE1_AHEAD
        await until(lambda: member.consumer._read_offset[P0] == 3 * (ahead + 1) - 1)
        await asyncio.sleep(0.05)
        # the first batch routed, its sends waiting; the next ones read; the loop waits for the oldest
        assert member.consumer._read_offset[P0] == 3 * (ahead + 1) - 1
        assert order == [0, 1, 2] and not member.consumer._acked[P0]
        gate.set()
        await until(lambda: len(member.consumer._acked[P0]) == 12)
        assert order == list(range(12))
        await member.consumer.commit()
        assert group.committed[P0] == 12
    finally:
        await member.stop()


async def test_a_batch_stage_1_fails_on_stops_the_loop_and_the_batches_after_it():
    group = Group()
    member = Member(group, linger_s=0.0, size=3)
    tried: list[int] = []

    def failing(batch):
        tried.append(batch[0][1])
        raise RuntimeError("stage 1 failed")

    member._route = failing
    await member.consumer.assign({P0})
    group.publish(P0, 9)
    with pytest.raises(RuntimeError, match="stage 1 failed"):
        await asyncio.wait_for(member.task, 5)
    assert tried == [0] and not member.consumer._acked[P0]  # the batches after it were not routed


# ---- stage 2 across a revoke: a shard starts only while its routed partition is assigned here ----------


class FakeWriter:
    """A shard's transactional producer: starting it fences every earlier producer of the shard."""

    calls: list[str] = []

    def __init__(self, settings, number: int) -> None:
        self.number = number

    async def start(self) -> None:
        FakeWriter.calls.append(f"fence {self.number}")

    async def stop(self) -> None:
        FakeWriter.calls.append(f"stop {self.number}")


def stage2_worker(monkeypatch, load=None) -> ShardHost:
    """The worker's shard host, its producers and checkpoint reads faked (`FakeWriter`)."""
    from firebreak.adapters.live import shard_host
    from firebreak.adapters.live.settings import WorkerSettings

    async def load_checkpoint(settings, number):
        FakeWriter.calls.append(f"load {number}")
        if load is not None:
            await load()
        return None, None

    FakeWriter.calls = []
    monkeypatch.setattr(shard_host, "ShardWriter", FakeWriter)
    monkeypatch.setattr(shard_host, "load_checkpoint", load_checkpoint)
    settings = WorkerSettings(rules=(), app_id="t", shards=2, input_partitions=2)
    metrics = SimpleNamespace(observe_evaluation=lambda seconds: None, checkpoint_failures=Counter())
    return ShardHost(settings, (), Committer(settings, metrics), metrics)


def routed_event(partition: int, offset: int = 0):
    return SimpleNamespace(
        message=SimpleNamespace(partition=partition, offset=offset), value=b'{"v":7,"rv":"x","parts":[[0,1]]}'
    )


class Stream:
    def __init__(self) -> None:
        self.acked: list = []

    async def ack(self, event) -> None:
        self.acked.append(event)


async def test_a_routed_message_delivered_after_its_revoke_starts_no_shard(monkeypatch):
    """Seen in the fencing fault test: a worker resumed from SIGSTOP had its shards revoked, then
    took a routed message fetched before the pause — it started that shard anew from the checkpoint
    and fenced the shard's new owner; the records of the new owner's open transaction were lost."""
    worker = stage2_worker(monkeypatch)
    worker.assigned({0, 1})
    await worker.revoked({0, 1})
    stream = Stream()
    await worker.evaluate(stream, routed_event(0))
    assert worker.shards == {} and FakeWriter.calls == [] and stream.acked == []
    worker.assigned({1})
    await worker.evaluate(stream, routed_event(1))
    assert list(worker.shards) == [1]
    assert FakeWriter.calls == ["fence 1", "load 1"]  # fenced before reading: no commit can follow the read


async def test_a_shard_revoked_while_it_starts_is_not_kept(monkeypatch):
    loading = asyncio.Event()
    go_on = asyncio.Event()

    async def load():
        loading.set()
        await go_on.wait()

    worker = stage2_worker(monkeypatch, load)
    worker.assigned({0})
    starting = asyncio.ensure_future(worker.evaluate(Stream(), routed_event(0)))
    await loading.wait()
    await worker.revoked({0})
    go_on.set()
    await starting
    assert worker.shards == {}
    assert FakeWriter.calls == ["fence 0", "load 0", "stop 0"]


async def test_a_shard_waits_out_a_broker_that_is_away_when_its_producer_starts(monkeypatch):
    """The broker restart fault test: the producer's start failed while the broker was away, and
    the agent crashed (the routed message it held was lost to the shard)."""
    from aiokafka.errors import KafkaConnectionError

    worker = stage2_worker(monkeypatch)
    failures = [KafkaConnectionError("broker away")]
    start = FakeWriter.start

    async def flaky_start(self):
        if failures:
            FakeWriter.calls.append("fence failed")
            raise failures.pop()
        await start(self)

    monkeypatch.setattr(FakeWriter, "start", flaky_start)
    worker.assigned({0})
    await worker.evaluate(Stream(), routed_event(0))
    assert list(worker.shards) == [0]
    assert FakeWriter.calls == ["fence failed", "fence 0", "load 0"]
    assert worker.metrics.checkpoint_failures == {"producer": 1}  # firebreak_checkpoint_failures_total


def test_ack_offsets_is_fausts_ack_for_many_offsets():
    """`batches.ack_offsets` keeps Faust's acked offsets as `Consumer.ack` does, message by message."""

    def consumer():
        topics = SimpleNamespace(acks_enabled_for=lambda topic: True)
        c = SimpleNamespace(
            _committed_offset=defaultdict(lambda: None),
            _acked_index=defaultdict(set),
            _acked=defaultdict(list),
            _n_acked=0,
            _unacked_messages=WeakSet(),
            _waiting_for_ack=None,
            app=SimpleNamespace(topics=topics),
        )
        c._committed_offset[P0] = 5
        return c

    class Message:  # Faust's: weakly referenced by the consumer's unacked set
        def __init__(self, offset: int) -> None:
            self.tp, self.topic, self.offset, self.acked = P0, TOPIC, offset, False

    offsets = [3, 5, 6, 6, 9, 7]
    ours, faust = consumer(), consumer()
    batches.ack_offsets(ours, P0, offsets)
    for offset in offsets:
        FaustConsumer.ack(faust, Message(offset))
    assert (ours._acked, ours._acked_index, ours._n_acked) == (faust._acked, faust._acked_index, faust._n_acked)
    assert ours._acked[P0] == [5, 6, 9, 7]


def test_a_worker_with_another_shard_count_than_its_group_does_not_start():
    from firebreak.adapters.live.app import shards_mismatch
    from firebreak.adapters.live.settings import WorkerSettings

    settings = WorkerSettings(rules=(), app_id="fraud", shards=2)
    assert shards_mismatch(settings, None) is None  # a new group: the worker creates the routed topic
    assert shards_mismatch(settings, 2) is None
    problem = shards_mismatch(settings, 4)
    assert problem is not None and "--shards 4" in problem and "fraud.routed" in problem


async def test_a_paused_worker_hears_from_its_group_before_it_starts_a_shard(monkeypatch):
    """Seen in the pause fault test's logs: resumed from SIGSTOP, the worker took a routed message
    it had fetched before the pause *before* learning of the rebalance, started that shard and so
    fenced the shard's new owner. Now a shard does not start right after a pause until the group
    has had a heartbeat's time to say whose it is."""
    import time

    from firebreak.adapters.live.settings import WorkerSettings

    worker = stage2_worker(monkeypatch)
    worker.settings = WorkerSettings(rules=(), app_id="t", shards=2, input_partitions=2, session_timeout_ms=300)
    for housekeeping_first in (False, True):  # the message taken before housekeeping saw the pause, or after
        worker.assigned({0, 1})
        if housekeeping_first:
            worker.last_housekeeping = worker.resumed_at = time.monotonic()
        else:
            worker.last_housekeeping = time.monotonic() - 20  # paused for 20 s
        starting = asyncio.ensure_future(worker.evaluate(Stream(), routed_event(0)))
        await asyncio.sleep(0.05)
        await worker.revoked({0, 1})  # the heartbeat's answer: a rebalance
        await starting
        assert worker.shards == {} and FakeWriter.calls == []
    worker.last_housekeeping, worker.resumed_at = time.monotonic(), float("-inf")  # not paused: starts at once
    worker.assigned({1})
    await worker.evaluate(Stream(), routed_event(1))
    assert list(worker.shards) == [1]


async def test_assigned_shards_open_together_and_once_before_their_first_message(monkeypatch):
    """Each opening (producer, checkpoint) takes a while: the assignment opens every new shard at
    once; a routed message arriving meanwhile waits for that opening instead of starting a second
    producer (which would fence the first)."""
    gate = asyncio.Event()
    worker = stage2_worker(monkeypatch, load=gate.wait)
    worker.assigned({0, 1})
    await asyncio.sleep(0.01)
    assert sorted(FakeWriter.calls) == ["fence 0", "fence 1", "load 0", "load 1"]  # both began, no message yet
    first = asyncio.ensure_future(worker.evaluate(Stream(), routed_event(0)))
    await asyncio.sleep(0.01)
    assert not first.done()  # waits for the opening under way
    gate.set()
    await first
    assert sorted(worker.shards) == [0, 1] and worker.opening == {}
    assert sorted(FakeWriter.calls) == ["fence 0", "fence 1", "load 0", "load 1"]  # one producer per shard


async def test_a_shard_revoked_while_taking_a_message_stops_quietly(monkeypatch):
    """Seen in the pause fault test: a worker resumed from SIGSTOP lost its shards while one was
    taking a message; the take failed (its consumer stopped, say) — the
    shard is gone, so its task ends, and the worker carries on (no exit)."""
    from aiokafka.errors import ConsumerStoppedError

    worker = stage2_worker(monkeypatch)
    worker.assigned({0})
    shard = await worker.shard(0)

    async def take(shard, stream, event):
        await worker.revoked({0})
        raise ConsumerStoppedError()

    monkeypatch.setattr(worker, "_take", take)
    monkeypatch.setattr("os._exit", lambda code: pytest.fail(f"the worker exited ({code})"))
    await shard.queue.put((Stream(), routed_event(0)))
    await asyncio.wait_for(worker._shard_loop(shard), 2)
    assert worker.shards == {}


# ---- a quiet shard's watermark reaches the case stage without waiting for a full checkpoint ----------


async def test_a_quiet_shard_commits_its_advancing_watermark_in_a_head_of_its_own(monkeypatch):
    """The case stage releases a record once every shard's committed head is past its time
    (docs/response.md#cases-in-the-worker): a shard with no records must still say how far it
    got — at the next tick, not the next full checkpoint (--checkpoint-interval, 60 s)."""
    commits: list[tuple[list, dict]] = []

    async def commit(self, records, checkpoint) -> None:
        commits.append((list(records), checkpoint))

    monkeypatch.setattr(FakeWriter, "commit", commit, raising=False)
    worker = stage2_worker(monkeypatch)
    worker.metrics.count_records = lambda records: None
    worker.metrics.checkpoints = Counter()
    worker.assigned({0})
    await worker.evaluate(Stream(), routed_event(0))
    shard = worker.shards[0]
    lateness = shard.state.engine.lateness_ms
    heads = lambda: [(r, c["kind"], c["mark"]) for r, c in commits]  # noqa: E731
    commits.clear()
    await worker.tick()  # time has not moved since the last commit: nothing to say
    assert commits == []
    shard.state.max_ts.update({0: 1_000_000, 1: 1_000_000})  # heartbeats of both input partitions
    await worker.tick()
    assert heads() == [([], "head", 1_000_000 - lateness)]  # no records, a head for the mark alone
    await worker.tick()
    assert len(commits) == 1  # unchanged: no second head
    shard.state.max_ts.update({0: 2_000_000, 1: 2_000_000})
    shard.state.suppress = 3  # restored, deriving again what it had committed: its head must wait
    await worker.tick()
    assert len(commits) == 1
    shard.state.suppress = 0
    await worker.tick()
    assert heads()[-1] == ([], "head", 2_000_000 - lateness)


async def test_a_shard_behind_commits_the_records_of_several_routed_messages_in_one_transaction(monkeypatch):
    """A backlog: while routed messages wait in a shard's queue, their records join one
    transaction (at most `COMMIT_AFTER_MESSAGES` messages' worth); once the queue is empty (a
    steady rate), a message's records leave at once."""
    from firebreak.adapters.live import shard_host

    commits: list[list] = []

    async def commit(self, records, checkpoint) -> None:
        commits.append([r["n"] for r in records])

    monkeypatch.setattr(FakeWriter, "commit", commit, raising=False)
    worker = stage2_worker(monkeypatch)
    worker.metrics.count_records = lambda records: None
    worker.metrics.checkpoints = Counter()
    worker.assigned({0})
    shard = await worker.shard(0)

    async def accept(offset, value, offload):  # each message derives one record
        shard.state.pending.append({"n": offset})
        return True

    monkeypatch.setattr(shard.state, "accept_offloaded", accept)
    behind = shard_host.COMMIT_AFTER_MESSAGES + 2
    for offset in range(behind):
        await shard.queue.put((Stream(), routed_event(0, offset)))
    loop = asyncio.ensure_future(worker._shard_loop(shard))
    try:
        await until(lambda: sum(map(len, commits)) == behind)
        assert commits == [list(range(shard_host.COMMIT_AFTER_MESSAGES)), [behind - 2, behind - 1]]
        await shard.queue.put((Stream(), routed_event(0, behind)))  # the queue empty after it
        await until(lambda: len(commits) == 3)
        assert commits[-1] == [behind]
    finally:
        loop.cancel()
        await asyncio.gather(loop, return_exceptions=True)
