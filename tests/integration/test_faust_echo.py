"""A real Faust worker (subprocess, uvloop, aiokafka driver) reads one topic and writes another.

Checked strictly from the outside: aiokafka produces the input and consumes the output.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from pathlib import Path

import orjson
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

pytestmark = pytest.mark.kafka

APP = Path(__file__).with_name("faust_echo_app.py")
N_EVENTS = 200
DEADLINE_S = 90  # worker start + group join + the echo itself; typically ~10 s here


def _tail(path: Path, lines: int = 40) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except FileNotFoundError:
        return "(no worker log)"


def _stop(proc: subprocess.Popen) -> None:
    """Always end the worker: SIGTERM to its process group, SIGKILL if it lingers."""
    if proc.poll() is not None:
        return
    for sig, grace in ((signal.SIGTERM, 20), (signal.SIGKILL, 10)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=grace)
            return
        except subprocess.TimeoutExpired:
            continue


async def test_faust_worker_echoes_topic_to_topic(kafka_bootstrap, create_topic, unique_topic, tmp_path):
    source = await create_topic(unique_topic("in"), partitions=2)
    sink = await create_topic(unique_topic("out"), partitions=2)
    app_id = unique_topic("echo-app")
    worker_log = tmp_path / "worker.log"

    env = {
        **os.environ,
        "FB_ECHO_BROKER": f"kafka://{kafka_bootstrap}",
        "FB_ECHO_APP_ID": app_id,
        "FB_ECHO_IN": source,
        "FB_ECHO_OUT": sink,
        "PYTHONUNBUFFERED": "1",
    }
    cmd = [
        sys.executable,
        str(APP),
        "--loop",
        "uvloop",
        "--datadir",
        str(tmp_path / "faust-data"),
        "--loglevel",
        "info",
        "worker",
        "--without-web",
    ]
    with worker_log.open("wb") as log:
        proc = subprocess.Popen(
            cmd,
            env=env,
            cwd=tmp_path,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    try:
        producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap, acks="all", value_serializer=orjson.dumps)
        await producer.start()
        try:
            for i in range(N_EVENTS):
                await producer.send(source, key=f"k{i}".encode(), value={"id": i, "kind": "change"})
            await producer.flush()
        finally:
            await producer.stop()

        consumer = AIOKafkaConsumer(
            sink,
            bootstrap_servers=kafka_bootstrap,
            group_id=None,
            auto_offset_reset="earliest",
            value_deserializer=orjson.loads,
        )
        await consumer.start()
        echoed: list[dict] = []
        try:
            async with asyncio.timeout(DEADLINE_S):
                while len(echoed) < N_EVENTS:
                    if proc.poll() is not None:
                        pytest.fail(f"faust worker exited with {proc.returncode}:\n{_tail(worker_log)}")
                    for records in (await consumer.getmany(timeout_ms=500)).values():
                        echoed.extend(record.value for record in records)
        except TimeoutError:
            pytest.fail(
                f"only {len(echoed)} of {N_EVENTS} events echoed within {DEADLINE_S}s; worker log:\n{_tail(worker_log)}"
            )
        finally:
            await consumer.stop()
    finally:
        _stop(proc)

    ids = [event["id"] for event in echoed]
    assert sorted(ids) == list(range(N_EVENTS)), "every event echoed exactly once"
    assert {event["echoed_by"] for event in echoed} == {app_id}
    assert {event["loop"] for event in echoed} == {"uvloop"}, "the worker should run on uvloop"
    assert proc.returncode is not None
