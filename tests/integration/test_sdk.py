"""The SDKs against the real broker: publishers (async, sync, Java console consumer reading what they
wrote), the containment listener (idempotency, renewal, release, expiry, resume), the example gateway.

Command records are made by hand here, as the engine's worker will write them
(docs/schemas/record.schema.json), and produced with a plain aiokafka producer.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from firebreak.core import format_ts
from firebreak.sdk import (
    AsyncPublisher,
    ContainmentError,
    ContainmentListener,
    Handler,
    InvalidEvent,
    Publisher,
    PublishError,
)

ROOT = Path(__file__).resolve().parents[2]
KAFKA_LIBS = ROOT / ".cache" / "kafka" / os.environ.get("KAFKA_VERSION", "4.0.2") / "libs"
GATEWAY = ROOT / "examples" / "gateway" / "gateway.py"


# --------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------


def event(i: int, tenant: str | None = "acme", **extra: Any) -> dict[str, Any]:
    e = {"event_id": f"evt-{i}", "ts": format_ts(1_800_000_000_000 + i), "model": "gpt-4o", "latency_ms": i % 97}
    if tenant is not None:
        e["tenant"] = tenant
    return {**e, **extra}


async def read_topic(bootstrap: str, topic: str, n: int, timeout_s: float = 20) -> list[Any]:
    """The first `n` messages of `topic` (all partitions), read by an independent consumer, plus any extra
    that shows up within 0.3 s (so a duplicate would be noticed)."""
    consumer = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, group_id=None, auto_offset_reset="earliest")
    await consumer.start()
    messages: list[Any] = []
    try:
        async with asyncio.timeout(timeout_s):
            while len(messages) < n:
                for batch in (await consumer.getmany(timeout_ms=500)).values():
                    messages.extend(batch)
        for batch in (await consumer.getmany(timeout_ms=300)).values():
            messages.extend(batch)
    finally:
        await consumer.stop()
    return messages


def new_id(prefix: str) -> str:
    return f"{prefix}_{secrets.token_hex(8)}"


def command(
    expires_in_s: float | None = 60,
    *,
    action: str = "fallback",
    model: str = "gpt-4o",
    to: str = "gpt-4o-mini",
    hold: bool = False,
    now_s: float | None = None,
) -> dict[str, Any]:
    now_ms = int((time.time() if now_s is None else now_s) * 1000)
    return {
        "type": "containment.command",
        "command_id": new_id("cmd"),
        "incident_id": new_id("inc"),
        "rule": "hallucination_spike",
        "action": action,
        "target": {"model": model},
        "params": {"model": to},
        "ts": format_ts(now_ms),
        "expires_at": None if expires_in_s is None else format_ts(now_ms + int(expires_in_s * 1000)),
        "hold": hold,
    }


def _follow_up(cmd: dict[str, Any], kind: str) -> dict[str, Any]:
    record = {k: cmd[k] for k in ("command_id", "incident_id", "rule", "action", "target")}
    return {"type": kind, **record, "ts": format_ts(int(time.time() * 1000))}


def renewed(cmd: dict[str, Any], expires_in_s: float) -> dict[str, Any]:
    return {**_follow_up(cmd, "containment.renewed"), "expires_at": format_ts(int((time.time() + expires_in_s) * 1000))}


def release(cmd: dict[str, Any]) -> dict[str, Any]:
    return _follow_up(cmd, "containment.release")


async def produce(bootstrap: str, topic: str, records: list[dict[str, Any]]) -> None:
    """As the worker would: JSON values, keyed by command_id so one command's records stay in order."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", enable_idempotence=True)
    await producer.start()
    try:
        for record in records:
            await producer.send_and_wait(topic, orjson.dumps(record), key=record["command_id"].encode())
    finally:
        await producer.stop()


