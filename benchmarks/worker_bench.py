"""Live worker benchmark, against a running broker (scripts/kafka-local start).

    python benchmarks/worker_bench.py throughput [--events 200000] [--workers 1 2] [--profile] [--threads]
    python benchmarks/worker_bench.py latency [--lateness 2s 30s] [--rate 5000] [--workers 2]
    python benchmarks/worker_bench.py memory [--users 100000] [--events 300000]
    python benchmarks/worker_bench.py stages [--events 200000] [--engine native python]
    (--worker-arg=ARG before the subcommand: passed to every worker, e.g. --worker-arg=--no-traffic-check)

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


RAW_CPU: list[float] = []  # events per CPU second of each raw run
CPU: dict = {}  # CPU seconds of the workers and the broker during the last worker run
WORKER_ARGS: list[str] = []  # --worker-arg: passed to every worker (e.g. --engine python, --no-traffic-check)


def start_worker(rules: str, prefix: str, lateness: str, port: int, log: Path) -> subprocess.Popen:
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "firebreak.cli",
            "worker",
            "--rules",
            rules,
            "--bootstrap",
            BOOTSTRAP,
            "--app-id",
            prefix,
            "--input-topic",
            f"{prefix}.events",
            "--incidents-topic",
            f"{prefix}.incidents",
            "--containment-topic",
            f"{prefix}.containment",
            "--dead-letter-topic",
            f"{prefix}.deadletter",
            "--lateness",
            lateness,
            "--web-port",
            str(port),
            *WORKER_ARGS,
        ],
        stdout=open(log, "wb"),
        stderr=subprocess.STDOUT,
        cwd=ROOT,  # noqa: SIM115
    )


def cpu_s(pid: int) -> float:
    """User + system CPU seconds a process (all its threads) has used."""
    return cpu_s_of(Path(f"/proc/{pid}/stat"))


def thread_cpu_s(pid: int) -> dict[int, float]:
    """User + system CPU seconds of each thread of a process (by thread id)."""
    out = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            out[int(task.name)] = cpu_s_of(task / "stat")
        except (OSError, ValueError):
            pass  # the thread ended meanwhile
    return out


def cpu_s_of(stat: Path) -> float:
    """User + system CPU seconds from a /proc `stat` file (a process's or one thread's)."""
    fields = stat.read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def thread_names(pid: int) -> dict[int, str]:
    """Thread id → Python thread name, from `py-spy dump` (installed beside this Python; {} if not)."""
    spy = Path(sys.executable).parent / "py-spy"
    if not spy.exists():
        return {}
    try:
        dump = subprocess.run([str(spy), "dump", "--pid", str(pid)], capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.SubprocessError):
        return {}
    names = {}
    for line in dump.splitlines():
        if line.startswith("Thread ") and '"' in line:
            tid = line.split()[1]
            if tid.isdigit():
                names[int(tid)] = line.split('"')[1]
    return names


def broker_pid() -> int | None:
    """The local broker's pid (scripts/kafka-local), to count its CPU in the same run."""
    states = [Path(os.environ["KAFKA_STATE_DIR"])] if os.environ.get("KAFKA_STATE_DIR") else []  # its own broker
    states += [root / ".kafka" for root in (ROOT, Path("/work/main"))]
    for path in [state / "broker.pid" for state in states]:
        if path.exists():
            return int(path.read_text().split()[0])
    return None


def rss_mb(pid: int) -> tuple[float, float]:
    """(resident now, peak resident) of a process, MB."""
    fields = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines() if ":" in line)
    return int(fields["VmRSS"].split()[0]) / 1024, int(fields["VmHWM"].split()[0]) / 1024


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
        subprocess.run(
            [sys.executable, str(ROOT / "benchmarks" / "generate.py"), "--events", str(count), "--out", str(path)],
            check=True,
        )
    return path


WIDE_TEXT = 1_500  # --wide: characters of prompt and of output added to each event
WIDE_USERS = 200_000  # --wide: distinct users


