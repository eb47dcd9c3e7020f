"""The local hand-off (shard_host.py, docs/live.md "The local hand-off"), without a broker.

Stage 1 produces each routed message to the routed topic as before; when the message's shard is
open on the same worker, the shard is handed the message in process once the broker has
acknowledged it at its offset, and the fetched copy is skipped before Faust's agent. What must
hold: a shard takes each offset of its routed partition once, in order, with the bytes the
partition holds there — so its records are those of a shard that fetched everything (replay =
live), through a message that was never written, another worker writing to the same routed
partition, a crash with a restore from the checkpoints, and a rebalance — and Faust's committed
routed offset never passes the shard's last full checkpoint.

The broker is faked: a list per routed partition (the log), the shards' committed records and
checkpoints (`Broker`); the shard host, its committer, the shards' states and engines are the
worker's own.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from types import SimpleNamespace

import orjson
import pytest
from faust.types import TP
from firebreak.adapters.live import routed as routed_format
from firebreak.adapters.live import shard_host
from firebreak.adapters.live.committer import Committer
from firebreak.adapters.live.metrics import Metrics
from firebreak.adapters.live.routing import RouteStage
from firebreak.adapters.live.settings import WorkerSettings
from firebreak.adapters.live.shard_host import ShardHost
from test_core_properties import BASE, BASE_RECORDS, RULES
from test_live_stages import PARTITIONS, SHARDS, input_messages, multiset

SETTINGS = WorkerSettings(rules=(), app_id="t", shards=SHARDS, input_partitions=PARTITIONS)
ROUTED = SETTINGS.routed_topic
END = max(e.ts for e in BASE)


class SendFailed(Exception):
    """A produce the broker did not acknowledge (the message is not in the routed partition)."""


class Broker:
    """The routed partitions (logs), the shards' committed records and checkpoints, and the
    routed offsets acked to Faust (by the shard host)."""

    def __init__(self) -> None:
        self.logs: dict[int, list[bytes]] = defaultdict(list)
        self.records: list[dict] = []
        self.full: dict[int, dict] = {}
        self.head: dict[int, dict] = {}
        self.acked: dict[int, set[int]] = defaultdict(set)
        self.down = False  # commits never end (the worker is killed before they do)

    def committed(self, number: int) -> int:
        """Faust's committed offset: the acked offsets' run from 0 (Faust's `_new_offset` may
        even pass a hole in it; `check_acks` holds every acked offset under the full checkpoint)."""
        offset = 0
        while offset in self.acked[number]:
            offset += 1
        return offset

    def check_acks(self) -> None:
        """No routed offset is acked that the shard's last full checkpoint does not cover."""
        for number, offsets in self.acked.items():
            if offsets:
                assert number in self.full and max(offsets) < self.full[number]["routed_next"]


