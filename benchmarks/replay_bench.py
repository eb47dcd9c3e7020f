"""Replay throughput: how close does a full replay come to just parsing the JSON?

    python benchmarks/generate.py --events 1000000 --out benchmarks/data/events.jsonl
    python benchmarks/replay_bench.py benchmarks/data/events.jsonl --repeat 3 --profile

On the same file, in the same process:

  (a) parse only      read lines + orjson.loads
      parse+validate  (a) + validate_event: the contract check
  (b) full replay     what `firebreak replay` does (engine.adapters.file_replay.replay_files):
                      read + parse + validate + engine, records counted instead of written

Each is run --repeat times; the table shows the best and the median, and the ratio (b)/(a).
--profile then runs the replay once more under cProfile and prints the top functions by
own time (tottime). --per-rule N times each rule alone on the file's first N events
(parsed and validated beforehand: the core only), slowest first.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import itertools
import os
import platform
import pstats
import statistics
import sys
import time
from collections.abc import Callable

import orjson

from engine.adapters.file_replay import replay_files
from engine.adapters.rule_files import read_rule_sources
from engine.adapters.starter_pack import starter_rule_sources
from engine.core import Engine, validate_event
from engine.dsl import CompiledRule, load_rules


def parse_only(path: str) -> int:
    n = 0
    loads = orjson.loads
    with open(path, "rb") as f:
        for line in f:
            loads(line)
            n += 1
    return n


def parse_validate(path: str) -> int:
    n = 0
    loads = orjson.loads
    with open(path, "rb") as f:
        for line in f:
            validate_event(loads(line))
            n += 1
    return n


def full_replay(path: str, rules: tuple[CompiledRule, ...]) -> int:
    records = 0

    def emit(_: dict) -> None:
        nonlocal records
        records += 1

    result = replay_files([path], rules, emit)
    assert result.bad == 0, result.bad_samples
    return result.events


def measure(run: Callable[[], int], repeat: int) -> tuple[int, list[float]]:
    times, events = [], 0
    for _ in range(repeat):
        began = time.perf_counter()
        events = run()
        times.append(time.perf_counter() - began)
    return events, times


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("file", help="JSON-lines events (benchmarks/generate.py)")
    parser.add_argument("--rules", action="append", metavar="PATH", help="rules instead of the starter pack")
    parser.add_argument("--repeat", type=int, default=3, help="runs of each measure (default 3)")
    parser.add_argument("--profile", action="store_true", help="then profile one replay (cProfile, top by tottime)")
    parser.add_argument("--top", type=int, default=25, help="functions in the profile (default 25)")
    parser.add_argument("--per-rule", type=int, default=0, metavar="N", help="time each rule alone on N events")
    args = parser.parse_args(argv)

    sources = read_rule_sources(args.rules) if args.rules else starter_rule_sources()
    rules, problems = load_rules(sources)
    if not rules:
        print("no rules:", *problems, sep="\n", file=sys.stderr)
        return 1
    size = os.path.getsize(args.file)
    print(f"file: {args.file} ({size / 1e6:.0f} MB)   rules: {len(rules)} from {len(sources)} files")
    print(f"python {platform.python_version()} on {platform.machine()}, {os.cpu_count()} cores, "
          f"orjson {orjson.__version__}\n")  # fmt: skip

    parse_only(args.file)  # warm-up: the file into the page cache, so no measure pays for the disk
    rows = []
    for label, run in (
        ("(a) read + orjson.loads", lambda: parse_only(args.file)),
        ("    ... + validate_event", lambda: parse_validate(args.file)),
        ("(b) full replay", lambda: full_replay(args.file, rules)),
    ):
        print(f"  running {label.strip()} ×{args.repeat} ...", file=sys.stderr, flush=True)
        events, times = measure(run, args.repeat)
        rows.append((label, events, min(times), statistics.median(times)))

    print("| measure | events | best s | median s | best events/s | median events/s |")
    print("|---|---:|---:|---:|---:|---:|")
    for label, events, best, median in rows:
        print(f"| {label.strip()} | {events:,} | {best:.2f} | {median:.2f} | {events / best:,.0f} | "
              f"{events / median:,.0f} |")  # fmt: skip
    (_, n_a, best_a, med_a), (_, n_b, best_b, med_b) = rows[0], rows[2]
    print(f"\nratio (b)/(a): {n_b / best_b / (n_a / best_a):.3f} (best)  {n_b / med_b / (n_a / med_a):.3f} (median)")

    if args.profile:
        print("\n  profiling one full replay ...", file=sys.stderr, flush=True)
        profiler = cProfile.Profile()
        profiler.enable()
        full_replay(args.file, rules)
        profiler.disable()
        out = io.StringIO()
        pstats.Stats(profiler, stream=out).sort_stats("tottime").print_stats(args.top)
        print("\n" + out.getvalue().replace(os.getcwd() + "/", ""))
    if args.per_rule:
        per_rule(args.file, rules, args.per_rule)
    return 0


def per_rule(path: str, rules: tuple[CompiledRule, ...], limit: int) -> None:
    print(f"  timing each rule alone on {limit:,} events ...", file=sys.stderr, flush=True)
    with open(path, "rb") as f:
        events = [validate_event(orjson.loads(line)) for line in itertools.islice(f, limit)]
    rows = []
    for rule in rules:
        engine = Engine((rule,))
        began = time.perf_counter()
        for event in events:
            engine.process(event)
        engine.finish()
        rows.append((time.perf_counter() - began, rule))
    total = sum(t for t, _ in rows)
    print(f"\neach rule alone on {len(events):,} events (core only; sum {total:.1f} s)\n")
    print("| rule | by | window / step | s | share | events/s |")
    print("|---|---|---|---:|---:|---:|")
    for seconds, rule in sorted(rows, key=lambda row: -row[0]):
        by = ", ".join(".".join(p) for p in rule.by) or "-"
        print(f"| {rule.name} | {by} | {rule.window_ms // 60_000}m / {rule.step_ms // 1000}s | {seconds:.2f} | "
              f"{seconds / total:.0%} | {len(events) / seconds:,.0f} |")  # fmt: skip


if __name__ == "__main__":
    sys.exit(main())