class Recorder:
    """A handler that remembers its calls: sync apply, async revert (both kinds are supported)."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str]] = []

    def apply(self, command: dict[str, Any]) -> None:
        self.calls.append(("apply", command["command_id"]))

    async def revert(self, command: dict[str, Any]) -> None:
        await asyncio.sleep(0)
        self.calls.append(("revert", command["command_id"]))


@pytest.fixture
async def commands_topic(create_topic, unique_topic):
    return await create_topic(unique_topic("commands"), partitions=2)


def listener_for(bootstrap: str, topic: str, handlers: dict[str, Any], group: str | None = None, **kw: Any):
    return ContainmentListener(
        bootstrap, group or new_id("grp"), topic, handlers, poll_interval_s=0.2, connect_timeout_s=10, **kw
    )


async def settle(listener: ContainmentListener, records: int, timeout_s: float = 20) -> None:
    """Run until `records` records were consumed, then one more poll (nothing else may arrive)."""
    await listener.run_until(lambda lst: lst.records >= records, timeout_s)
    await listener.step()
    assert listener.records == records


# --------------------------------------------------------------------------------------
# publishers
# --------------------------------------------------------------------------------------


async def test_async_publisher_round_trip_keys_and_order(kafka_bootstrap, create_topic, unique_topic):
    topic = await create_topic(unique_topic("events"), partitions=4)
    tenants = ["acme", "globex", "initech", "umbrella", None]
    events = [event(i, tenants[i % len(tenants)]) for i in range(500)]
    async with AsyncPublisher(kafka_bootstrap, topic) as pub:
        for e in events[:-1]:
            await pub.publish(e)
        await pub.flush()
        where = await pub.publish(events[-1], wait=True)
        assert pub.published == len(events)
    assert where.topic == topic and where.offset >= 0

    messages = await read_topic(kafka_bootstrap, topic, len(events))
    assert sorted((orjson.loads(m.value) for m in messages), key=lambda e: e["event_id"]) == sorted(
        events, key=lambda e: e["event_id"]
    ), "every event exactly once, byte-for-byte the same JSON"
    by_key: dict[bytes, list[Any]] = defaultdict(list)
    for m in messages:
        value = orjson.loads(m.value)
        assert m.key == (value.get("tenant") or value["event_id"]).encode(), "key = tenant, else event_id"
        by_key[m.key].append(m)
    for tenant in ("acme", "globex", "initech", "umbrella"):
        ms = by_key[tenant.encode()]
        assert len({m.partition for m in ms}) == 1, f"{tenant}: one partition"
        ids = [int(orjson.loads(m.value)["event_id"][4:]) for m in ms]
        assert ids == sorted(ids), f"{tenant}: in publish order"
    assert len({m.partition for m in messages}) > 1, "tenants spread over partitions"
    assert any(m.partition == where.partition and m.offset == where.offset for m in messages)


async def test_sync_publisher_round_trip_with_custom_key_field(kafka_bootstrap, create_topic, unique_topic):
    topic = await create_topic(unique_topic("events"), partitions=3)
    events = [event(i, model=f"m{i % 3}") for i in range(300)]

    def publish_all() -> list[Any]:
        with Publisher(kafka_bootstrap, topic, key_field="model", linger_ms=20) as pub:
            for e in events[:100]:
                assert pub.publish(e) is None
            assert pub.publish_many(events[100:-1]) == 199
            delivered = pub.publish(events[-1], wait=True)
            pub.flush()
            assert pub.published == 300
            return [delivered]

    [delivered] = await asyncio.to_thread(publish_all)
    messages = await read_topic(kafka_bootstrap, topic, len(events))
    assert len(messages) == len(events)
    for model in ("m0", "m1", "m2"):
        mine = sorted((m for m in messages if m.key == model.encode()), key=lambda m: m.offset)
        assert len({m.partition for m in mine}) == 1, f"key {model}: one partition"
        assert [orjson.loads(m.value) for m in mine] == [e for e in events if e["model"] == model], "in order, once"
    last = next(m for m in messages if orjson.loads(m.value)["event_id"] == "evt-299")
    assert (delivered.partition, delivered.offset) == (last.partition, last.offset)


async def test_invalid_event_is_rejected_before_anything_is_sent(kafka_bootstrap, create_topic, unique_topic):
    topic = await create_topic(unique_topic("events"))
    async with AsyncPublisher(kafka_bootstrap, topic) as pub:
        with pytest.raises(InvalidEvent, match="`ts` is missing"):
            await pub.publish({"event_id": "bad-1", "tenant": "acme"})
        with pytest.raises(InvalidEvent, match="not JSON-serializable"):
            await pub.publish(event(1, extra=object()))
        with pytest.raises(InvalidEvent, match="`event_id`"):
            await pub.publish_many([event(2), {"ts": 1}])  # all or nothing
        await pub.publish(event(3), wait=True)
    with Publisher(kafka_bootstrap, topic) as pub:
        with pytest.raises(InvalidEvent, match="change event needs `kind`"):
            pub.publish({"event_id": "bad-2", "ts": 1, "type": "change"})
    messages = await read_topic(kafka_bootstrap, topic, 1)
    assert [orjson.loads(m.value)["event_id"] for m in messages] == ["evt-3"]


def test_published_bytes_are_read_by_kafkas_own_console_consumer(kafka_bootstrap, unique_topic):
    """A non-Python client (the broker's Java ConsoleConsumer) reads exactly the JSON we wrote."""
    java = shutil.which("java")
    # The broker itself needs both, so in CI they are there: a missing one is a failure, not a skip.
    assert java is not None and (KAFKA_LIBS / f"kafka-tools-{KAFKA_LIBS.parent.name}.jar").exists(), (
        f"needs java and the broker jars in {KAFKA_LIBS} (scripts/kafka-local fetch)"
    )
    topic = unique_topic("events")  # created by the publisher's start (auto-creation, 4 partitions)
    events = [event(i, tenant=f"t{i % 4}", prompt="naïve “quotes” \u00e9\U0001f525") for i in range(20)]
    with Publisher(kafka_bootstrap, topic) as pub:
        pub.publish_many(events)
    proc = subprocess.run(
        [
            java,
            "-Xmx128m",
            "-XX:TieredStopAtLevel=1",
            "-cp",
            f"{KAFKA_LIBS}/*",
            "org.apache.kafka.tools.consumer.ConsoleConsumer",
            "--bootstrap-server",
            kafka_bootstrap,
            "--topic",
            topic,
            "--from-beginning",
            "--max-messages",
            str(len(events)),
            "--timeout-ms",
            "20000",
            "--property",
            "print.key=true",
            "--property",
            "key.separator=\t",
        ],
        capture_output=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr.decode(errors="replace")[-2000:]
    lines = proc.stdout.decode("utf-8").splitlines()
    got = {}
    for line in lines:
        key, value = line.split("\t", 1)
        decoded = orjson.loads(value)
        assert key == decoded["tenant"]
        got[decoded["event_id"]] = decoded
    assert got == {e["event_id"]: e for e in events}


async def test_an_unclosed_sync_publisher_still_delivers_at_exit(kafka_bootstrap, create_topic, unique_topic):
    topic = await create_topic(unique_topic("events"))
    script = (
        "import sys; from firebreak.sdk import Publisher\n"
        "pub = Publisher(sys.argv[1], sys.argv[2], linger_ms=1000); pub.start()\n"
        "for i in range(50): pub.publish({'event_id': f'e{i}', 'ts': i})\n"
        "# no close(): the interpreter exits with the events still lingering in the producer\n"
    )
    proc = await asyncio.create_subprocess_exec(sys.executable, "-c", script, kafka_bootstrap, topic)
    assert await asyncio.wait_for(proc.wait(), 30) == 0
    messages = await read_topic(kafka_bootstrap, topic, 50)
    assert sorted(orjson.loads(m.value)["ts"] for m in messages) == list(range(50))


async def test_dead_broker_is_a_clear_error_within_bounded_time():
    t0 = time.monotonic()
    with pytest.raises(PublishError, match=r"^no Kafka broker at 127\.0\.0\.1:1: connection refused$"):
        await AsyncPublisher("127.0.0.1:1").start()
    with pytest.raises(PublishError, match=r"^no Kafka broker at 127\.0\.0\.1:1: "):
        with Publisher("127.0.0.1:1"):
            pass
    with pytest.raises(ContainmentError, match=r"^no Kafka broker at 127\.0\.0\.1:1: "):
        await ContainmentListener("127.0.0.1:1", "g").start()
    assert time.monotonic() - t0 < 5


async def test_silent_server_is_a_clear_error_within_the_connect_timeout():
    """Something listens but never speaks Kafka: no hang, an error after connect_timeout_s."""

    async def mute(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read()  # until the client gives up
        writer.close()

    server = await asyncio.start_server(mute, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        t0 = time.monotonic()
        with pytest.raises(PublishError, match=rf"no Kafka broker at 127\.0\.0\.1:{port}: no answer within 1s"):
            await AsyncPublisher(f"127.0.0.1:{port}", connect_timeout_s=1.0).start()
        assert 0.9 < time.monotonic() - t0 < 5
        t0 = time.monotonic()
        with pytest.raises(PublishError, match="no answer within 1s"):
            await asyncio.to_thread(Publisher(f"127.0.0.1:{port}", connect_timeout_s=1.0).start)
        assert time.monotonic() - t0 < 5
    finally:
        server.close()


# --------------------------------------------------------------------------------------
# containment listener
# --------------------------------------------------------------------------------------


async def test_command_is_applied_once_even_if_published_twice(kafka_bootstrap, commands_topic):
    cmd = command()
    await produce(kafka_bootstrap, commands_topic, [cmd, cmd, cmd])
    rec = Recorder()
    async with listener_for(kafka_bootstrap, commands_topic, {"fallback": rec}) as listener:
        await settle(listener, 3)
        assert rec.calls == [("apply", cmd["command_id"])]
        assert listener.active() == {cmd["command_id"]: cmd}
        assert listener.stats["new"] == 1 and listener.stats["duplicate"] == 2


async def test_renewal_extends_the_expiry(kafka_bootstrap, commands_topic):
    now = [time.time()]
    cmd = command(expires_in_s=5)
    renewal = renewed(cmd, expires_in_s=600)
    await produce(kafka_bootstrap, commands_topic, [cmd, renewal])
    rec = Recorder()
    async with listener_for(kafka_bootstrap, commands_topic, {"fallback": rec}, clock=lambda: now[0]) as listener:
        await settle(listener, 2)
        assert listener.active()[cmd["command_id"]]["expires_at"] == renewal["expires_at"]
        now[0] += 60  # way past the first expiry, before the renewed one
        await listener.step()
        assert rec.calls == [("apply", cmd["command_id"])]
        now[0] += 600
        await listener.step()
        assert rec.calls == [("apply", cmd["command_id"]), ("revert", cmd["command_id"])]


async def test_release_reverts_once(kafka_bootstrap, commands_topic):
    cmd, other = command(), command(model="claude")
    await produce(kafka_bootstrap, commands_topic, [cmd, other, release(cmd), release(cmd)])
    rec = Recorder()
    async with listener_for(kafka_bootstrap, commands_topic, {"fallback": rec}) as listener:
        await settle(listener, 4)
        assert sorted(rec.calls) == sorted(
            [("apply", cmd["command_id"]), ("apply", other["command_id"]), ("revert", cmd["command_id"])]
        )
        assert rec.calls.index(("apply", cmd["command_id"])) < rec.calls.index(("revert", cmd["command_id"]))
        assert list(listener.active()) == [other["command_id"]]


async def test_command_expired_on_arrival_is_not_applied(kafka_bootstrap, commands_topic):
    stale = command(expires_in_s=-1)
    await produce(kafka_bootstrap, commands_topic, [stale])
    rec = Recorder()
    async with listener_for(kafka_bootstrap, commands_topic, {"fallback": rec}) as listener:
        await settle(listener, 1)
        assert rec.calls == [] and listener.active() == {}
        assert listener.stats["expired on arrival"] == 1


async def test_expiry_reverts_on_the_wall_clock(kafka_bootstrap, commands_topic):
    cmd = command(expires_in_s=2)
    expires_at = time.time() + 2
    await produce(kafka_bootstrap, commands_topic, [cmd])
    rec = Recorder()
    async with listener_for(kafka_bootstrap, commands_topic, {"fallback": rec}) as listener:
        await listener.run_until(lambda lst: rec.calls, timeout_s=10)
        assert listener.active() and time.time() < expires_at, "applied before it expired"
        await listener.run_until(lambda lst: not lst.active(), timeout_s=10)
        reverted_at = time.time()
    assert rec.calls == [("apply", cmd["command_id"]), ("revert", cmd["command_id"])]
    assert expires_at - 0.05 <= reverted_at < expires_at + 1, "reverted at its expiry (ms in expires_at truncate)"


async def test_restart_resumes_from_the_committed_offset(kafka_bootstrap, commands_topic):
    group = new_id("gateway")
    first = [command(), command(model="claude")]
    await produce(kafka_bootstrap, commands_topic, first)
    rec1 = Recorder()
    async with listener_for(kafka_bootstrap, commands_topic, {"fallback": rec1}, group) as listener:
        await settle(listener, 2)
    assert sorted(rec1.calls) == sorted(("apply", c["command_id"]) for c in first)

    later = [command(model="llama"), first[0]]  # a redelivery of an old command_id comes with the new ones
    await produce(kafka_bootstrap, commands_topic, later)
    rec2 = Recorder()
    async with listener_for(kafka_bootstrap, commands_topic, {"fallback": rec2}, group) as listener:
        await settle(listener, 2)
    assert sorted(rec2.calls) == sorted(("apply", c["command_id"]) for c in later), (
        "only records after the committed offset; the old id is not remembered across restarts"
    )


async def test_read_committed_never_applies_an_aborted_command(kafka_bootstrap, commands_topic, unique_topic):
    aborted, committed = command(), command()
    producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap, transactional_id=unique_topic("txn"))
    await producer.start()
    try:
        await producer.begin_transaction()
        await producer.send(commands_topic, orjson.dumps(aborted), key=b"k")
        await producer.abort_transaction()
        async with producer.transaction():
            await producer.send(commands_topic, orjson.dumps(committed), key=b"k")
    finally:
        await producer.stop()
    rec = Recorder()
    async with listener_for(kafka_bootstrap, commands_topic, {"fallback": rec}) as listener:
        await settle(listener, 1)
    assert rec.calls == [("apply", committed["command_id"])]


async def test_unknown_actions_and_failing_handlers_do_not_stop_the_listener(kafka_bootstrap, commands_topic):
    page, broken, good = command(action="page"), command(action="throttle"), command()

    def explode(cmd: dict[str, Any]) -> None:
        raise RuntimeError("rate limiter unreachable")

    rec = Recorder()
    await produce(kafka_bootstrap, commands_topic, [page, broken, good])
    handlers = {"fallback": rec, "throttle": Handler(apply=explode, revert=explode)}
    async with listener_for(kafka_bootstrap, commands_topic, handlers) as listener:
        await settle(listener, 3)
        assert rec.calls == [("apply", good["command_id"])]
        assert listener.stats["unknown action"] == 1 and listener.stats["handler_errors"] == 1


async def test_bad_records_are_counted_and_skipped(kafka_bootstrap, commands_topic):
    good = command()
    producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap)
    await producer.start()
    try:
        for value in (b"{not json", orjson.dumps({"type": "containment.command"}), orjson.dumps(good)):
            await producer.send_and_wait(commands_topic, value, partition=0)
    finally:
        await producer.stop()
    rec = Recorder()
    async with listener_for(kafka_bootstrap, commands_topic, {"fallback": rec}) as listener:
        await settle(listener, 3)
        assert rec.calls == [("apply", good["command_id"])]
        assert listener.stats["invalid_json"] == 1 and listener.stats["invalid"] == 1


# --------------------------------------------------------------------------------------
# the example gateway
# --------------------------------------------------------------------------------------


def _gateway_module():
    sys.path.insert(0, str(ROOT / "tests" / "unit" / "sdk"))
    try:
        from test_sdk_gateway import load_gateway
    finally:
        sys.path.pop(0)
    return load_gateway()


async def test_gateway_flips_the_route_on_fallback_and_back_on_release(kafka_bootstrap, commands_topic):
    lines: list[str] = []
    router = _gateway_module().ModelRouter(on_change=lines.append)
    cmd = command(model="gpt-4o", to="gpt-4o-mini")
    await produce(kafka_bootstrap, commands_topic, [cmd])
    async with listener_for(kafka_bootstrap, commands_topic, {"fallback": router}) as listener:
        await listener.run_until(lambda lst: lst.records >= 1, 20)
        assert router.route("gpt-4o") == "gpt-4o-mini"
        await produce(kafka_bootstrap, commands_topic, [release(cmd)])
        await listener.run_until(lambda lst: lst.records >= 2, 20)
        assert router.route("gpt-4o") == "gpt-4o"
    assert [line.split("  [")[0] for line in lines] == [
        "route gpt-4o: gpt-4o -> gpt-4o-mini",
        "route gpt-4o: gpt-4o-mini -> gpt-4o",
    ]


def test_gateway_script_prints_route_changes(kafka_bootstrap, unique_topic):
    topic = unique_topic("commands")
    proc = subprocess.Popen(
        [sys.executable, str(GATEWAY), "--bootstrap", kafka_bootstrap, "--topic", topic, "--route", "claude=claude-2"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    lines: list[str] = []

    def expect(fragment: str, timeout_s: float = 20) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            lines.append(line.rstrip("\n"))
            if fragment in line:
                return
        pytest.fail(f"gateway never printed {fragment!r}; output:\n" + "\n".join(lines))

    try:
        expect("gateway: listening")
        cmd = command(model="claude", to="claude-haiku")
        asyncio.run(produce(kafka_bootstrap, topic, [cmd]))
        expect("route claude: claude-2 -> claude-haiku")
        asyncio.run(produce(kafka_bootstrap, topic, [release(cmd)]))
        expect("route claude: claude-haiku -> claude-2")
        os.killpg(proc.pid, signal.SIGTERM)
        expect("gateway: stopped")
        assert proc.wait(10) == 0
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)