class Worker:
    """One worker's shard host over ``broker``, fed as the worker feeds it: stage 1's sends
    (`produce`: handed to the host when ``local``) and the routed topic's fetches (`fetch`)."""

    def __init__(self, broker: Broker, monkeypatch: pytest.MonkeyPatch, local: bool = True) -> None:
        self.broker, self.local = broker, local

        class Writer:
            def __init__(self, settings, number: int) -> None:
                self.number = number

            async def start(self) -> None:
                pass

            async def stop(self) -> None:
                pass

            async def commit(self, records, checkpoint) -> None:
                if broker.down:
                    await asyncio.Event().wait()
                broker.records.extend(records)
                kinds = broker.full if checkpoint["kind"] == "full" else broker.head
                kinds[self.number] = orjson.loads(orjson.dumps(checkpoint))

        async def load(settings, number):
            return broker.full.get(number), broker.head.get(number)

        monkeypatch.setattr(shard_host, "ShardWriter", Writer)
        monkeypatch.setattr(shard_host, "load_checkpoint", load)
        self.metrics = Metrics()
        self.host = ShardHost(SETTINGS, RULES, Committer(SETTINGS, self.metrics), self.metrics)
        self.host.local.ack_offsets = lambda number, offsets: broker.acked[number].update(offsets)
        self.position = {n: broker.committed(n) for n in range(SHARDS)}  # where the fetches go on from
        self.delivered: list[tuple[int, int]] = []  # fetched messages handed to Faust's agent
        self.stream = SimpleNamespace(ack=self._ack)

    async def _ack(self, event) -> None:
        self.broker.acked[event.message.partition].add(event.message.offset)

    async def open(self, shards=range(SHARDS)) -> None:
        self.host.assigned(set(shards))
        await until(lambda: set(self.host.shards) >= set(shards))

    async def produce(self, outs, fail=()) -> None:
        """Stage 1's sends of a batch: each written to its routed partition (except those at the
        indexes ``fail``: not acknowledged, not written), the broker's answers after all sends."""
        loop = asyncio.get_running_loop()
        answers = []
        for index, out in enumerate(o for o in outs if o.topic == "routed"):
            delivery = loop.create_future()
            if self.local:
                self.host.local.sent(out.partition, delivery, out.value)
            if index in fail:
                answers.append((delivery, SendFailed()))
                continue
            log = self.broker.logs[out.partition]
            log.append(out.value)
            answers.append((delivery, SimpleNamespace(offset=len(log) - 1)))
        for delivery, answer in answers:
            if isinstance(answer, Exception):
                delivery.set_exception(answer)
            else:
                delivery.set_result(answer)
        await asyncio.sleep(0)  # the done callbacks run

    async def fetch(self, upto: dict[int, int] | None = None) -> None:
        """The routed partitions fetched on (up to ``upto`` per partition), as batches.py hands them:
        a message its shard took already is skipped, the others go to Faust's agent."""
        for number in range(SHARDS):
            log = self.broker.logs[number]
            end = len(log) if upto is None else min(len(log), upto.get(number, len(log)))
            while self.position[number] < end:
                offset = self.position[number]
                self.position[number] += 1
                if self.host.local.skip_fetched(TP(ROUTED, number), offset):
                    continue
                self.delivered.append((number, offset))
                message = SimpleNamespace(partition=number, offset=offset, value=log[offset])
                await self.host.evaluate(self.stream, SimpleNamespace(message=message, value=log[offset]))

    async def settle(self) -> None:
        """Every shard has taken what is queued."""
        await asyncio.sleep(0)  # (acknowledgements' callbacks)
        await until(lambda: all(s.queue.empty() and not s.busy for s in self.host.shards.values()))
        await asyncio.sleep(0)

    async def full_checkpoints(self) -> None:
        for shard in list(self.host.shards.values()):
            async with shard.lock:
                await self.host._commit(shard, full=True)

    async def finish(self) -> list[dict]:
        """Commit what is pending; then each shard's end-of-stream records (as a replay's `finish`)."""
        await self.settle()
        await self.host.tick()
        records = []
        for number in sorted(self.host.shards):
            records += self.host.shards[number].state.engine.finish(END)
        return records

    def snapshots(self) -> dict[int, bytes]:
        return {n: orjson.dumps(s.state.engine.snapshot()) for n, s in sorted(self.host.shards.items())}

    async def stop(self) -> None:
        await self.host.shutdown()


