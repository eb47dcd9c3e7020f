"""Write a synthetic event log (JSON lines) for benchmarks and replays.

    python benchmarks/generate.py --events 1000000 --out benchmarks/data/events.jsonl

Traffic comes from firebreak.synthetic: realistic tenants / models / users, ~1% of
events out of order, decoy changes, and (unless --no-incidents) one injected
incident of each category in the second half of the log (relative rules need
an hour of history first). The ground truth goes to
OUT + ".truth.json". Same arguments, same bytes.
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import sys
import time
from pathlib import Path

import orjson
from firebreak.core import parse_ts
from firebreak.synthetic import CATEGORIES, SECOND, Injection, Traffic

DEFAULT_START = "2026-01-05T08:00:00Z"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--events", type=int, default=1_000_000, help="how many events (default 1,000,000)")
    parser.add_argument("--out", required=True, help="output file (JSON lines)")
    parser.add_argument("--rate", type=float, default=100.0, help="mean inference events per second (default 100)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--start", default=DEFAULT_START, help=f"first event time, RFC 3339 (default {DEFAULT_START})")
    parser.add_argument("--no-incidents", action="store_true", help="normal traffic only (decoy changes included)")
    args = parser.parse_args(argv)

    start = parse_ts(args.start)
    span = int(args.events / args.rate * SECOND)  # the nominal duration; the daily cycle moves it a little
    injections = (
        []
        if args.no_incidents
        else [
            Injection(category, onset_ms=int(span * (0.45 + 0.1 * i)), duration_ms=max(span // 10, 20 * 60_000))
            for i, category in enumerate(CATEGORIES)
        ]
    )
    traffic = Traffic(args.seed, start, span * 2, args.rate, injections)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    began = time.perf_counter()
    tty = sys.stderr.isatty()
    written = 0
    with out.open("wb") as f:
        events = itertools.islice(traffic.events(), args.events)
        while batch := list(itertools.islice(events, 10_000)):
            f.write(b"\n".join(orjson.dumps(e) for e in batch) + b"\n")
            written += len(batch)
            if tty and written % 100_000 == 0:
                print(f"\r  {written:,} events", end="", file=sys.stderr, flush=True)
    truths = [dataclasses.asdict(t) for t in traffic.truths]
    Path(str(out) + ".truth.json").write_bytes(orjson.dumps(truths, option=orjson.OPT_INDENT_2))
    elapsed = time.perf_counter() - began
    print(f"\r{written:,} events → {out} ({out.stat().st_size / 1e6:.0f} MB) in {elapsed:.1f}s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
