"""firebreak notify following the incidents topic: committed offsets, resumes where it stopped,
re-delivers what it could not deliver (at least once), to a real HTTP server on 127.0.0.1."""

from __future__ import annotations

import asyncio
import sys

import orjson
import pytest
from notify_receiver import Receiver, config_file, serve
from test_worker_live import clocks, replay, scenario

pytestmark = pytest.mark.kafka


def records() -> list[dict]:
    """The live scenario's records (its rules name no notify target: default_targets routes them)."""
    events = scenario(minutes=80, seed=61)
    return replay(events, [e for _, e in clocks(events)])


async def publish(bootstrap: str, incidents: str, containment: str, items: list[dict]) -> None:
    from aiokafka import AIOKafkaProducer

    producer = AIOKafkaProducer(bootstrap_servers=bootstrap)
    await producer.start()
    try:
        for record in items:
            topic = incidents if record["type"].startswith("incident.") else containment
            await producer.send_and_wait(topic, orjson.dumps(record))
    finally:
        await producer.stop()


async def notify(bootstrap: str, tmp_path, incidents: str, containment: str, script: list[str], extra: str = ""):
    receiver = Receiver(script)
    runner, url = await serve(receiver)
    try:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "engine.cli", "notify", "--config", config_file(tmp_path, url, extra),
            "--topic", incidents, "--containment-topic", containment, "--bootstrap", bootstrap,
            "--group", f"{incidents}-notify", "--idle", "3", stderr=asyncio.subprocess.PIPE,
            env={"TEST_PD_KEY": "K", "TEST_SLACK_URL": f"{url}/slack", "PATH": ""})  # fmt: skip
        _, err = await asyncio.wait_for(proc.communicate(), 120)
        return proc.returncode, err.decode(), receiver
    finally:
        await runner.cleanup()


def pd_keys(receiver: Receiver) -> list[tuple[str, str]]:
    return [(r["body"]["dedup_key"], r["body"]["event_action"]) for r in receiver.received
            if r["path"] == "/v2/enqueue" and r["behaviour"] == "ok"]  # fmt: skip


def test_follows_the_topic_resumes_and_redelivers_what_failed(kafka_bootstrap, unique_topic, tmp_path):
    incidents, containment = unique_topic("inc"), unique_topic("cmd")
    items = records()
    half = len(items) // 2
    run = asyncio.run
    run(publish(kafka_bootstrap, incidents, containment, items[:half]))
    code, err, first = run(notify(kafka_bootstrap, tmp_path, incidents, containment, []))
    assert code == 0, err
    want_first = [(r["incident_id"], "resolve" if r["type"] == "incident.resolved" else "trigger")
                  for r in items[:half] if r["type"].startswith("incident.")]  # fmt: skip
    assert sorted(pd_keys(first)) == sorted(want_first)

    run(publish(kafka_bootstrap, incidents, containment, items[half:]))
    code, err, down = run(notify(kafka_bootstrap, tmp_path, incidents, containment, ["500"] * 50, "retries = 1"))
    assert code == 4 and "gave up" in err and "Traceback" not in err

    code, err, second = run(notify(kafka_bootstrap, tmp_path, incidents, containment, []))
    assert code == 0, err
    want_second = [(r["incident_id"], "resolve" if r["type"] == "incident.resolved" else "trigger")
                   for r in items[half:] if r["type"].startswith("incident.")]  # fmt: skip
    assert sorted(pd_keys(second)) == sorted(want_second)  # resumed after the first run; nothing skipped
