"""Replay throughput: how close does a full replay come to just parsing the JSON?

    python benchmarks/generate.py --events 1000000 --out benchmarks/data/events.jsonl
    python benchmarks/replay_bench.py benchmarks/data/events.jsonl --repeat 3 --profile

On the same file, in the same process:

  (a) parse only      read lines + orjson.loads
      parse+validate  (a) + validate_event: the contract check
  (b) full replay     what `firebreak replay` does (firebreak.adapters.file_replay.replay_files):
                      read + parse + validate + engine, records counted instead of written;
                      --engine native (default), python, or both (one row each)

Each is run --repeat times; the table shows the best and the median, and the ratio (b)/(a).
--profile then runs the replay once more under cProfile and prints the top functions by
own time (tottime). --per-rule N times each rule alone on the file's first N lines: for the
native engine the whole path from raw lines (decode included) against orjson.loads of the
same lines; for the Python core the core only (events parsed and validated beforehand).
--memory reports the native state per (rule, group) during a replay and the peak RSS;
--groups N measures a state of N groups (one `by user` rule, N users in one window).
"""

from __future__ import annotations

import argparse
import cProfile
import io
import itertools
import os
import platform
import pstats
import resource
import statistics
import sys
import time
from collections.abc import Callable

import orjson
from firebreak.adapters.drive import Driver
from firebreak.adapters.file_replay import replay_files
from firebreak.adapters.rule_files import read_rule_sources
from firebreak.adapters.starter_pack import starter_rule_sources
from firebreak.core import Engine, validate_event
from firebreak.dsl import CompiledRule, load_rules


def peak_rss_bytes() -> int:
    """This process's own peak RSS (``VmHWM``); ``ru_maxrss`` keeps the forking parent's across ``execve``."""
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for row in status:
                if row.startswith("VmHWM:"):
                    return int(row.split()[1]) * 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


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


def full_replay(path: str, rules: tuple[CompiledRule, ...], engine: str = "native") -> int:
    records = 0

    def emit(_: dict) -> None:
        nonlocal records
        records += 1

    result = replay_files([path], rules, emit, engine=engine)
    assert result.bad == 0, result.bad_samples
    return result.events


CPU: dict[str, float] = {}  # best CPU seconds (the process, all its threads) per measure


def measure(run: Callable[[], int], repeat: int, label: str = "") -> tuple[int, list[float]]:
    times, events = [], 0
    for _ in range(repeat):
        began, cpu = time.perf_counter(), time.process_time()
        events = run()
        times.append(time.perf_counter() - began)
        CPU[label] = min(CPU.get(label, float("inf")), time.process_time() - cpu)
    return events, times


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("file", help="JSON-lines events (benchmarks/generate.py)")
    parser.add_argument("--rules", action="append", metavar="PATH", help="rules instead of the starter pack")
    parser.add_argument("--repeat", type=int, default=3, help="runs of each measure (default 3)")
    parser.add_argument("--profile", action="store_true", help="then profile one replay (cProfile, top by tottime)")
    parser.add_argument("--top", type=int, default=25, help="functions in the profile (default 25)")
    parser.add_argument("--per-rule", type=int, default=0, metavar="N", help="time each rule alone on N events")
    parser.add_argument(
        "--engine",
        choices=("native", "python", "both"),
        default="native",
        help="engine of the full replay and --per-rule (default native)",
    )
    parser.add_argument("--memory", action="store_true", help="native state per (rule, group), peak RSS")
    parser.add_argument("--groups", type=int, default=0, metavar="N", help="memory of N groups of one rule")
    parser.add_argument(
        "--threads",
        type=int,
        choices=(1, 2),
        default=None,
        help="native engine threads (FIREBREAK_NATIVE_THREADS; default: 2 on 2+ cores)",
    )
    args = parser.parse_args(argv)
    if args.threads is not None:
        os.environ["FIREBREAK_NATIVE_THREADS"] = str(args.threads)
    from firebreak.native import threads

    args.threads = threads()

    sources = read_rule_sources(args.rules) if args.rules else starter_rule_sources()
    rules, problems = load_rules(sources)
    if not rules:
        print("no rules:", *problems, sep="\n", file=sys.stderr)
        return 1
    size = os.path.getsize(args.file)
    print(f"file: {args.file} ({size / 1e6:.0f} MB)   rules: {len(rules)} from {len(sources)} files")
    print(
        f"python {platform.python_version()} on {platform.machine()}, {os.cpu_count()} cores, "
        f"orjson {orjson.__version__}; native engine on {args.threads} thread(s), "
        "orjson parse-only on one\n"
    )

    parse_only(args.file)  # warm-up: the file into the page cache, so no measure pays for the disk
    rows = []
    engines = ("native", "python") if args.engine == "both" else (args.engine,)
    measures = [
        ("(a) read + orjson.loads", lambda: parse_only(args.file)),
        ("    ... + validate_event", lambda: parse_validate(args.file)),
    ]
    measures += [
        (f"(b) full replay, {kind}", lambda kind=kind: full_replay(args.file, rules, kind)) for kind in engines
    ]
    for label, run in measures:
        print(f"  running {label.strip()} ×{args.repeat} ...", file=sys.stderr, flush=True)
        events, times = measure(run, args.repeat, label)
        rows.append((label, events, min(times), statistics.median(times)))

    print("| measure | events | best s | median s | best events/s | median events/s |")
    print("|---|---:|---:|---:|---:|---:|")
    for label, events, best, median in rows:
        print(
            f"| {label.strip()} | {events:,} | {best:.2f} | {median:.2f} | {events / best:,.0f} | "
            f"{events / median:,.0f} |"
        )
    label_a, n_a, best_a, med_a = rows[0]
    for label, n_b, best_b, med_b in rows[2:]:
        print(
            f"\nratio {label.strip()} / (a): {n_b / best_b / (n_a / best_a):.3f} (best)  "
            f"{n_b / med_b / (n_a / med_a):.3f} (median); CPU s of the process (all threads), best: "
            f"(a) {CPU[label_a]:.2f}, (b) {CPU[label]:.2f}, ratio {CPU[label_a] / CPU[label]:.3f}"
        )

    if args.profile:
        print("\n  profiling one full replay ...", file=sys.stderr, flush=True)
        profiler = cProfile.Profile()
        profiler.enable()
        full_replay(args.file, rules, engines[0])
        profiler.disable()
        out = io.StringIO()
        pstats.Stats(profiler, stream=out).sort_stats("tottime").print_stats(args.top)
        print("\n" + out.getvalue().replace(os.getcwd() + "/", ""))
    if args.per_rule:
        for kind in engines:
            (per_rule_native if kind == "native" else per_rule)(args.file, rules, args.per_rule)
    if args.memory:
        memory(args.file, rules)
    if args.groups:
        many_groups(args.groups)
    return 0


