"""End to end: services publish with the SDK → worker → the example gateway flips a model to its
fallback, and back after recovery. The output topics are also read by Kafka's own console consumer."""

from __future__ import annotations

import asyncio
import os
import subprocess
import time
from pathlib import Path

import orjson
import pytest
from firebreak.core import parse_ts
from firebreak.sdk import AsyncPublisher, ContainmentListener
from test_worker_live import PARTITIONS, RULES, clocks, scenario
from worker_harness import Topics, Worker, publish_raw, read_all, run, wait_for

pytestmark = pytest.mark.kafka

ROOT = Path(__file__).resolve().parents[2]
KAFKA_LIBS = ROOT / ".cache" / "kafka" / os.environ.get("KAFKA_VERSION", "4.0.2") / "libs"
MIN = 60_000


def gateway_module():
    import importlib.util

    spec = importlib.util.spec_from_file_location("gateway", ROOT / "examples" / "gateway" / "gateway.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def console_consumer(bootstrap: str, topic: str, count: int) -> list[dict]:
    """Read `count` committed records with the broker's own Java client (not our code)."""
    proc = subprocess.run(
        [
            "java",
            "-Xmx128m",
            "-XX:TieredStopAtLevel=1",
            "-cp",
            f"{KAFKA_LIBS}/*",
            "org.apache.kafka.tools.consumer.ConsoleConsumer",
            "--bootstrap-server",
            bootstrap,
            "--topic",
            topic,
            "--from-beginning",
            "--isolation-level",
            "read_committed",
            "--max-messages",
            str(count),
            "--timeout-ms",
            "20000",
        ],
        capture_output=True,
        timeout=90,
    )
    assert proc.returncode == 0, proc.stderr.decode(errors="replace")[-2000:]
    return [orjson.loads(line) for line in proc.stdout.decode().splitlines() if line.startswith("{")]


def test_spike_flips_the_gateway_to_its_fallback_and_back(kafka_bootstrap, unique_topic, create_topic, tmp_path):
    topics = Topics(unique_topic("e2e"))
    run(create_topic(topics.events, partitions=PARTITIONS))
    rules = tmp_path / "live.rules"
    rules.write_text(RULES)
    # --no-cases: the case stage's records (test_worker_live checks them) come after their
    # incidents' shards checkpoint, so the Java client's count below could cut them anywhere
    worker = Worker(topics, kafka_bootstrap, rules, tmp_path, lateness="1s", extra=["--no-cases"]).start()
    try:
        worker.wait_ready()
        # Event time close to now: containment expiry is checked against the gateway's clock.
        t0 = (int(time.time() * 1000) // MIN - 95) * MIN
        events = scenario(t0=t0, seed=21)
        # the spike is on from 60m to 80m; its 1h baseline is ready from 70m on
        during = [e for e in events if parse_ts(e["ts"]) < t0 + 76 * MIN]
        after = events[len(during) :]
        router = gateway_module().ModelRouter(on_change=None)

        async def scenario_run() -> None:
            listener = ContainmentListener(
                kafka_bootstrap, f"gw-{topics.prefix}", topics.containment, handlers={"fallback": router}
            )
            async with listener:
                async with AsyncPublisher(kafka_bootstrap, topics.events) as publisher:
                    for event in during:
                        await publisher.publish(event)
                    await publisher.flush()
                    await listener.run_until(lambda _: router.route("m-a") == "safe", 90)
                    assert router.route("m-b") == "m-b"  # only the spiking model falls back
                    for event in after:
                        await publisher.publish(event)
                    await publisher.flush()
                await publish_raw(kafka_bootstrap, topics.events, [(p, orjson.dumps(e)) for p, e in clocks(events)])
                await listener.run_until(lambda _: router.route("m-a") == "m-a", 90)

        asyncio.run(scenario_run())
        incidents = run(read_all(kafka_bootstrap, topics.incidents))
        commands = run(read_all(kafka_bootstrap, topics.containment))
        spike = [r for r in incidents if r["rule"] == "spike"]
        assert [r["type"] for r in spike if r["type"] != "incident.escalated"] == [
            "incident.opened",
            "incident.resolved",
        ]
        assert spike[0]["group"] == {"model": "m-a"}
        fallback = [r for r in commands if r["rule"] == "spike"]
        assert {r["type"] for r in fallback} >= {"containment.command", "containment.release"}
        # An independent client sees the same committed records, byte for byte.
        java_incidents = console_consumer(kafka_bootstrap, topics.incidents, len(incidents))
        assert sorted(map(orjson.dumps, java_incidents)) == sorted(map(orjson.dumps, incidents))
        java_commands = console_consumer(kafka_bootstrap, topics.containment, len(commands))
        assert sorted(map(orjson.dumps, java_commands)) == sorted(map(orjson.dumps, commands))
    finally:
        worker.stop()
    wait_for(lambda: worker.process.poll() is not None, 20, "the worker to stop")