def widen(event: dict, n: int) -> dict:
    """Traffic unlike generate.py's: a prompt and an output (never routed: routed.py), and one of
    WIDE_USERS users (so `by user` rules keep many groups), deterministic per event."""
    words = f"{event.get('feature', 'x')} request {n} about the customer's account history and order "
    text = (words * (WIDE_TEXT // len(words) + 1))[:WIDE_TEXT]
    return {**event, "user": f"wide-{(n * 7919) % WIDE_USERS:06d}", "prompt": text, "output": text[::-1]}


async def fill(topic: str, path: Path, wide: bool = False) -> int:
    producer = AIOKafkaProducer(bootstrap_servers=BOOTSTRAP, linger_ms=20, max_batch_size=256 * 1024)
    await producer.start()
    n = 0
    try:
        with open(path, "rb") as lines:
            for raw in lines:
                event = orjson.loads(raw)
                value = orjson.dumps(widen(event, n)) if wide else raw.rstrip(b"\n")
                await producer.send(topic, value, key=str(event.get("tenant", "")).encode())
                n += 1
        await producer.flush()
    finally:
        await producer.stop()
    return n


async def raw_consume(topic: str, expected: int) -> float:
    consumer = AIOKafkaConsumer(
        bootstrap_servers=BOOTSTRAP, enable_auto_commit=False, max_partition_fetch_bytes=4 << 20
    )
    await consumer.start()
    try:
        tps = [TopicPartition(topic, p) for p in range(PARTITIONS)]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        seen, started, cpu = 0, time.perf_counter(), time.process_time()
        while seen < expected:
            batch = await consumer.getmany(timeout_ms=500, max_records=10_000)
            for messages in batch.values():
                for message in messages:
                    orjson.loads(message.value)
                seen += len(messages)
        RAW_CPU.append(expected / (time.process_time() - cpu))
        return expected / (time.perf_counter() - started)
    finally:
        await consumer.stop()


def worker_consume(
    prefix: str,
    expected: int,
    workdir: Path,
    workers: int = 1,
    profile: Path | None = None,
    threads: bool = False,
) -> tuple[float, list[tuple[float, float]], list[float]]:
    """Start ``workers`` workers in one group on the pre-filled topic; events/s from the first
    event taken anywhere until every event is taken and every routed partition drained. Also
    (RSS, peak RSS) MB of each worker once drained, and the events each took. ``threads``:
    worker 0's CPU per thread over the same span (`CPU["threads"]`: name → seconds)."""
    base = 6400 + os.getpid() % 400
    ports = [base + i for i in range(workers)]
    processes = [
        start_worker(str(ROOT / "rules"), prefix, "30s", port, workdir / f"worker-{i}.log")
        for i, port in enumerate(ports)
    ]
    spy = None
    try:
        first = None
        while True:
            for i, process in enumerate(processes):
                if process.poll() is not None:
                    raise SystemExit(f"worker exited; see {workdir / f'worker-{i}.log'}")
            ms = [metrics(port) for port in ports]
            taken = [m.get("firebreak_events_total", 0) for m in ms]
            if sum(taken) and first is None:
                first = time.perf_counter()
                cpu0 = [cpu_s(p.pid) for p in processes]
                tasks0 = thread_cpu_s(processes[0].pid) if threads else {}
                broker = broker_pid()
                broker0 = cpu_s(broker) if broker else 0.0
                if profile is not None:
                    spy = subprocess.Popen(
                        [
                            str(Path(sys.executable).parent / "py-spy"),
                            "record",
                            "--native",
                            "-r",
                            "200",
                            "-f",
                            "raw",
                            "-o",
                            str(profile),
                            "--pid",
                            str(processes[0].pid),
                        ],
                        stdout=subprocess.DEVNULL,
                        stderr=subprocess.DEVNULL,
                    )
            lag = sum(v for m in ms for k, v in m.items() if k.startswith("firebreak_consumer_lag") and ".routed" in k)
            if first is not None and os.environ.get("WORKER_TIMELINE"):  # what waits on what, every scrape
                print(
                    f"  t={time.perf_counter() - first:5.2f}s taken={sum(taken):8,.0f} routed lag={lag:5,.0f} "
                    f"worker CPU={sum(cpu_s(p.pid) for p in processes) - sum(cpu0):5.2f}s"
                )
            if sum(taken) >= expected and lag == 0 and all(ms):
                wall = time.perf_counter() - first
                used = [cpu_s(p.pid) - c for p, c in zip(processes, cpu0, strict=True)]
                CPU.update(workers=used, wall=wall, broker=(cpu_s(broker) - broker0) if broker else None)
                CPU["heads"] = [m.get('firebreak_checkpoints_total{kind="head"}', 0) for m in ms]
                CPU["handoff"] = [  # the local hand-off's counts per worker (firebreak_local_handoff)
                    {k.split('"')[1]: v for k, v in m.items() if k.startswith("firebreak_local_handoff")} for m in ms
                ]
                if threads:  # read now, named after (py-spy pauses the drained worker a moment)
                    tasks = thread_cpu_s(processes[0].pid)
                    names = thread_names(processes[0].pid)
                    per: dict[str, float] = {}
                    for tid, seconds in tasks.items():
                        name = names.get(tid, f"thread {tid}")
                        per[name] = per.get(name, 0.0) + seconds - tasks0.get(tid, 0.0)
                    CPU["threads"] = per
                return expected / wall, [rss_mb(p.pid) for p in processes], taken
            time.sleep(0.25)  # each scrape renders every shard's open incidents: not too often
    finally:
        if spy is not None:
            spy.send_signal(2)
            spy.wait(60)
        for process in processes:
            process.terminate()
        for process in processes:
            process.wait(20)


def throughput(args: argparse.Namespace) -> None:
    path = events_file(args.events)
    workdir = Path(tempfile.mkdtemp(prefix="fb-bench-"))
    print(f"load average before: {os.getloadavg()[0]:.1f}; worker args: {' '.join(WORKER_ARGS) or '(defaults)'}")
    runs = []  # (workers, events/s, raw events/s, worker CPU us per event)
    for workers in args.workers:
        prefix = f"bench-{uuid.uuid4().hex[:8]}"
        topic = f"{prefix}.events"
        asyncio.run(create(topic))
        n = asyncio.run(fill(topic, path, args.wide))
        raw = max(asyncio.run(raw_consume(topic, n)) for _ in range(2))
        profile = workdir / "worker-0.pyspy.txt" if args.profile else None
        rate, rss, taken = worker_consume(prefix, n, workdir, workers, profile, args.threads)
        wide = f", widened: +{2 * WIDE_TEXT:,} chars of prompt/output, {WIDE_USERS:,} users" if args.wide else ""
        print(f"events: {n:,} on {PARTITIONS} partitions ({path.name}{wide}); {workers} worker(s)")
        print(f"  raw aiokafka getmany + orjson: {raw:12,.0f} events/s")
        print(f"  firebreak worker(s), starter pack: {rate:10,.0f} events/s   ratio {rate / raw:.3f}")
        print(
            f"  events taken by each worker: {', '.join(f'{t:,.0f}' for t in taken)}; RSS (peak) MB: "
            f"{', '.join(f'{now:.0f} ({peak:.0f})' for now, peak in rss)}; load average {os.getloadavg()[0]:.1f}"
        )
        print(f"  head checkpoints (transactions of records) committed: {', '.join(f'{h:,.0f}' for h in CPU['heads'])}")
        handoff = [h for h in CPU.get("handoff", []) if h]
        if handoff:
            print(
                "  local hand-off (routed messages taken as handed / left to the fetch / fetched copies "
                "skipped): "
                + ", ".join(f"{h['taken']:,.0f} / {h['fetched']:,.0f} / {h['skipped']:,.0f}" for h in handoff)
            )
        worker_cpu, raw_cpu = sum(CPU["workers"]), max(RAW_CPU[-2:])
        broker = "not found" if CPU["broker"] is None else f"{CPU['broker']:.1f} s"
        print(
            f"  CPU in {CPU['wall']:.1f} s: worker(s) {' + '.join(f'{c:.1f}' for c in CPU['workers'])} s "
            f"({n / worker_cpu:,.0f} events per worker CPU second; raw {raw_cpu:,.0f}: ratio "
            f"{n / worker_cpu / raw_cpu:.3f}); broker {broker}"
        )
        if args.threads:
            per = CPU.get("threads", {})
            print(f"  worker 0 per thread (CPU s, us per event of worker 0's {taken[0]:,.0f}, share):")
            for name, seconds in sorted(per.items(), key=lambda item: -item[1]):
                if seconds > 0:
                    print(
                        f"    {name:24s} {seconds:6.2f} s {seconds / taken[0] * 1e6:7.1f} us "
                        f"{seconds / max(sum(per.values()), 1e-9):6.1%}"
                    )
        if profile is not None:
            print(f"  py-spy profile of worker 0: {profile}")
        runs.append((workers, rate, raw, worker_cpu / n * 1e6))
    if len(runs) > 1:  # against the first run (one worker) of this same run
        _, rate0, _, cpu0 = runs[0]
        print("workers  events/s  of raw  vs first  worker CPU us/event  vs first")
        for workers, rate, raw, cpu in runs:
            print(f"{workers:7d} {rate:9,.0f} {rate / raw:7.3f} {rate / rate0:8.2f}x {cpu:20.1f} {cpu / cpu0:8.2f}x")


# ---- memory with many active groups ----------------------------------------------------------


async def fill_groups(topic: str, users: int, events: int) -> int:
    """``events`` events over 4 minutes of event time from ``users`` distinct users."""
    producer = AIOKafkaProducer(bootstrap_servers=BOOTSTRAP, linger_ms=20, max_batch_size=256 * 1024)
    await producer.start()
    start = 1_767_600_000_000
    try:
        for i in range(events):
            event = {
                "event_id": f"g{i}",
                "ts": start + i * 240_000 // events,
                "user": f"user-{i % users}",
                "tenant": f"t{i % 10}",
                "model": f"m{i % 5}",
                "service": "chat",
                "tokens_in": 100,
                "tokens_out": 50,
                "cost_usd": 0.001,
                "latency_ms": 300,
                "flags": {},
            }
            await producer.send(topic, orjson.dumps(event), partition=i % PARTITIONS)
        await producer.flush()
    finally:
        await producer.stop()
    return events


def memory(args: argparse.Namespace) -> None:
    workdir = Path(tempfile.mkdtemp(prefix="fb-bench-"))
    prefix = f"mem-{uuid.uuid4().hex[:8]}"
    asyncio.run(create(f"{prefix}.events"))
    n = asyncio.run(fill_groups(f"{prefix}.events", args.users, args.events))
    rate, rss, _ = worker_consume(prefix, n, workdir)
    ((now, peak),) = rss
    print(
        f"{n:,} events from {args.users:,} users in 4 min of event time (starter pack: five `by user` rules, so "
        f"~{5 * args.users:,} (rule, user) groups active, plus tenant/model groups); worker args: "
        f"{' '.join(WORKER_ARGS) or '(defaults)'}"
    )
    print(f"  worker RSS once drained: {now:.0f} MB (peak {peak:.0f} MB); {rate:,.0f} events/s")


# ---- the stages without Kafka ----------------------------------------------------------------


def pairs_only(rules, lines: list[bytes], shards: int, sample: int = 5_000) -> float:
    """Copies per event if population totals reached the shards apart: the shards owning a
    (rule, group) pair of the event, population rules left out (first ``sample`` events)."""
    from firebreak.core import InvalidEvent, validate_event
    from firebreak.core.sharding import Router
    from firebreak.event_types import COUNTED

    router = Router(rules, shards)
    population = sum(1 << i for i, state in enumerate(router.states) if state.population is not None)
    copies = events = 0
    for raw in lines[:sample]:
        try:
            event = validate_event(orjson.loads(raw))
        except (InvalidEvent, orjson.JSONDecodeError):
            continue
        events += 1
        if event.type in COUNTED:
            copies += sum(1 for bits in router.masks_of(event.data).values() if bits & ~population)
    return copies / max(events, 1)


def shard_events(value: bytes) -> int:
    """The events a routed message gives its shard: a row each (routed.py)."""
    from firebreak.adapters.live import routed

    return sum(1 for _ in routed.rows(routed.plain(routed.decode(value).body)))


def stages(args: argparse.Namespace) -> None:
    """Stage 1 then stage 2 in this process, on the same events, with no broker: what the
    worker's own work costs per event, apart from Faust, fetches and transactions. Timed in
    CPU seconds of this process (the machine is shared)."""
    from firebreak.adapters.live.routing import RouteStage
    from firebreak.adapters.live.settings import WorkerSettings
    from firebreak.adapters.live.shard import ShardState
    from firebreak.adapters.rule_files import read_rule_sources
    from firebreak.dsl import load_rules

    rules, _ = load_rules(read_rule_sources([str(ROOT / "rules")]), {})
    lines = events_file(args.events).read_bytes().splitlines()
    if args.wide:
        lines = [orjson.dumps(widen(orjson.loads(raw), n)) for n, raw in enumerate(lines)]
    path_bytes = sum(len(line) for line in lines)
    messages = [(i % PARTITIONS, i // PARTITIONS, raw) for i, raw in enumerate(lines)]
    for engine in args.engine:  # the shards' engine; stage 1 is native (the Python core: the oracle)
        settings = WorkerSettings(
            rules=(), shards=args.shards, input_partitions=PARTITIONS, traffic_check=args.traffic_check
        )
        route = RouteStage(rules, settings)
        routed: list[list[bytes]] = [[] for _ in range(args.shards)]
        shards = [ShardState(rules, s, args.shards, PARTITIONS, 30_000, engine) for s in range(args.shards)]
        records = 0
        stage1 = stage2 = 0.0
        for start in range(0, len(messages), args.batch):
            # As the worker does: each batch routed, then taken by the shards.
            started = time.process_time()
            outs = [out for out in route.handle(messages[start : start + args.batch]) if out.topic == "routed"]
            stage1 += time.process_time() - started
            started = time.process_time()
            for out in outs:
                log = routed[out.partition]
                shards[out.partition].accept(len(log), out.value)
                log.append(out.value)
                records += len(shards[out.partition].tick())
            stage2 += time.process_time() - started
        started = time.process_time()
        size = sum(len(orjson.dumps(shard.snapshot())) for shard in shards)  # through Python objects
        snap = time.process_time() - started
        started = time.process_time()
        bodies = [orjson.dumps(shard.checkpoint()) for shard in shards]  # what the worker commits
        written = time.process_time() - started
        from aiokafka import codec  # what the checkpoint producer's compression costs (on the event loop)

        codecs = {"gzip": codec.gzip_encode, "lz4": codec.lz4_encode, "zstd": codec.zstd_encode}
        compressed = {}
        for name, encode in codecs.items():
            started = time.process_time()
            out = sum(len(encode(body)) for body in bodies)
            compressed[name] = (time.process_time() - started, out)
        routed_events = sum(shard_events(v) for log in routed for v in log)
        n = len(messages)
        from firebreak.adapters.live import routed as routed_format

        sent = sum(len(v) for log in routed for v in log)  # as the producer sends them: zstd by stage 1
        rows = sum(len(routed_format.plain(routed_format.decode(v).body)) for log in routed for v in log)
        print(
            f"shards on {engine}: {n:,} events, {args.shards} shards, batches of {args.batch:,}"
            f"{'' if args.traffic_check else ', no traffic check'}{', wide' if args.wide else ''}"
        )
        print(
            f"  stage 1 (route): {stage1:6.2f} s  {n / stage1:10,.0f} events/s; "
            f"an event concerns {routed_events / n:.2f} shards ({pairs_only(rules, lines, args.shards):.2f} "
            f"counting only the shards owning a pair of a rule other than `Kx population`); routed topic "
            f"{sent / n:,.0f} bytes per input event as sent (rows {rows / n:,.0f}, zstd in stage 1; "
            f"{path_bytes / n:,.0f} on the input)"
        )
        print(f"  stage 2 (all shards): {stage2:6.2f} s  {n / stage2:10,.0f} events/s; {records} records")
        print(
            f"  both: {n / (stage1 + stage2):10,.0f} events/s; full checkpoints of all shards: {size / 1e6:.1f} MB "
            f"as Python objects then JSON in {snap:.2f} s, as the worker writes them in {written:.2f} s "
            f"(largest shard {max(map(len, bodies)) / 1e6:.1f} MB)"
        )
        print(
            "  checkpoint compression, all shards: "
            + "; ".join(f"{name} {t:.2f} s -> {out / 1e6:.1f} MB" for name, (t, out) in compressed.items())
        )


# ---- latency -------------------------------------------------------------------------------

LATENCY_RULE = "rule bench_leak:\n  count(pii) >= 1 over 5s by tenant -> sev2\n"


def _quantiles(values: list[float]) -> str:
    values = sorted(values)
    if not values:
        return "n=0"
    at = lambda q: values[min(len(values) - 1, int(q * len(values)))]  # noqa: E731
    return f"p50={at(0.5):.0f} p90={at(0.9):.0f} p99={at(0.99):.0f} max={values[-1]:.0f}"


async def measure_latency(prefix: str, rate: int, seconds: float, lateness_s: float) -> HdrHistogram:
    """Time to detect, and its parts (wall-clock ms, event time = wall time here): *wait* —
    from the crossing event to the moment its step may be decided (the end of its evaluation
    step + the lateness: no worker can decide earlier); *worker* — from then to the worker
    sending the record (the record's Kafka timestamp); *visible* — from that send to the
    record reaching a read_committed consumer (the transaction's commit, the fetch)."""
    from firebreak.dsl.compiler import pick_step

    histogram = HdrHistogram(1, 600_000, 3)
    sent: dict[str, float] = {}
    sent_ts: dict[str, int] = {}
    parts: dict[str, list[float]] = {"wait": [], "worker": [], "visible": []}
    step = pick_step(5_000)  # LATENCY_RULE's window
    producer = AIOKafkaProducer(bootstrap_servers=BOOTSTRAP, linger_ms=2)
    consumer = AIOKafkaConsumer(
        f"{prefix}.incidents",
        bootstrap_servers=BOOTSTRAP,
        isolation_level="read_committed",
        auto_offset_reset="latest",
        enable_auto_commit=False,
    )
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
                event = {
                    "event_id": f"e{n}",
                    "ts": now_ms,
                    "tenant": f"t{n % 500}",
                    "user": f"u{n % 5000}",
                    "model": "m",
                    "flags": {"pii": False},
                }
                await producer.send(f"{prefix}.events", orjson.dumps(event), partition=n % PARTITIONS)
                n += 1
            # Event time moves only with events: the last crossing must be followed by at least
            # the allowed lateness of traffic, or nothing can ever decide about it.
            if time.monotonic() >= next_leak and time.monotonic() - begin < seconds - lateness_s - 3:
                tenant = f"leak-{leaks}"
                leaks += 1
                next_leak += 2
                event = {
                    "event_id": f"leak{leaks}",
                    "ts": int(time.time() * 1000),
                    "tenant": tenant,
                    "model": "m",
                    "user": "x",
                    "flags": {"pii": True},
                }
                sent[tenant] = time.perf_counter()
                sent_ts[tenant] = event["ts"]
                await producer.send(f"{prefix}.events", orjson.dumps(event), partition=leaks % PARTITIONS)
            await asyncio.sleep(max(0.0, begin + (n / rate) - time.monotonic()))
        print(f"  published {n:,} events in {time.monotonic() - begin:.1f}s ({n / (time.monotonic() - begin):,.0f}/s)")
        stop.set()

    async def collect() -> None:
        while True:
            batch = await consumer.getmany(timeout_ms=200)
            now, now_wall = time.perf_counter(), time.time() * 1000
            for messages in batch.values():
                for message in messages:
                    record = orjson.loads(message.value)
                    tenant = record.get("group", {}).get("tenant", "")
                    if record["type"] == "incident.opened" and tenant in sent:
                        histogram.record_value(max(1, int((now - sent[tenant]) * 1000)))
                        ts = sent_ts[tenant]
                        decidable = (ts // step + 1) * step + lateness_s * 1000
                        parts["wait"].append(decidable - ts)
                        parts["worker"].append(message.timestamp - decidable)
                        parts["visible"].append(now_wall - message.timestamp)
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
    for name, values in parts.items():
        print(f"  {name:8} (ms): {_quantiles(values)}")
    if os.environ.get("LATENCY_SERIES"):
        print("  worker part, in order:", [int(v) for v in parts["worker"]])
    return histogram


def _assigned(ports: list[int], topic: str) -> list[set[str]]:
    """Per worker, the input partitions it reports a lag for (assigned to it)."""
    return [
        {k for k in metrics(port) if k.startswith("firebreak_consumer_lag") and f'"{topic}"' in k} for port in ports
    ]


def latency(args: argparse.Namespace) -> None:
    workdir = Path(tempfile.mkdtemp(prefix="fb-bench-"))
    rules = workdir / "bench.rules"
    rules.write_text(LATENCY_RULE)
    for lateness in args.lateness:
        prefix = f"lat-{uuid.uuid4().hex[:8]}"
        asyncio.run(create(f"{prefix}.events"))
        base = 6900 + os.getpid() % 90
        ports = [base + i * 97 for i in range(args.workers)]
        processes = [
            start_worker(str(rules), prefix, lateness, port, workdir / f"latency-{lateness}-{i}.log")
            for i, port in enumerate(ports)
        ]
        try:
            # every worker in the group holds input partitions, together all of them: no rebalance mid-run
            while True:
                if any(p.poll() is not None for p in processes):
                    raise SystemExit(f"worker exited; see {workdir}")
                held = _assigned(ports, f"{prefix}.events")
                if all(held) and len(set().union(*held)) == PARTITIONS:
                    break
                time.sleep(0.3)
            time.sleep(2)
            print(f"lateness {lateness}, {args.rate:,} events/s for {args.seconds:.0f}s, {args.workers} worker(s):")
            lateness_s = int(lateness[:-1]) * {"s": 1, "m": 60}[lateness[-1]]
            cpu0, wall0 = sum(cpu_s(p.pid) for p in processes), time.monotonic()
            h = asyncio.run(measure_latency(prefix, args.rate, args.seconds, lateness_s))
            cpu, wall = sum(cpu_s(p.pid) for p in processes) - cpu0, time.monotonic() - wall0
            print(f"  worker CPU {cpu:.1f} s in {wall:.0f} s ({cpu / wall:.2f} of a core at {args.rate:,} events/s)")
            q = {p: h.get_value_at_percentile(p) for p in (50, 90, 99, 100)}
            print(f"  time to detect (ms): n={h.get_total_count()} p50={q[50]} p90={q[90]} p99={q[99]} max={q[100]}")
        finally:
            for process in processes:
                process.terminate()
            for process in processes:
                process.wait(20)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="what", required=True)
    t = sub.add_parser("throughput")
    t.add_argument("--events", type=int, default=200_000)
    t.add_argument("--workers", type=int, nargs="+", default=[1], help="e.g. 1 2: one run with each")
    t.add_argument("--profile", action="store_true", help="py-spy (raw stacks) of worker 0 while it works")
    t.add_argument("--wide", action="store_true", help="larger events (prompt/output) from many users (`widen`)")
    t.add_argument(
        "--threads", action="store_true", help="worker 0's CPU per thread (/proc; names by py-spy dump when installed)"
    )
    t.set_defaults(run=throughput)
    mem = sub.add_parser("memory")
    mem.add_argument("--users", type=int, default=100_000)
    mem.add_argument("--events", type=int, default=300_000)
    mem.set_defaults(run=memory)
    st = sub.add_parser("stages")
    st.add_argument("--events", type=int, default=200_000)
    st.add_argument("--engine", nargs="+", default=["native", "python"])
    st.add_argument("--shards", type=int, default=4)
    st.add_argument("--batch", type=int, default=1_000)
    st.add_argument("--traffic-check", action=argparse.BooleanOptionalAction, default=False)
    st.add_argument("--wide", action="store_true", help="larger events (prompt/output) from many users (`widen`)")
    st.set_defaults(run=stages)
    lat = sub.add_parser("latency")
    lat.add_argument("--lateness", nargs="+", default=["2s", "30s"])
    lat.add_argument("--rate", type=int, default=5_000)
    lat.add_argument("--seconds", type=float, default=60)
    lat.add_argument("--workers", type=int, default=1, help="workers in one group (input and shards spread)")
    lat.set_defaults(run=latency)
    parser.add_argument(
        "--worker-arg",
        action="append",
        default=[],
        metavar="ARG",
        help="an argument for every worker started (repeat: --worker-arg=--engine --worker-arg=python)",
    )
    args = parser.parse_args()
    WORKER_ARGS.extend(args.worker_arg)
    args.run(args)


if __name__ == "__main__":
    main()
