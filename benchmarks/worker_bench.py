"""Live worker benchmark, against a running broker (scripts/kafka-local start).

    python benchmarks/worker_bench.py throughput [--events 200000]
    python benchmarks/worker_bench.py latency [--lateness 2s 30s] [--rate 5000]

throughput: one topic (4 partitions) pre-filled with synthetic events; in the same run,
(a) a raw aiokafka `getmany` + orjson consumer reads it all, (b) `firebreak worker`
with the starter pack processes it all (both stages, until every routed partition is
drained). Reports events/s of each and the ratio (b)/(a).

latency: events published at a steady rate with event time = wall-clock time; every
2 s one event crosses a threshold (a pii flag on a new tenant, rule
`count(pii) >= 1 over 5s by tenant`). Time to detect = from just before that event is
sent to the `incident.opened` record arriving on the incidents topic (read_committed),
as HdrHistogram percentiles, for each allowed-lateness setting.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from pathlib import Path

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from hdrh.histogram import HdrHistogram

ROOT = Path(__file__).resolve().parents[1]
BOOTSTRAP = os.environ.get("KAFKA_BOOTSTRAP", "127.0.0.1:9092")
PARTITIONS = 4


async def create(topic: str, partitions: int = PARTITIONS) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=BOOTSTRAP)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(topic, partitions, 1)])
    finally:
        await admin.close()


def start_worker(rules: str, prefix: str, lateness: str, port: int, log: Path) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "engine.cli", "worker", "--rules", rules, "--bootstrap", BOOTSTRAP,
         "--app-id", prefix, "--input-topic", f"{prefix}.events", "--incidents-topic", f"{prefix}.incidents",
         "--containment-topic", f"{prefix}.containment", "--dead-letter-topic", f"{prefix}.deadletter",
         "--lateness", lateness, "--web-port", str(port)],
        stdout=open(log, "wb"), stderr=subprocess.STDOUT, cwd=ROOT,  # noqa: SIM115
    )  # fmt: skip


def metrics(port: int) -> dict[str, float]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as response:
            text = response.read().decode()
    except OSError:
        return {}
    out = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            out[name] = float(value)
    return out


# ---- throughput ----------------------------------------------------------------------------


def events_file(count: int) -> Path:
    path = ROOT / "benchmarks" / "data" / f"worker-{count}.jsonl"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        subprocess.run([sys.executable, str(ROOT / "benchmarks" / "generate.py"), "--events", str(count),
                        "--out", str(path)], check=True)  # fmt: skip
    return path


async def fill(topic: str, path: Path) -> int:
    producer = AIOKafkaProducer(bootstrap_servers=BOOTSTRAP, linger_ms=20, max_batch_size=256 * 1024)
    await producer.start()
    n = 0
    try:
        with open(path, "rb") as lines:
            for raw in lines:
                event = orjson.loads(raw)
                await producer.send(topic, raw.rstrip(b"\n"), key=str(event.get("tenant", "")).encode())
                n += 1
        await producer.flush()
    finally:
        await producer.stop()
    return n


async def raw_consume(topic: str, expected: int) -> float:
    consumer = AIOKafkaConsumer(bootstrap_servers=BOOTSTRAP, enable_auto_commit=False,
                                max_partition_fetch_bytes=4 << 20)  # fmt: skip
    await consumer.start()
    try:
        tps = [TopicPartition(topic, p) for p in range(PARTITIONS)]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        seen, started = 0, time.perf_counter()
        while seen < expected:
            batch = await consumer.getmany(timeout_ms=500, max_records=10_000)
            for messages in batch.values():
                for message in messages:
                    orjson.loads(message.value)
                seen += len(messages)
        return expected / (time.perf_counter() - started)
    finally:
        await consumer.stop()


def worker_consume(prefix: str, expected: int, workdir: Path) -> float:
    port = 6400 + os.getpid() % 500
    process = start_worker(str(ROOT / "rules"), prefix, "30s", port, workdir / "throughput-worker.log")
    try:
        first = None
        while True:
            if process.poll() is not None:
                raise SystemExit(f"worker exited; see {workdir / 'throughput-worker.log'}")
            m = metrics(port)
            taken = m.get("firebreak_events_total", 0)
            if taken and first is None:
                first = time.perf_counter()
            routed_lag = sum(v for k, v in m.items() if k.startswith("firebreak_consumer_lag") and ".routed" in k)
            if taken >= expected and routed_lag == 0:
                return expected / (time.perf_counter() - first)
            time.sleep(0.1)
    finally:
        process.terminate()
        process.wait(20)


def throughput(args: argparse.Namespace) -> None:
    path = events_file(args.events)
    prefix = f"bench-{uuid.uuid4().hex[:8]}"
    topic = f"{prefix}.events"
    asyncio.run(create(topic))
    n = asyncio.run(fill(topic, path))
    workdir = Path(tempfile.mkdtemp(prefix="fb-bench-"))
    raw = max(asyncio.run(raw_consume(topic, n)) for _ in range(2))
    worker = worker_consume(prefix, n, workdir)
    print(f"events: {n:,} on {PARTITIONS} partitions ({path.name})")
    print(f"raw aiokafka getmany + orjson: {raw:12,.0f} events/s")
    print(f"firebreak worker (starter pack): {worker:10,.0f} events/s")
    print(f"ratio: {worker / raw:.3f}")


# ---- latency -------------------------------------------------------------------------------

LATENCY_RULE = "rule bench_leak:\n  count(pii) >= 1 over 5s by tenant -> sev2\n"


async def measure_latency(prefix: str, rate: int, seconds: float, lateness_s: float) -> HdrHistogram:
    histogram = HdrHistogram(1, 600_000, 3)
    sent: dict[str, float] = {}
    producer = AIOKafkaProducer(bootstrap_servers=BOOTSTRAP, linger_ms=2)
    consumer = AIOKafkaConsumer(f"{prefix}.incidents", bootstrap_servers=BOOTSTRAP, isolation_level="read_committed",
                                auto_offset_reset="latest", enable_auto_commit=False)  # fmt: skip
    await producer.start()
    await consumer.start()
    stop = asyncio.Event()

    async def publish() -> None:
        per_tick = rate // 100  # events per 10 ms
        n, leaks, next_leak = 0, 0, time.monotonic() + 2
        begin = time.monotonic()
        while time.monotonic() - begin < seconds:
            now_ms = int(time.time() * 1000)
            for _ in range(per_tick):
                event = {"event_id": f"e{n}", "ts": now_ms, "tenant": f"t{n % 500}", "user": f"u{n % 5000}",
                         "model": "m", "flags": {"pii": False}}  # fmt: skip
                await producer.send(f"{prefix}.events", orjson.dumps(event), partition=n % PARTITIONS)
                n += 1
            # Event time moves only with events: the last crossing must be followed by at least
            # the allowed lateness of traffic, or nothing can ever decide about it.
            if time.monotonic() >= next_leak and time.monotonic() - begin < seconds - lateness_s - 3:
                tenant = f"leak-{leaks}"
                leaks += 1
                next_leak += 2
                event = {"event_id": f"leak{leaks}", "ts": int(time.time() * 1000), "tenant": tenant, "model": "m",
                         "user": "x", "flags": {"pii": True}}  # fmt: skip
                sent[tenant] = time.perf_counter()
                await producer.send(f"{prefix}.events", orjson.dumps(event), partition=leaks % PARTITIONS)
            await asyncio.sleep(max(0.0, begin + (n / rate) - time.monotonic()))
        print(f"  published {n:,} events in {time.monotonic() - begin:.1f}s ({n / (time.monotonic() - begin):,.0f}/s)")
        stop.set()

    async def collect() -> None:
        while True:
            batch = await consumer.getmany(timeout_ms=200)
            now = time.perf_counter()
            for messages in batch.values():
                for message in messages:
                    record = orjson.loads(message.value)
                    tenant = record.get("group", {}).get("tenant", "")
                    if record["type"] == "incident.opened" and tenant in sent:
                        histogram.record_value(max(1, int((now - sent[tenant]) * 1000)))
            if stop.is_set() and histogram.get_total_count() >= len(sent):
                return

    try:
        collector = asyncio.create_task(collect())
        await publish()
        try:
            await asyncio.wait_for(collector, timeout=60)
        except TimeoutError:
            print(f"  {len(sent) - histogram.get_total_count()} crossings not detected within 60 s")
    finally:
        await producer.stop()
        await consumer.stop()
    return histogram


def latency(args: argparse.Namespace) -> None:
    workdir = Path(tempfile.mkdtemp(prefix="fb-bench-"))
    rules = workdir / "bench.rules"
    rules.write_text(LATENCY_RULE)
    for lateness in args.lateness:
        prefix = f"lat-{uuid.uuid4().hex[:8]}"
        asyncio.run(create(f"{prefix}.events"))
        port = 6900 + os.getpid() % 90
        process = start_worker(str(rules), prefix, lateness, port, workdir / f"latency-{lateness}.log")
        try:
            while not any(k.startswith("firebreak_consumer_lag") for k in metrics(port)):
                if process.poll() is not None:
                    raise SystemExit(f"worker exited; see {workdir}")
                time.sleep(0.3)
            print(f"lateness {lateness}, {args.rate:,} events/s for {args.seconds:.0f}s:")
            lateness_s = int(lateness[:-1]) * {"s": 1, "m": 60}[lateness[-1]]
            h = asyncio.run(measure_latency(prefix, args.rate, args.seconds, lateness_s))
            q = {p: h.get_value_at_percentile(p) for p in (50, 90, 99, 100)}
            print(f"  time to detect (ms): n={h.get_total_count()} p50={q[50]} p90={q[90]} p99={q[99]} max={q[100]}")
        finally:
            process.terminate()
            process.wait(20)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="what", required=True)
    t = sub.add_parser("throughput")
    t.add_argument("--events", type=int, default=200_000)
    t.set_defaults(run=throughput)
    lat = sub.add_parser("latency")
    lat.add_argument("--lateness", nargs="+", default=["2s", "30s"])
    lat.add_argument("--rate", type=int, default=5_000)
    lat.add_argument("--seconds", type=float, default=60)
    lat.set_defaults(run=latency)
    args = parser.parse_args()
    args.run(args)


if __name__ == "__main__":
    main()