async def until(condition, timeout: float = 10.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not condition():
        assert loop.time() < deadline, "timed out"
        await asyncio.sleep(0.002)


def batches(route: RouteStage, size: int = 100):
    messages = list(input_messages())
    for start in range(0, len(messages), size):
        yield route.handle(messages[start : start + size])


async def fetched_only(broker: Broker, monkeypatch) -> tuple[list[dict], dict[int, bytes]]:
    """What a worker without the hand-off derives from ``broker``'s routed partitions as they
    stand (the replay of those logs): its records and its shards' final states."""
    again = Broker()
    again.logs = broker.logs
    worker = Worker(again, monkeypatch, local=False)
    await worker.open()
    await worker.fetch()
    records = again.records + await worker.finish()
    snapshots = worker.snapshots()
    await worker.stop()
    return records, snapshots


async def test_a_shard_takes_its_own_workers_messages_in_process_and_decodes_none_twice(monkeypatch):
    decoded = defaultdict(int)
    decode = routed_format.decode

    def counting(value):
        decoded[value] += 1
        return decode(value)

    monkeypatch.setattr(routed_format, "decode", counting)
    broker = Broker()
    worker = Worker(broker, monkeypatch)
    await worker.open()
    for outs in batches(RouteStage(RULES, SETTINGS)):
        await worker.produce(outs)
        await worker.settle()
        await worker.fetch()
        await worker.host.tick()
        broker.check_acks()
    records = broker.records + await worker.finish()
    sent = sum(len(log) for log in broker.logs.values())
    assert sent > 3 * SHARDS
    assert worker.metrics.local == {"taken": sent, "skipped": sent}  # none left to the fetched path
    assert worker.delivered == []  # no fetched copy reached Faust's agent
    assert len(decoded) == sent and set(decoded.values()) == {1}  # each message decoded once
    assert multiset(records) == multiset(BASE_RECORDS)  # a replay's records
    await worker.full_checkpoints()  # the fetched copies acked now that a full checkpoint covers them
    assert all(broker.committed(n) == len(broker.logs[n]) for n in range(SHARDS))
    broker.check_acks()
    await worker.stop()


async def test_a_message_the_broker_did_not_acknowledge_has_no_effect_in_a_shard(monkeypatch):
    broker = Broker()
    worker = Worker(broker, monkeypatch)
    await worker.open()
    failed = 0
    for index, outs in enumerate(batches(RouteStage(RULES, SETTINGS))):
        fail = {0, 2} if index in (3, 7) else set()  # (stage 1 would then route the batch again)
        await worker.produce(outs, fail)
        failed += len(fail)
        await worker.settle()
        await worker.fetch()
        await worker.host.tick()
    records = broker.records + await worker.finish()
    assert worker.metrics.local["unsent"] == failed > 0
    for number, shard in worker.host.shards.items():
        assert shard.state.routed_next == len(broker.logs[number])  # only what the partition holds
    expected, snapshots = await fetched_only(broker, monkeypatch)
    assert multiset(records) == multiset(expected)
    assert worker.snapshots() == snapshots  # the same state as a shard that fetched every message
    await worker.stop()


async def test_messages_of_another_worker_in_the_same_routed_partition_are_taken_fetched(monkeypatch):
    """Two workers' stage 1 (input partitions 0–1 here, 2–3 on the other) write to the same
    routed partitions; the other's messages arrive only through the fetch, which lags: a handed
    message ahead of an offset not yet fetched is left to its fetched copy."""
    broker = Broker()
    worker = Worker(broker, monkeypatch)
    await worker.open()
    ours, theirs = RouteStage(RULES, SETTINGS), RouteStage(RULES, SETTINGS)
    messages = list(input_messages())
    for start in range(0, len(messages), 100):
        batch = messages[start : start + 100]
        mine = [m for m in batch if m[0] < 2]
        other = [m for m in batch if m[0] >= 2]
        if (start // 100) % 3 == 0:  # the other worker's batch reaches the broker first
            for out in theirs.handle(other):
                if out.topic == "routed":
                    broker.logs[out.partition].append(out.value)
            await worker.produce(ours.handle(mine))
        else:
            await worker.produce(ours.handle(mine))
            for out in theirs.handle(other):
                if out.topic == "routed":
                    broker.logs[out.partition].append(out.value)
        await worker.settle()
        await worker.fetch()
        await worker.host.tick()
        broker.check_acks()
    records = broker.records + await worker.finish()
    local = worker.metrics.local
    assert local["taken"] > 0 and local["fetched"] > 0  # both paths taken
    assert len(worker.delivered) == sum(len(log) for log in broker.logs.values()) - local["skipped"]
    expected, snapshots = await fetched_only(broker, monkeypatch)
    assert multiset(records) == multiset(expected)
    assert worker.snapshots() == snapshots
    await worker.stop()


async def test_a_full_checkpoint_does_not_ack_the_fetched_copy_of_a_message_still_queued(monkeypatch):
    """A full checkpoint taken while handed messages wait in the queue (their fetched copies skipped
    already) covers only what the shard took: those copies are acked with the next one."""
    broker = Broker()
    worker = Worker(broker, monkeypatch)
    await worker.open()
    batch = list(batches(RouteStage(RULES, SETTINGS)))
    await worker.produce(batch[0])
    await worker.settle()
    await worker.fetch()
    shard = worker.host.shards[0]
    async with shard.lock:  # the shard is busy: what comes now waits in its queue
        await worker.produce(batch[1])
        await worker.fetch()
        assert not shard.queue.empty() and shard.expect > shard.state.routed_next
        await worker.host._commit(shard, full=True)
        broker.check_acks()
        assert broker.committed(0) == shard.state.routed_next
        assert [offset for stream, offset in shard.unacked] == list(range(shard.state.routed_next, shard.expect))
    await worker.settle()
    await worker.full_checkpoints()
    broker.check_acks()
    assert broker.committed(0) == len(broker.logs[0]) and shard.unacked == []
    await worker.stop()


@pytest.mark.parametrize("crash_at", [4, 9, 15])
async def test_a_crash_after_taking_handed_messages_commits_each_record_once(monkeypatch, crash_at):
    """SIGKILL with handed messages taken and committed in heads, some not committed, and fetched
    copies not yet acked: the next worker restores the last full checkpoint, fetches from Faust's
    committed offset (never past that checkpoint) and derives again; stage 1 routes its last
    batch again (at-least-once). Committed records: each of a replay's once."""
    broker = Broker()
    worker = Worker(broker, monkeypatch)
    await worker.open()
    route = RouteStage(RULES, SETTINGS)
    messages = list(input_messages())
    size = 100
    starts = list(range(0, len(messages), size))
    for index, start in enumerate(starts[:crash_at]):
        await worker.produce(route.handle(messages[start : start + size]))
        await worker.settle()
        if index % 2:  # the fetch lags by a batch on even ones
            await worker.fetch()
        await worker.host.tick()  # records and heads committed
        if index == crash_at // 2:
            await worker.full_checkpoints()
        broker.check_acks()
    # the crash: the last batch handed and taken, its records not committed
    broker.down = True
    await worker.produce(route.handle(messages[starts[crash_at] : starts[crash_at] + size]))
    await until(lambda: any(s.state.pending for s in worker.host.shards.values()))
    await worker.stop()
    broker.down = False
    broker.check_acks()
    # the next worker: a fresh stage 1 (no time known), from the last batch not acked on the input
    worker = Worker(broker, monkeypatch)
    await worker.open()
    assert all(worker.position[n] <= broker.full.get(n, {"routed_next": 0})["routed_next"] for n in range(SHARDS))
    route = RouteStage(RULES, SETTINGS)
    for start in starts[crash_at:]:
        await worker.produce(route.handle(messages[start : start + size]))
        await worker.settle()
        await worker.fetch()
        await worker.host.tick()
        broker.check_acks()
    records = broker.records + await worker.finish()
    assert worker.metrics.local["taken"] > 0  # the hand-off resumed once the fetch caught up
    assert multiset(records) == multiset(BASE_RECORDS)
    await worker.stop()


async def test_a_shard_revoked_with_messages_in_flight_is_handed_none_and_its_next_opening_fetches(monkeypatch):
    broker = Broker()
    worker = Worker(broker, monkeypatch)
    await worker.open()
    route = RouteStage(RULES, SETTINGS)
    outs = list(batches(route))
    for batch in outs[:5]:
        await worker.produce(batch)
        await worker.settle()
        await worker.fetch()
        await worker.host.tick()
    await worker.full_checkpoints()
    # sends whose acknowledgements come after shard 0 was revoked (a rebalance)
    loop = asyncio.get_running_loop()
    pending = []
    for out in (o for o in outs[5] if o.topic == "routed"):
        delivery = loop.create_future()
        worker.host.local.sent(out.partition, delivery, out.value)
        broker.logs[out.partition].append(out.value)
        pending.append((delivery, len(broker.logs[out.partition]) - 1, out.partition))
    taken = worker.metrics.local["taken"]
    old = worker.host.shards[0]
    await worker.host.revoked({0})
    for delivery, offset, _ in pending:
        delivery.set_result(SimpleNamespace(offset=offset))
    await worker.settle()
    handed_to_others = sum(1 for _, _, number in pending if number != 0)
    assert worker.metrics.local["taken"] == taken + handed_to_others  # none to the revoked shard
    assert old.queue.empty() and old.state.routed_next < len(broker.logs[0])
    # assigned here again: restored from its checkpoint, it takes the messages after it fetched
    worker.position[0] = broker.committed(0)
    await worker.open()  # (the whole assignment: shards 1 and 2 stay)
    assert worker.host.shards[0] is not old
    for batch in outs[6:]:
        await worker.produce(batch)
        await worker.settle()
        await worker.fetch()
        await worker.host.tick()
        broker.check_acks()
    records = broker.records + await worker.finish()
    assert (0, len(broker.logs[0]) - 1) not in worker.delivered  # caught up: handed again
    expected, _ = await fetched_only(broker, monkeypatch)
    assert multiset(records) == multiset(expected) == multiset(BASE_RECORDS)
    await worker.stop()


async def test_a_rule_reload_with_handed_messages_queued_derives_what_a_fetching_shard_derives(monkeypatch):
    """SIGHUP while handed messages wait in the shards' queues: each shard reloads between two
    messages (under its lock); the messages routed before the reload carry the old rules
    version. A shard that fetched every message and reloaded at the same offset derives the
    same records and ends in the same state."""
    broker = Broker()
    worker = Worker(broker, monkeypatch)
    await worker.open()
    before, after = RULES, RULES[:-1]  # the reload removes a rule (its open incidents are resolved)
    route = RouteStage(before, SETTINGS)
    messages = list(input_messages())
    size, cut = 100, 12
    starts = list(range(0, len(messages), size))
    at: dict[int, int] = {}  # shard → the routed offset it reloaded at
    set_rules = shard_host.ShardState.set_rules

    def noting(state, rules):
        at[state.shard] = state.routed_next
        return set_rules(state, rules)

    monkeypatch.setattr(shard_host.ShardState, "set_rules", noting)
    for start in starts[:cut]:
        await worker.produce(route.handle(messages[start : start + size]))
        await worker.settle()
        await worker.fetch()
        await worker.host.tick()
    held = [s.lock for s in worker.host.shards.values()]
    for lock in held:  # the shards busy: the next batch's messages wait in their queues
        await lock.acquire()
    await worker.produce(route.handle(messages[starts[cut] : starts[cut] + size]))
    assert all(not s.queue.empty() for s in worker.host.shards.values())
    reloading = asyncio.ensure_future(worker.host.reload(after))
    await asyncio.sleep(0)
    for lock in held:
        lock.release()
    await reloading
    route.set_rules(after)
    for start in starts[cut + 1 :]:
        await worker.produce(route.handle(messages[start : start + size]))
        await worker.settle()
        await worker.fetch()
        await worker.host.tick()
    records = broker.records + await worker.finish()
    assert len(at) == SHARDS and worker.metrics.local["taken"] == sum(len(log) for log in broker.logs.values())
    states = worker.snapshots()
    await worker.stop()
    # the same routed partitions, fetched, each shard reloaded at the same offset
    again = Broker()
    again.logs = broker.logs
    fetching = Worker(again, monkeypatch, local=False)
    await fetching.open()
    await fetching.fetch(upto=dict(at))
    await fetching.settle()
    await fetching.host.reload(after)
    await fetching.fetch()
    expected = again.records + await fetching.finish()
    assert multiset(records) == multiset(expected)
    assert any(r["type"] == "incident.resolved" and "reload" in r.get("why", "") for r in records)
    assert fetching.snapshots() == states
    await fetching.stop()


def test_the_hand_off_can_be_turned_off():
    import argparse

    from firebreak.adapters.live.command import add_arguments

    parser = argparse.ArgumentParser()
    add_arguments(parser, str)
    assert parser.parse_args(["--rules", "r"]).local_handoff is False  # off by default: no measured gain
    assert parser.parse_args(["--rules", "r", "--local-handoff"]).local_handoff is True
