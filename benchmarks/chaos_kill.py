"""Chaos run: SIGKILL workers at random points of a stream; the committed records must equal a replay.

    python benchmarks/chaos_kill.py --kills 10 [--workers 2] [--seed 7] [--bootstrap H:P; default $KAFKA_BOOTSTRAP]

Two workers (one group) read a 4-partition topic while the scenario of
tests/integration/test_worker_live.py is published in chunks. At random points a random
worker is killed with SIGKILL and started again at once. At the end a clock event on every
partition moves time past the scenario, and the incidents and containment topics are read
back in the read_committed view. The run passes when those records, as a multiset, equal
what a replay of the same events gives (before the clock's cutoff), with no record twice.
It prints one summary line and exits 0 on a pass, 1 on a fail. Needs a running broker
(scripts/kafka-local start).
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import tempfile
import time
import uuid
from collections import Counter
from pathlib import Path

import orjson

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "integration"))

from firebreak.core import parse_ts  # noqa: E402
from test_worker_live import RULES, before, clocks, replay, scenario  # noqa: E402
from worker_harness import Topics, Worker, publish, publish_raw, read_all, run, wait_for  # noqa: E402


async def create(bootstrap: str, topic: str, partitions: int) -> None:
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic

    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(topic, partitions, 1)])
    finally:
        await admin.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--kills", type=int, default=10)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--minutes", type=int, default=120, help="event-time length of the scenario")
    parser.add_argument("--bootstrap", default=os.environ.get("KAFKA_BOOTSTRAP", "127.0.0.1:9092"))
    args = parser.parse_args()
    rng = random.Random(args.seed)
    topics = Topics(f"chaos-{uuid.uuid4().hex[:8]}")
    run(create(args.bootstrap, topics.events, 4))
    work = Path(tempfile.mkdtemp(prefix="firebreak-chaos-"))
    rules = work / "live.rules"
    rules.write_text(RULES)
    events = scenario(minutes=args.minutes, seed=args.seed)
    clock = clocks(events)
    expected = replay(events, [e for _, e in clock])
    cutoff = max(parse_ts(e["ts"]) for e in events) + 2 * 3_600_000

    started = time.monotonic()
    workers = [
        Worker(topics, args.bootstrap, rules, work, extra=["--idle-timeout", "120s"]).start()
        for _ in range(args.workers)
    ]
    for worker in workers:
        worker.wait_ready(120)
    kill_at = sorted(rng.sample(range(1, 4 * args.kills), args.kills))  # kills among 4×kills chunks
    chunks = 4 * args.kills
    size = len(events) // chunks + 1
    kills = 0
    try:
        for chunk in range(chunks):
            run(publish(args.bootstrap, topics.events, events[chunk * size : (chunk + 1) * size]))
            time.sleep(rng.uniform(0.2, 1.5))
            while kills < len(kill_at) and kill_at[kills] == chunk:
                victim = rng.randrange(len(workers))
                workers[victim].kill()
                workers[victim] = Worker(topics, args.bootstrap, rules, work, extra=["--idle-timeout", "120s"]).start()
                kills += 1
        run(publish_raw(args.bootstrap, topics.events, [(p, orjson.dumps(e)) for p, e in clock]))
        want = {(r["type"], r.get("incident_id"), r["ts"]) for r in expected}

        def arrived() -> bool:
            got = run(read_all(args.bootstrap, topics.incidents, settle_s=0.5))
            got += run(read_all(args.bootstrap, topics.containment, settle_s=0.5))
            return want <= {(r["type"], r.get("incident_id"), r["ts"]) for r in got}

        wait_for(arrived, 600, "the replay's records", workers)
        time.sleep(3)
    finally:
        for worker in workers:
            worker.stop()
    got = run(read_all(args.bootstrap, topics.incidents)) + run(read_all(args.bootstrap, topics.containment))
    counts = Counter(orjson.dumps(r) for r in got)
    twice = sum(1 for n in counts.values() if n > 1)
    equal = before(got, cutoff) == before(expected, cutoff)
    took = time.monotonic() - started
    verdict = "PASS" if equal and not twice else "FAIL"
    print(
        f"chaos: {verdict}: {kills} SIGKILLs over {len(events):,} events on 4 partitions, {args.workers} workers; "
        f"{len(got)} records committed, {len(expected)} expected, {twice} twice, equal to the replay: {equal}; "
        f"{took:.0f} s (logs in {work})"
    )
    return 0 if verdict == "PASS" else 1


if __name__ == "__main__":
    sys.exit(main())