def per_rule_native(path: str, rules: tuple[CompiledRule, ...], limit: int) -> None:
    """Each rule alone through the native engine, raw lines in (decode included), against
    orjson.loads of the same lines."""
    print(f"  timing each rule alone (native) on {limit:,} lines ...", file=sys.stderr, flush=True)
    with open(path, "rb") as f:
        lines = list(itertools.islice(f, limit))
    loads = orjson.loads

    def parse_lines() -> None:
        for line in lines:
            loads(line)  # not kept: as in (a)

    parse = min(_timed(parse_lines) for _ in range(3))
    rows = []
    for rule in rules:

        def run(rule=rule) -> None:
            driver = Driver((rule,), engine="native")
            for i in range(0, len(lines), 4096):
                driver.feed_lines(lines[i : i + 4096])
            driver.finish()

        rows.append((min(_timed(run) for _ in range(2)), rule))
    print(
        f"\neach rule alone, native, on {len(lines):,} lines (raw lines in; orjson.loads of the same lines: "
        f"{parse:.2f} s, {len(lines) / parse:,.0f} lines/s; best of 2)\n"
    )
    print("| rule | by | window / step | s | events/s | ratio to parse-only |")
    print("|---|---|---|---:|---:|---:|")
    for seconds, rule in sorted(rows, key=lambda row: -row[0]):
        by = ", ".join(".".join(p) for p in rule.by) or "-"
        print(
            f"| {rule.name} | {by} | {rule.window_ms // 60_000}m / {rule.step_ms // 1000}s | {seconds:.2f} | "
            f"{len(lines) / seconds:,.0f} | {parse / seconds:.2f} |"
        )


def _timed(run: Callable[[], object]) -> float:
    began = time.perf_counter()
    run()
    return time.perf_counter() - began


def memory(path: str, rules: tuple[CompiledRule, ...]) -> None:
    """The native state during a full replay: the largest (groups, bytes) seen, per group."""
    print("  replaying for memory ...", file=sys.stderr, flush=True)
    driver = Driver(rules, engine="native")
    peak = driver.core.memory()  # (empty)
    batch: list[bytes] = []
    with open(path, "rb") as f:
        for n, line in enumerate(f, start=1):
            batch.append(line)
            if len(batch) == 4096:
                driver.feed_lines(batch)
                batch.clear()
                if n % (4096 * 25) == 0:
                    peak = max(peak, driver.core.memory(), key=lambda m: m.bytes)
    driver.feed_lines(batch)
    parts = driver.core.memory_parts()  # at the end of the events, before finishing
    driver.finish()
    groups, buckets, size = peak.groups, peak.buckets, peak.bytes
    rss = peak_rss_bytes()
    print(
        f"\nnative state at its largest: {groups:,} (rule, group) pairs, {buckets:,} buckets, {size / 1e6:.1f} MB "
        f"= {size / max(groups, 1):,.0f} bytes per (rule, group); peak RSS of this process {rss / 1e6:.0f} MB"
    )
    print(f"\nthe state after the last event, by part (Core.memory_parts), per event of the {n:,}:")
    print("| part | total | per event |\n|---|---:|---:|")
    for name, value in sorted(parts.items(), key=lambda kv: -kv[1]):
        print(f"| {name} | {value:,} | {value / max(n, 1):,.2f} |")


def many_groups(count: int) -> None:
    """N groups of one `by user` rule: N users with one event each inside one window."""
    from firebreak.dsl import load_rules as load

    (rule,), _ = load({"groups.rules": "count() > 600 over 5m by user -> sev3"})
    before = peak_rss_bytes()
    driver = Driver((rule,), lateness_ms=600_000, engine="native")
    start = 1_767_225_600_000
    for i in range(0, count, 4096):
        line = b'{"event_id":"g%d","ts":%d,"user":"user-%09d","tenant":"t"}'
        driver.feed_lines([line % (j, start + j * 100 // count, j) for j in range(i, min(count, i + 4096))])
    memory = driver.core.memory()
    groups, size = memory.groups, memory.bytes
    rss = peak_rss_bytes()
    print(
        f"\n{groups:,} groups of one rule: {size / 1e6:.0f} MB estimated ({size / groups:,.0f} bytes per group); "
        f"peak RSS grew {(rss - before) / 1e6:.0f} MB ({(rss - before) / groups:,.0f} bytes per group)"
    )


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
        print(
            f"| {rule.name} | {by} | {rule.window_ms // 60_000}m / {rule.step_ms // 1000}s | {seconds:.2f} | "
            f"{seconds / total:.0%} | {len(events) / seconds:,.0f} |"
        )


if __name__ == "__main__":
    sys.exit(main())
