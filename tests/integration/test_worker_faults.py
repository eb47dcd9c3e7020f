"""Broker and worker faults mid-stream: the records stay those of a replay, each once.

- the broker is stopped and started again (same data) while a worker consumes;
- a worker is stopped (SIGSTOP) past the session timeout while the other takes over, then
  resumed: its producer is fenced, nothing appears twice.

The broker-restart test runs its own broker (scripts/kafka-local with its own state
directory and ports), so restarting it disturbs no other test.
"""

from __future__ import annotations

import signal
import time

import pytest
from firebreak.core import parse_ts
from local_broker import start_local_broker
from test_worker_live import RULES, before, clocks, feed, replay, scenario
from worker_harness import Topics, Worker, publish, read_all, records_arrived, run, wait_for

pytestmark = pytest.mark.kafka

PARTITIONS = 4


@pytest.fixture
def own_broker(kafka_bootstrap, tmp_path_factory):
    """A second local broker for this test alone (kafka_bootstrap: the shared one must work too)."""
    broker = start_local_broker(tmp_path_factory.mktemp("broker"))
    yield broker
    broker.ctl("stop")


def records_of(bootstrap: str, topics: Topics) -> list[dict]:
    return run(read_all(bootstrap, topics.incidents)) + run(read_all(bootstrap, topics.containment))


def assert_once(records: list[dict]) -> None:
    keys = [(r["type"], r.get("incident_id"), r.get("command_id"), r["ts"]) for r in records]
    assert len(keys) == len(set(keys)), "a record appears twice in the read_committed view"


# A broker restart while a shard is starting: loading its checkpoint failed (or aiokafka
# cancelled the fetch) and the agent crashed, losing the routed message it held — records then
# differed from a replay. Since the batch path made stage 1 fast, the restart hit that moment in
# most runs; the shard now waits the broker out (app.LiveWorker._start_shard).
def test_broker_restart_mid_stream_loses_and_duplicates_nothing(own_broker, unique_topic, tmp_path):
    bootstrap = own_broker.bootstrap
    topics = Topics(unique_topic("restart"))
    rules = tmp_path / "live.rules"
    rules.write_text(RULES)
    events = scenario(seed=41)
    clock = clocks(events)
    expected = replay(events, [e for _, e in clock])
    cutoff = max(parse_ts(e["ts"]) for e in events) + 2 * 3_600_000
    # The scenario's event times do not move while the broker is down (they are historical), so
    # the pause must not count as quiet: with every partition idle, time would jump to the newest
    # event and the next events of partitions that ended a little earlier would be late
    # (docs/live.md, "When a partition speaks again"). Quiet time is test_worker_quiet.py's subject.
    # --local-handoff: one worker feeds its own shards in process (off by default, docs/live.md): a
    # broker restart mid-stream, with sends in flight, must not lose or duplicate a record with it
    worker = Worker(topics, bootstrap, rules, tmp_path, extra=["--idle-timeout", "120s", "--local-handoff"]).start()
    try:
        worker.wait_ready(90)
        cut = int(len(events) * 0.6)
        run(publish(bootstrap, topics.events, events[:cut]))
        wait_for(lambda: worker.metrics()["firebreak_events_total"] >= cut, 90, "the first part taken", [worker])
        own_broker.ctl("restart")  # the worker loses its broker for several seconds, mid-stream
        worker.check_alive()
        feed(bootstrap, topics, events[cut:], clock)
        wait_for(records_arrived(bootstrap, topics, expected), 180, "the replay's records after the restart", [worker])
        time.sleep(2)
        worker.check_alive()
        metrics = worker.metrics()
        assert metrics["firebreak_late_events_total"] == 0
        assert metrics['firebreak_local_handoff_total{outcome="taken"}'] > 0  # the hand-off did engage
    finally:
        worker.stop()
    records = records_of(bootstrap, topics)
    assert_once(records)
    assert before(records, cutoff) == before(expected, cutoff)


# Timing: a frozen member, a 10 s session and two rebalances on 2 shared cores; about 1 run in 6
# timed out waiting for the records (cause open, docs/live.md "Faults"): one rerun, not more.
@pytest.mark.flaky(reruns=1)
def test_a_worker_stopped_past_its_session_is_fenced_when_resumed(
    kafka_bootstrap, unique_topic, tmp_path, create_topic
):
    topics = Topics(unique_topic("sigstop"))
    run(create_topic(topics.events, partitions=PARTITIONS))
    rules = tmp_path / "live.rules"
    rules.write_text(RULES)
    events = scenario(seed=42)
    clock = clocks(events)
    expected = replay(events, [e for _, e in clock])
    cutoff = max(parse_ts(e["ts"]) for e in events) + 2 * 3_600_000
    # Fencing is the subject here, not quiet time: while a member is frozen, its partner's input
    # partitions were seen declared idle before the rebalance (1 run in ~5, docs/live.md "Faults"),
    # which makes the historical events published next late. A long idle timeout keeps that out.
    quiet = ["--idle-timeout", "120s"]
    first = Worker(topics, kafka_bootstrap, rules, tmp_path, extra=quiet).start()
    second = Worker(topics, kafka_bootstrap, rules, tmp_path, extra=quiet).start()
    try:
        first.wait_ready()
        second.wait_ready()
        cut = int(len(events) * 0.5)
        run(publish(kafka_bootstrap, topics.events, events[:cut]))
        both = (first, second)
        wait_for(lambda: sum(w.metrics()["firebreak_events_total"] for w in both) >= cut, 90, "the first half", both)
        first.process.send_signal(signal.SIGSTOP)  # frozen with open state, past the 10 s session timeout
        rest = events[cut:]
        run(publish(kafka_bootstrap, topics.events, rest[: len(rest) // 2]))
        time.sleep(16)
        first.process.send_signal(signal.SIGCONT)  # it wakes up believing it still owns its shards
        feed(kafka_bootstrap, topics, rest[len(rest) // 2 :], clock)
        wait_for(records_arrived(kafka_bootstrap, topics, expected), 180, "the replay's records", [second])
        time.sleep(3)
        first.check_alive()  # fenced or rebalanced away, it carries on as a member of the group
        second.check_alive()
    finally:
        for worker in (first, second):
            worker.process.send_signal(signal.SIGCONT)
            worker.stop()
    records = records_of(kafka_bootstrap, topics)
    assert_once(records)
    assert before(records, cutoff) == before(expected, cutoff)
    for worker in (first, second):  # being fenced is handled and said in one line, not a traceback
        assert b"Traceback" not in (tmp_path / f"worker-{worker.port}.log").read_bytes()
