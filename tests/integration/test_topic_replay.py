"""`firebreak replay --topic` on the real broker: the live worker's records over any range, warm-up,
bad messages, --emit, and clear errors. The pure pieces are in tests/unit/live/test_topic_replay_pieces.py."""

from __future__ import annotations

import asyncio
import subprocess
import time
import uuid

import orjson
import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from firebreak.adapters.topic_replay import TopicError, read_topic_events
from firebreak.core import format_ts, parse_ts, run_events, validate_event
from firebreak.dsl import load_rules
from test_worker_live import LATENESS_MS, MIN, PARTITIONS, RULES, T0, await_records, clocks, feed, replay, scenario
from worker_harness import FIREBREAK, Topics, Worker, publish, publish_raw, run

pytestmark = pytest.mark.kafka

DEFAULT_OUTPUTS = ("ai.incidents", "ai.containment.commands", "ai.inference.deadletter")


async def create_topics(bootstrap: str, names: list[str], partitions: int = PARTITIONS) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=15_000)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(name, num_partitions=partitions, replication_factor=1) for name in names])
        for _ in range(100):
            described = await admin.describe_topics(names)
            if all(d["error_code"] == 0 and len(d["partitions"]) == partitions for d in described):
                return
            await asyncio.sleep(0.05)
        raise AssertionError(f"topics {names} never showed {partitions} partitions")
    finally:
        await admin.close()


