"""Faust's own per-message cost: a worker that takes a pre-filled topic in batches and does
nothing with them — the ceiling of any Faust agent on this machine.

    python benchmarks/faust_floor.py TOPIC COUNT [--batch 1000] [--mode take_events|events|batches]

take_events: an agent with `stream.take_events(batch, within=50 ms)` (the worker's stage 1
before the batch path); events: an agent iterating `stream.events()` one by one; batches:
each fetch's messages as one list from the consumer (engine/firebreak/adapters/live/batches.py, the
worker's stage 1 now), acked. Faust assigns the partitions and runs the group in all three.
Prints events/s from the first message to the last.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("FAUST_LOOP", "uvloop")
import faust  # noqa: E402

args = argparse.ArgumentParser()
args.add_argument("topic")
args.add_argument("count", type=int)
args.add_argument("--batch", type=int, default=1000)
args.add_argument("--mode", default="take_events", choices=("take_events", "events", "batches"))
args.add_argument("--bootstrap", default=os.environ.get("KAFKA_BOOTSTRAP", "127.0.0.1:9092"))
opts = args.parse_args(sys.argv[1:])
app = faust.App(
    f"floor-{os.getpid()}",
    broker=f"kafka://{opts.bootstrap}",
    value_serializer="raw",
    consumer_auto_offset_reset="earliest",
    web_enabled=False,
    stream_wait_empty=False,
    datadir=f"/tmp/faust-floor-{os.getpid()}",
)
topic = app.topic(opts.topic, value_type=bytes)
state = {"n": 0, "first": None}


def seen(n: int) -> None:
    if state["first"] is None:
        state["first"] = time.perf_counter()
    state["n"] += n
    if state["n"] >= opts.count:
        rate = state["n"] / (time.perf_counter() - state["first"])
        print(f"faust {opts.mode} (batch {opts.batch}): {state['n']:,} messages, {rate:,.0f} events/s", flush=True)
        os._exit(0)


if opts.mode == "take_events":

    @app.agent(topic, concurrency=1)
    async def take(stream):
        async for events in stream.take_events(opts.batch, within=0.05):
            seen(len(events))

elif opts.mode == "events":

    @app.agent(topic, concurrency=1)
    async def one(stream):
        async for _event in stream.events():
            seen(1)

else:

    @app.agent(topic, concurrency=1)  # subscribes the topic; batches.py takes its messages
    async def nothing(stream):
        async for _event in stream.events():
            pass

    async def handle(messages):
        for message in messages:
            app.consumer.ack(message)
        seen(len(messages))


if __name__ == "__main__":
    sys.argv = [sys.argv[0], "worker", "--loglevel", "warn", "--without-web"]
    if opts.mode == "batches":
        from firebreak.adapters.live import batches

        asyncio.set_event_loop(asyncio.new_event_loop())
        batches.install(app, opts.topic, handle)
    app.main()
