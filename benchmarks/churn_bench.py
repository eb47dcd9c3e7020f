"""State over a week of event time with steady user churn: does memory level off?

    python benchmarks/churn_bench.py --engine native          # 7 days, 5,000 new users an hour
    python benchmarks/churn_bench.py --engine python
    python benchmarks/churn_bench.py --engine native --days 2 --users-per-hour 1000

Events carry the fields of firebreak.synthetic's traffic (tenants, models, flags: what the
starter pack reads; its first 20,000 events, repeated), evenly spaced, two events per user,
and every user new: the n-th event belongs to user ``churn-{n // 2}``, so
``--users-per-hour`` new users arrive each hour and none comes back (1.68M events over 7
days at the default 5,000 an hour). Each simulated day prints the
process's RSS (VmRSS, and its peak VmHWM), the (rule, group) pairs alive, the group keys the
engine holds (native: its key tables) and the size of a full snapshot (`snapshot_json`) —
a plateau, not a line, is what bounded state looks like. One process per engine: run each
alone. Same arguments, same events.
"""

from __future__ import annotations

import argparse
import itertools
import sys
import time
from pathlib import Path

import orjson
from firebreak.adapters.drive import Driver
from firebreak.adapters.rule_files import read_rule_sources
from firebreak.adapters.starter_pack import starter_rule_sources
from firebreak.core import parse_ts
from firebreak.dsl import load_rules
from firebreak.synthetic import Traffic

HOUR = 3_600_000
DAY = 24 * HOUR
TEMPLATES = 20_000  # events of synthetic traffic whose fields are repeated


def proc_status(field: str) -> int:
    """A VmRSS/VmHWM line of /proc/self/status, in bytes."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    return 0


def churned_lines(seed: int, start: int, days: int, users_per_hour: int):
    """The week's events as JSON lines, in batches of 4,096, every user new: the fields of
    ``TEMPLATES`` events of synthetic traffic, over and over, evenly spaced in time."""
    templates = list(itertools.islice(Traffic(seed, start, DAY, 2 * users_per_hour / 3600, []).events(), TEMPLATES))
    total = days * 24 * 2 * users_per_hour
    gap = DAY * days / total
    for first in range(0, total, 4096):
        batch, lines = [], []
        for n in range(first, min(total, first + 4096)):
            event = dict(templates[n % len(templates)])
            event["event_id"] = f"churn-e{n}"
            event["ts"] = start + int(n * gap)
            if "user" in event:
                event["user"] = f"churn-{n // 2:08d}"
            batch.append(event)
            lines.append(orjson.dumps(event))
        yield batch, lines


def state(driver: Driver) -> tuple[int, int]:
    """(live (rule, group) pairs, group keys held)."""
    core = driver.core
    if driver.kind == "native":
        groups = core.memory().groups
        counts = getattr(core.core, "key_counts", None)  # (an engine before they were counted: -1)
        keys = sum(counts()) if counts is not None else -1
        return groups, keys
    groups = sum(len(s.groups) for s in core.states)
    return groups, groups  # the core keeps a key only in its group's dict entry


def snapshot_bytes(driver: Driver) -> int:
    core = driver.core
    return len(core.snapshot_json()) if driver.kind == "native" else len(orjson.dumps(core.snapshot()))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--engine", choices=("native", "python"), default="native")
    parser.add_argument("--days", type=int, default=7)
    parser.add_argument("--users-per-hour", type=int, default=5000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--rules", nargs="*", help="rule files or folders (default: the starter pack)")
    parser.add_argument("--start", default="2026-01-05T00:00:00Z")
    args = parser.parse_args(argv)

    rules, _ = load_rules(read_rule_sources(args.rules) if args.rules else starter_rule_sources())
    start = parse_ts(args.start)
    driver = Driver(rules, engine=args.engine)
    print(f"engine {args.engine}, {len(rules)} rules, {args.days} days, {args.users_per_hour:,} new users an hour")
    print("| day | events | (rule, group) pairs | keys held | snapshot MB | RSS MB | peak RSS MB | s |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|")
    began = time.perf_counter()
    events = records = 0
    day = 1
    for batch, lines in churned_lines(args.seed, start, args.days, args.users_per_hour):
        while batch[0]["ts"] >= start + day * DAY:
            report(driver, day, events, began)
            day += 1
        fed = driver.feed_lines(lines)
        events += fed.events
        records += len(fed.records)
    report(driver, day, events, began)
    records += len(driver.finish())
    print(f"{events:,} events, {records:,} records", file=sys.stderr)
    return 0


def report(driver: Driver, day: int, events: int, began: float) -> None:
    groups, keys = state(driver)
    size = snapshot_bytes(driver)
    print(
        f"| {day} | {events:,} | {groups:,} | {keys:,} | {size / 1e6:.1f} | {proc_status('VmRSS') / 1e6:.0f} "
        f"| {proc_status('VmHWM') / 1e6:.0f} | {time.perf_counter() - began:.0f} |",
        flush=True,
    )


if __name__ == "__main__":
    sys.exit(main())
