"""Issue 31 on the broker: one event must not stop, blind or trigger the live worker.

Hostile events — far-future and epoch-seconds timestamps, a score of 1e308, an out-of-range
cost, 1000-deep nesting, a time that is not RFC 3339 — published among honest traffic: the
worker stays up, dead-letters each with its reason, writes exactly what a replay of the honest
events alone gives, and its memory stays bounded.
"""

from __future__ import annotations

import time

import orjson
import pytest
from firebreak.core import format_ts, parse_ts
from firebreak.core.events import MAX_DEPTH
from test_worker_live import before, clocks, feed, replay, scenario
from test_worker_live import setup as setup  # a fixture
from worker_harness import publish, publish_raw, read_all, run, wait_for

pytestmark = pytest.mark.kafka

DAY = 86_400_000
MAX_RSS_KB = 600 << 10


def rss_kb(pid: int) -> int:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError(f"no VmRSS for process {pid}")


def hostile(at: str) -> list[tuple[int, bytes, str]]:
    """(partition, message, the start of its dead letter's reason): each alone among honest events."""
    ts = parse_ts(at)
    far = ts + 30 * DAY
    deep = b'{"event_id":"deep","ts":"' + at.encode() + b'","model":"m-a","extra":' + b"[" * 999 + b"]" * 999 + b"}"

    def event(**fields) -> bytes:
        return orjson.dumps(
            {"ts": at, "service": "support", "model": "m-a", "tenant": "t1", "user": "x", "latency_ms": 300, **fields}
        )

    return [
        (0, event(event_id="far", ts=format_ts(far)), f"ahead: ts {format_ts(far)} is more than 1h after the latest"),
        (1, event(event_id="epoch-s", ts=ts // 1000), "`ts` "),  # ... looks like epoch seconds
        (2, event(event_id="score", scores={"quality": 1e308}), "score `quality` 1e+308 is out of range"),
        (3, event(event_id="cost", cost_usd=1e32), "`cost_usd` 1e+32 is out of range"),
        (0, deep, f"the event nests objects or arrays more than {MAX_DEPTH} deep"),
        (1, event(event_id="spaced", ts=at.replace("T", " ").replace("Z", "")), "`ts` "),  # not RFC 3339
    ]


def test_hostile_events_are_dead_lettered_and_detection_is_a_replay_of_the_honest_ones(kafka_bootstrap, setup):
    topics, start = setup
    events = scenario(minutes=80, seed=15)
    clock = clocks(events)
    expected = replay(events, [e for _, e in clock])  # the honest events only
    cutoff = max(parse_ts(e["ts"]) for e in events) + 2 * 3_600_000
    assert {r["rule"] for r in expected if r["type"] == "incident.opened"} >= {"spike", "leak"}
    worker = start()
    worker.wait_ready()
    middle = len(events) // 2  # every partition has a time by then: the far event is ahead of it
    bad = hostile(events[middle]["ts"])
    run(publish(kafka_bootstrap, topics.events, events[:middle]))
    run(publish_raw(kafka_bootstrap, topics.events, [(p, raw) for p, raw, _ in bad]))
    peak = [0]

    def letters_in() -> bool:
        peak[0] = max(peak[0], rss_kb(worker.process.pid))
        return len(run(read_all(kafka_bootstrap, topics.dead_letter, settle_s=0.3))) >= len(bad)

    wait_for(letters_in, 60, "the hostile events' dead letters", [worker])
    feed(kafka_bootstrap, topics, events[middle:], clock)
    want = {(r["type"], r.get("incident_id"), r["ts"]) for r in expected}

    def arrived() -> bool:
        peak[0] = max(peak[0], rss_kb(worker.process.pid))
        got = run(read_all(kafka_bootstrap, topics.incidents, settle_s=0.3))
        got += run(read_all(kafka_bootstrap, topics.containment, settle_s=0.3))
        return want <= {(r["type"], r.get("incident_id"), r["ts"]) for r in got}

    wait_for(arrived, 180, "the replay's records on the output topics", [worker])
    time.sleep(2)  # anything extra would show up now
    worker.check_alive()
    incidents = run(read_all(kafka_bootstrap, topics.incidents))
    containment = run(read_all(kafka_bootstrap, topics.containment))
    assert before(incidents + containment, cutoff) == before(expected, cutoff)
    letters = run(read_all(kafka_bootstrap, topics.dead_letter))
    assert len(letters) == len(bad), letters
    by_raw = {letter["raw"]: letter for letter in letters}
    for partition, raw, reason in bad:
        letter = by_raw.get(raw[:4096].decode())
        assert letter is not None and letter["partition"] == partition, (raw[:80], letters)
        assert letter["reason"].startswith(reason), (letter["reason"], reason)
    far = by_raw[bad[0][1].decode()]["reason"]
    assert far.endswith("(max skew; 8 such events in a row move the clock)"), far
    metrics = worker.metrics()
    assert metrics["firebreak_late_events_total"] == 0  # the far event blinded nothing
    assert metrics["firebreak_events_total"] == len(events) + len(clock) + len(bad)  # input messages taken
    assert metrics["firebreak_dead_lettered_total"] == len(bad)
    peak[0] = max(peak[0], rss_kb(worker.process.pid))
    assert peak[0] < MAX_RSS_KB, f"worker RSS peaked at {peak[0] // 1024} MB"
