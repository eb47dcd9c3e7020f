"""Run `firebreak worker` processes against the real broker, feed them, read what they write."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

FIREBREAK = [sys.executable, "-m", "firebreak.cli"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Topics:
    prefix: str

    @property
    def events(self) -> str:
        return f"{self.prefix}.events"

    @property
    def incidents(self) -> str:
        return f"{self.prefix}.incidents"

    @property
    def containment(self) -> str:
        return f"{self.prefix}.containment"

    @property
    def dead_letter(self) -> str:
        return f"{self.prefix}.deadletter"


@dataclass
class Worker:
    topics: Topics
    bootstrap: str
    rules: Path
    log_dir: Path
    lateness: str = "2s"
    extra: list[str] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)  # e.g. FIREBREAK_KAFKA_SASL_PASSWORD
    process: subprocess.Popen | None = None
    port: int = 0

    def start(self) -> Worker:
        self.port = free_port()
        log = open(self.log_dir / f"worker-{self.port}.log", "wb")  # noqa: SIM115 - lives with the process
        self.process = subprocess.Popen(
            [
                *FIREBREAK,
                "worker",
                "--rules",
                str(self.rules),
                "--bootstrap",
                self.bootstrap,
                "--app-id",
                self.topics.prefix,
                "--input-topic",
                self.topics.events,
                "--incidents-topic",
                self.topics.incidents,
                "--containment-topic",
                self.topics.containment,
                "--dead-letter-topic",
                self.topics.dead_letter,
                "--lateness",
                self.lateness,
                "--web-port",
                str(self.port),
                "--checkpoint-interval",
                "3s",
                "--session-timeout",
                "10s",
                *self.extra,
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**os.environ, "FIREBREAK_DATADIR": str(self.log_dir), **self.env},
        )
        return self

    def metrics(self) -> dict[str, float]:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/metrics", timeout=2) as response:
            text = response.read().decode()
        out: dict[str, float] = {}
        for line in text.splitlines():
            if line and not line.startswith("#"):
                name, _, value = line.rpartition(" ")
                out[name] = float(value)
        return out

    def wait_ready(self, timeout: float = 60) -> None:
        """Until its metrics answer and it has been assigned partitions of its topics."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.check_alive()
            try:
                if any(name.startswith("firebreak_consumer_lag") for name in self.metrics()):
                    return
            except OSError:
                pass
            time.sleep(0.3)
        raise AssertionError(f"worker on port {self.port} not ready within {timeout}s; see {self.log_dir}")

    def check_alive(self) -> None:
        if self.process is not None and self.process.poll() is not None:
            raise AssertionError(f"worker exited with {self.process.returncode}; log in {self.log_dir}")

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(10)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.kill()


async def publish(bootstrap: str, topic: str, events: Iterable[dict], key_field: str = "tenant") -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=5, enable_idempotence=True)
    await producer.start()
    try:
        for event in events:
            key = event.get(key_field) or event.get("event_id") or ""
            await producer.send(topic, orjson.dumps(event), key=str(key).encode())
        await producer.flush()
    finally:
        await producer.stop()


async def publish_raw(bootstrap: str, topic: str, items: Iterable[tuple[int | None, bytes]]) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, max_request_size=2_000_000)
    await producer.start()
    try:
        for partition, value in items:
            await producer.send(topic, value, partition=partition)
        await producer.flush()
    finally:
        await producer.stop()


async def read_all(bootstrap: str, topic: str, settle_s: float = 2.0, cases: bool = False) -> list[dict]:
    """Every committed record of a topic, by an independent read_committed consumer; without
    the case stage's records (case.*) unless ``cases`` (test_worker_live checks those)."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap,
        isolation_level="read_committed",
        enable_auto_commit=False,
        auto_offset_reset="earliest",
    )
    await consumer.start()
    try:
        partitions = consumer.partitions_for_topic(topic) or set()
        if not partitions:
            await consumer._client.force_metadata_update()  # noqa: SLF001 - fresh topic
            partitions = consumer.partitions_for_topic(topic) or set()
        tps = [TopicPartition(topic, p) for p in sorted(partitions)]
        if not tps:
            return []
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        out: list[dict] = []
        quiet_since = time.monotonic()
        while time.monotonic() - quiet_since < settle_s:
            batch = await consumer.getmany(timeout_ms=300)
            for messages in batch.values():
                records = (orjson.loads(m.value) for m in messages)
                out.extend(r for r in records if cases or not str(r.get("type", "")).startswith("case."))
                quiet_since = time.monotonic()
        return out
    finally:
        await consumer.stop()


def wait_for(predicate, timeout: float, what: str, workers: Iterable[Worker] = ()) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for worker in workers:
            worker.check_alive()
        if predicate():
            return
        time.sleep(0.5)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def run(coro):
    return asyncio.run(coro)


def records_arrived(bootstrap: str, topics: Topics, expected: list[dict]):
    """A predicate for `wait_for`: every expected record (by type, incident, time) is on the
    incidents or containment topic."""
    want = {(r["type"], r.get("incident_id"), r["ts"]) for r in expected}

    def check() -> bool:
        got = run(read_all(bootstrap, topics.incidents, settle_s=0.3))
        got += run(read_all(bootstrap, topics.containment, settle_s=0.3))
        return want <= {(r["type"], r.get("incident_id"), r["ts"]) for r in got}

    return check