async def end_offsets(bootstrap: str, prefix: str) -> dict[str, int | None]:
    """Every topic this test could have written to → the sum of its end offsets (None: no such topic)."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await consumer.start()
    try:
        cluster = await consumer._client.fetch_all_metadata()  # noqa: SLF001 - no auto-creation by name
        names = sorted(t for t in cluster.topics() if t.startswith(prefix)) + list(DEFAULT_OUTPUTS)
        out: dict[str, int | None] = {}
        for name in names:
            partitions = cluster.partitions_for_topic(name)
            if not partitions:
                out[name] = None
                continue
            ends = await consumer.end_offsets([TopicPartition(name, p) for p in partitions])
            out[name] = sum(ends.values())
        return out
    finally:
        await consumer.stop()


async def read_keyed(bootstrap: str, topic: str) -> list[tuple[bytes, dict]]:
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        isolation_level="read_committed",
        enable_auto_commit=False,
        auto_offset_reset="earliest",
    )
    await consumer.start()
    try:
        out, quiet = [], time.monotonic()
        while time.monotonic() - quiet < 1.5:
            for messages in (await consumer.getmany(timeout_ms=300)).values():
                out += [(m.key, orjson.loads(m.value)) for m in messages]
                quiet = time.monotonic()
        return out
    finally:
        await consumer.stop()


def firebreak_replay(*args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run([*FIREBREAK, "replay", *args], capture_output=True, timeout=timeout)


def lines(path) -> list[bytes]:
    return sorted(line for line in path.read_bytes().splitlines() if line)


def within(records: list[dict], since: int, until: int) -> list[bytes]:
    return sorted(orjson.dumps(r) for r in records if since <= parse_ts(r["ts"]) < until)


@pytest.fixture(scope="module")
def live(kafka_bootstrap, tmp_path_factory):
    """The scenario on a 4-partition topic and the records one live worker wrote for it."""
    tmp = tmp_path_factory.mktemp("topic-replay")
    topics = Topics(f"fbt-topic-replay-{uuid.uuid4().hex[:10]}")
    run(create_topics(kafka_bootstrap, [topics.events]))
    rules = tmp / "live.rules"
    rules.write_text(RULES)
    events = scenario()
    clock = clocks(events)
    expected = replay(events, [e for _, e in clock])
    worker = Worker(topics, kafka_bootstrap, rules, tmp).start()
    try:
        worker.wait_ready()
        feed(kafka_bootstrap, topics, events, clock)
        incidents, containment = await_records(kafka_bootstrap, topics, expected, [worker])
    finally:
        worker.stop()  # from here on, nothing writes to this test's topics
    return {"topics": topics, "rules": rules, "events": events, "records": incidents + containment, "tmp": tmp}


def test_replay_of_the_topic_writes_what_the_live_worker_wrote(kafka_bootstrap, live):
    topics, tmp = live["topics"], live["tmp"]
    since = parse_ts(live["events"][0]["ts"])
    until = parse_ts(live["events"][-1]["ts"]) + 30 * MIN  # the first clock events are 45 m after the last event
    before = run(end_offsets(kafka_bootstrap, topics.prefix))
    out = tmp / "full.jsonl"
    done = firebreak_replay(
        "--topic",
        topics.events,
        "--bootstrap",
        kafka_bootstrap,
        "--rules",
        str(live["rules"]),
        "--since",
        format_ts(since),
        "--until",
        str(until),
        "--lateness",
        "2s",
        "--out",
        str(out),
    )
    assert done.returncode == 0, done.stderr.decode()
    want = within(live["records"], since, until)
    assert {orjson.loads(r)["rule"] for r in want if b'"incident.opened"' in r} == {
        "spike",
        "leak",
        "global_hallucinations",
        "jailbreaker",
    }
    assert lines(out) == want
    summary = done.stderr.decode()
    assert f"messages read: {len(live['events']) + PARTITIONS}   events read: {len(live['events'])}   " in summary
    assert "bad messages: 0   late events: 0" in summary and "warm-up 1h11m" in summary
    assert run(end_offsets(kafka_bootstrap, topics.prefix)) == before, "a replay without --emit wrote to Kafka"


def test_replay_of_a_middle_range_starts_with_a_warm_up(kafka_bootstrap, live):
    # 60–85 min: the spike (on from 60 min) is judged against baselines of the 60 min before its
    # 10 min windows, so the replay must read from 71 min before `since`; the jailbreak incident
    # opened at ~51 min must resolve in range with the same id.
    since, until = T0 + 60 * MIN, T0 + 85 * MIN
    out = live["tmp"] / "middle.jsonl"
    done = firebreak_replay(
        "--topic",
        live["topics"].events,
        "--bootstrap",
        kafka_bootstrap,
        "--rules",
        str(live["rules"]),
        "--since",
        format_ts(since),
        "--until",
        format_ts(until),
        "--lateness",
        "2s",
        "--out",
        str(out),
    )
    assert done.returncode == 0, done.stderr.decode()
    want = within(live["records"], since, until)
    kinds = {(r["type"], r["rule"]) for r in map(orjson.loads, want)}
    assert {("incident.opened", "spike"), ("incident.resolved", "jailbreaker")} <= kinds
    assert lines(out) == want
    assert "warm-up records (before since)" in done.stderr.decode()


def test_emit_sends_the_records_to_the_given_topics_keyed_like_the_worker(kafka_bootstrap, live):
    prefix = live["topics"].prefix
    incidents, containment = f"{prefix}.replayed-incidents", f"{prefix}.replayed-containment"
    run(create_topics(kafka_bootstrap, [incidents, containment], partitions=2))
    since, until = T0 + 60 * MIN, T0 + 85 * MIN
    out = live["tmp"] / "emitted.jsonl"
    done = firebreak_replay(
        "--topic",
        live["topics"].events,
        "--bootstrap",
        kafka_bootstrap,
        "--rules",
        str(live["rules"]),
        "--since",
        format_ts(since),
        "--until",
        format_ts(until),
        "--lateness",
        "2s",
        "--out",
        str(out),
        "--emit",
        "--incidents-topic",
        incidents,
        "--containment-topic",
        containment,
    )
    assert done.returncode == 0, done.stderr.decode()
    written = [orjson.loads(line) for line in lines(out)]
    got_incidents = run(read_keyed(kafka_bootstrap, incidents))
    got_containment = run(read_keyed(kafka_bootstrap, containment))
    assert sorted(orjson.dumps(r) for _, r in got_incidents) == sorted(
        orjson.dumps(r) for r in written if r["type"].startswith("incident.")
    )
    assert sorted(orjson.dumps(r) for _, r in got_containment) == sorted(
        orjson.dumps(r) for r in written if r["type"].startswith("containment.")
    )
    assert got_incidents and got_containment
    assert all(key == r["incident_id"].encode() for key, r in got_incidents)
    assert all(key == orjson.dumps(r["target"], option=orjson.OPT_SORT_KEYS) for key, r in got_containment)
    assert f"sent to Kafka: {len(written)} records" in done.stderr.decode()


@pytest.fixture(scope="module")
def with_bad_messages(kafka_bootstrap):
    """75 minutes of the scenario on a 4-partition topic, with two bad messages in the middle."""
    topic = f"fbt-topic-replay-bad-{uuid.uuid4().hex[:10]}"
    run(create_topics(kafka_bootstrap, [topic]))
    events = scenario(minutes=75, seed=21)
    half = len(events) // 2
    bad = [(0, b"{not json"), (1, orjson.dumps({"event_id": "no-ts", "service": "support"}))]
    run(publish(kafka_bootstrap, topic, events[:half]))
    run(publish_raw(kafka_bootstrap, topic, bad))
    run(publish(kafka_bootstrap, topic, events[half:]))
    return topic, events, bad


def test_bad_messages_are_counted_and_dead_lettered_with_their_position(kafka_bootstrap, with_bad_messages, tmp_path):
    topic, events, bad = with_bad_messages
    rules = tmp_path / "live.rules"
    rules.write_text(RULES)
    # The topic ends before until: time stops where a live worker's would once every partition is
    # quiet -- at the last event less the lateness (docs/live.md, "Time").
    since, until = T0, T0 + 80 * MIN
    out, dead = tmp_path / "out.jsonl", tmp_path / "dead.jsonl"
    done = firebreak_replay(
        "--topic",
        topic,
        "--bootstrap",
        kafka_bootstrap,
        "--rules",
        str(rules),
        "--since",
        str(since),
        "--until",
        format_ts(until),
        "--lateness",
        "2s",
        "--out",
        str(out),
        "--dead-letter",
        str(dead),
    )
    assert done.returncode == 0, done.stderr.decode()
    compiled, _ = load_rules({"live.rules": RULES})
    expected = run_events(compiled, [validate_event(e) for e in events], lateness_ms=LATENESS_MS, finish=False)
    assert lines(out) == within(expected, since, until)
    stderr = done.stderr.decode()
    assert "Traceback" not in stderr
    counts = f"messages read: {len(events) + 2}   events read: {len(events)}   bad messages: 2   late events: 0"
    assert counts in stderr
    letters = sorted((orjson.loads(line) for line in lines(dead)), key=lambda d: d["partition"])
    assert [(d["topic"], d["partition"], d["raw"].encode()) for d in letters] == [(topic, p, raw) for p, raw in bad]
    assert letters[0]["reason"].startswith("invalid JSON: ") and letters[1]["reason"] == "`ts` is missing"
    for letter in letters:
        where = f"{topic}[{letter['partition']}]@{letter['offset']}"
        assert f"bad message: {where}: {letter['reason']}\n" in stderr
        assert isinstance(letter["offset"], int) and letter["offset"] > 0


def test_read_topic_events_gives_a_range_in_event_time_order(kafka_bootstrap, with_bad_messages):
    topic, events, bad = with_bad_messages
    start, stop = T0 + 30 * MIN, T0 + 50 * MIN  # the bad messages were published around 37 min
    reported: list[tuple[str, str, bytes]] = []
    got = read_topic_events(kafka_bootstrap, topic, start, stop, on_bad=lambda *bad: reported.append(bad))
    want = [e["event_id"] for e in events if start <= parse_ts(e["ts"]) < stop]
    assert [e.event_id for e in got] == want  # the scenario's events are in time order, one per ts
    assert sorted((where.split("@")[0], raw) for where, _, raw in reported) == [
        (f"{topic}[{p}]", raw) for p, raw in bad
    ]
    with pytest.raises(TopicError, match=r"^topic 'fbt-no-such-topic-[0-9a-f]+' does not exist on "):
        read_topic_events(kafka_bootstrap, f"fbt-no-such-topic-{uuid.uuid4().hex[:6]}", start, stop)


def test_a_dead_broker_is_one_clear_line_within_seconds(tmp_path):
    rules = tmp_path / "r.rules"
    rules.write_text(RULES)
    started = time.monotonic()
    done = firebreak_replay(
        "--topic",
        "ai.inference.events",
        "--bootstrap",
        "127.0.0.1:1",
        "--rules",
        str(rules),
        "--since",
        "2026-03-01T00:00:00Z",
        "--until",
        "2026-03-01T01:00:00Z",
        timeout=30,
    )
    assert time.monotonic() - started < 15
    assert done.returncode == 1
    assert done.stdout == b""
    assert done.stderr.decode() == "firebreak replay: no Kafka broker at 127.0.0.1:1: connection refused\n"


def test_an_unknown_topic_is_one_clear_line_and_is_not_created(kafka_bootstrap, tmp_path):
    rules = tmp_path / "r.rules"
    rules.write_text(RULES)
    topic = f"fbt-topic-replay-missing-{uuid.uuid4().hex[:10]}"
    done = firebreak_replay(
        "--topic",
        topic,
        "--bootstrap",
        kafka_bootstrap,
        "--rules",
        str(rules),
        "--since",
        "2026-03-01T00:00:00Z",
        "--until",
        "2026-03-01T01:00:00Z",
    )
    assert done.returncode == 1
    assert done.stderr.decode() == f"firebreak replay: topic '{topic}' does not exist on {kafka_bootstrap}\n"
    assert topic not in run(end_offsets(kafka_bootstrap, topic))  # a broker that auto-creates topics did not
