"""The live worker when partitions go quiet at different event times, published with kcat.

No clock events push time past the end here: the records must still equal a replay of the
same events up to the last event less the lateness, as soon as every partition is idle.
"""

from __future__ import annotations

import shutil
import subprocess
import zlib

import orjson
import pytest
from firebreak.core import format_ts, parse_ts, run_events, validate_event
from firebreak.dsl import load_rules
from test_worker_live import LATENESS_MS, MIN, PARTITIONS, RULES, T0, scenario
from worker_harness import Topics, Worker, read_all, records_arrived, run, wait_for

pytestmark = pytest.mark.kafka

ENDS = {0: 90 * MIN, 1: 70 * MIN, 2: 60 * MIN, 3: 40 * MIN}  # each partition's last event, from T0
PUBLISH_ORDER = (0, 1, 2, 3)  # partition 3 carries only early events and comes last
IDLE_TIMEOUT = "6s"


def kcat() -> str:
    path = shutil.which("kcat")
    if path is None:
        pytest.fail("kcat is not installed; scripts/test installs it (scripts/ensure-tools)", pytrace=False)
    return path


def kcat_publish(bootstrap: str, topic: str, partition: int, events: list[dict]) -> None:
    """An independent client (librdkafka) writes one partition: one JSON event per line."""
    lines = b"".join(orjson.dumps(e) + b"\n" for e in events)
    done = subprocess.run(
        [kcat(), "-P", "-b", bootstrap, "-t", topic, "-p", str(partition), "-X", "acks=all"],
        input=lines,
        capture_output=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr.decode()


def partitioned(events: list[dict]) -> dict[int, list[dict]]:
    out: dict[int, list[dict]] = {p: [] for p in range(PARTITIONS)}
    for event in events:
        p = zlib.crc32(event["user"].encode()) % PARTITIONS
        if parse_ts(event["ts"]) - T0 < ENDS[p]:
            out[p].append(event)
    return out


def replay_until_quiet(events: list[dict]) -> list[dict]:
    """What a replay decides once it has seen every event: time at the last one less the lateness."""
    rules, problems = load_rules({"live.rules": RULES})
    assert not problems
    ordered = sorted((validate_event(e) for e in events), key=lambda e: e.ts)
    return run_events(rules, ordered, lateness_ms=LATENESS_MS, finish=False)


def multiset(records: list[dict]) -> list[bytes]:
    return sorted(orjson.dumps(r) for r in records)


def test_partitions_ending_at_different_times_still_finish_every_decision(
    kafka_bootstrap, unique_topic, tmp_path, create_topic
):
    topics = Topics(unique_topic("quiet"))
    run(create_topic(topics.events, partitions=PARTITIONS))
    rules = tmp_path / "live.rules"
    rules.write_text(RULES)
    parts = partitioned(scenario(seed=31))
    events = [e for p in PUBLISH_ORDER for e in parts[p]]
    expected = replay_until_quiet(events)
    second_latest = T0 + ENDS[1]
    late_decisions = [r for r in expected if parse_ts(r["ts"]) > second_latest]
    assert any(r["type"] == "incident.resolved" for r in late_decisions), "the scenario must need the quiet case"

    worker = Worker(
        topics, kafka_bootstrap, rules, tmp_path, extra=["--idle-timeout", IDLE_TIMEOUT, "--log-format", "json"]
    ).start()
    try:
        worker.wait_ready()
        for partition in PUBLISH_ORDER:
            kcat_publish(kafka_bootstrap, topics.events, partition, parts[partition])

        arrived = records_arrived(kafka_bootstrap, topics, expected)
        wait_for(arrived, 120, "every decision the events allow, with no event after them", [worker])
        metrics = worker.metrics()
        last = max(parse_ts(e["ts"]) for e in events)
        marks = {v for k, v in metrics.items() if k.startswith("firebreak_watermark_seconds")}
        assert marks == {(last - LATENESS_MS) / 1000}, metrics
        idle = [v for k, v in metrics.items() if k.startswith("firebreak_idle_input_partitions")]
        assert idle and set(idle) == {PARTITIONS}
        assert metrics["firebreak_late_events_total"] == 0
    finally:
        worker.stop()
    incidents = run(read_all(kafka_bootstrap, topics.incidents))
    containment = run(read_all(kafka_bootstrap, topics.containment))
    assert multiset(incidents + containment) == multiset(expected)

    # The same topic replayed over a range that ends after its data stops at the same point.
    out = tmp_path / "replayed.jsonl"
    done = subprocess.run(
        [
            *worker_cli(),
            "replay",
            "--topic",
            topics.events,
            "--bootstrap",
            kafka_bootstrap,
            "--rules",
            str(rules),
            "--since",
            format_ts(T0),
            "--until",
            format_ts(T0 + 120 * MIN),
            "--lateness",
            "2s",
            "--out",
            str(out),
        ],
        capture_output=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr.decode()
    replayed = [orjson.loads(line) for line in out.read_bytes().splitlines() if line]
    assert multiset(replayed) == multiset(expected)

    # The operator's view: JSON lines only, no terminal control characters, the story told.
    log = (tmp_path / f"worker-{worker.port}.log").read_bytes()
    assert b"\x1b" not in log and b"\r" not in log
    lines = [orjson.loads(line) for line in log.splitlines() if line.strip()]
    told = [line.get("event") for line in lines]
    start = lines[told.index("starting")]
    assert start["input_topic"] == topics.events and start["input_partitions"] == PARTITIONS
    assert start["rules"] == 4 and start["metrics_url"].endswith(f":{worker.port}/metrics")
    assigned = [line for line in lines if line.get("event") == "assigned"]
    assert assigned and assigned[-1]["input_partitions"] == list(range(PARTITIONS))
    assert "shard_fresh" in told
    idled = {line["partition"] for line in lines if line.get("event") == "partition_idle"}
    assert idled == set(range(PARTITIONS))


def worker_cli() -> list[str]:
    from worker_harness import FIREBREAK

    return FIREBREAK
