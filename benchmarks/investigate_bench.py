"""Investigation cost: how far is `firebreak investigate` from just parsing the JSON?

    firebreak demo --out /tmp/demo --quiet > /dev/null
    python benchmarks/investigate_bench.py /tmp/demo/events.jsonl --rule spend_spike_by_service

On the same file, in the same process (best of --repeat):

  (a) parse only     read lines + orjson.loads                      — the reference
  (b) load           what the command does first: read + decode + validate into events
  (c) replay         the rules over the events (firebreak.core.run_events): the records —
                     all of them for `--incident`, only the incident's rule for `--rule`
  (d) investigate    one incident from (b) and (c): change point, series, contributors,
                     causes, adversarial signs, review — with and without the suggestion
                     (which replays a variant of the rule once or a few times)

Each phase is shown as events/s and as a ratio to (a); the command's total is (b)+(c)+(d).
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import orjson
from firebreak.adapters.investigation import events_from_files
from firebreak.adapters.rule_files import read_rule_sources
from firebreak.adapters.starter_pack import starter_rule_sources
from firebreak.core import run_events
from firebreak.dsl import load_rules
from firebreak.investigate import Options, Selection, investigate


def parse_only(path: str) -> int:
    n = 0
    with open(path, "rb") as f:
        for line in f:
            orjson.loads(line)
            n += 1
    return n


def best(fn: Callable[[], object], repeat: int) -> tuple[float, object]:
    times, result = [], None
    for _ in range(repeat):
        t = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - t)
    return min(times), result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("events")
    parser.add_argument("--rules", action="append", help="rule files or dirs (default: the starter pack)")
    parser.add_argument("--rule", help="investigate the first incident of this rule (default: the first incident)")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--each", action="store_true", help="time the investigation of every incident instead")
    args = parser.parse_args()
    sources = read_rule_sources(args.rules) if args.rules else starter_rule_sources()
    rules, problems = load_rules(sources)
    assert rules and not problems, problems

    if args.each:
        return each(rules, args.events, args.repeat)
    t_parse, n = best(lambda: parse_only(args.events), args.repeat)
    t_load, loaded = best(lambda: events_from_files([args.events]), args.repeat)
    events = loaded.events
    t_replay, records = best(lambda: run_events(rules, events), 1)
    opened = [r for r in records if r["type"] == "incident.opened" and (args.rule is None or r["rule"] == args.rule)]
    assert opened, "no incident to investigate"
    selection = Selection(incident_id=opened[0]["incident_id"])
    alone = tuple(r for r in rules if r.name == opened[0]["rule"])
    t_alone, _ = best(lambda: run_events(alone, events), 1)
    t_inv, report = best(lambda: investigate(rules, events, selection, Options(suggest=False), records), args.repeat)
    t_sugg, report = best(lambda: investigate(rules, events, selection, Options(), records), args.repeat)
    rows = [
        ("(a) parse only", t_parse),
        ("(b) load: decode + validate", t_load),
        (f"(c) replay: {len(rules)} rules (--incident)", t_replay),
        ("(c) replay: the incident's rule (--rule)", t_alone),
        ("(d) investigate, no suggestion", t_inv),
        ("(d) investigate, with suggestion", t_sugg),
        ("total with --incident", t_load + t_replay + t_sugg),
        ("total with --rule", t_load + t_alone + t_sugg),
    ]
    print(
        f"{n:,} lines, {len(events):,} events; incident {report.incident.incident_id} "
        f"({report.incident.rule}); best of {args.repeat} (replay: 1 run)"
    )
    print(f"{'phase':42} {'seconds':>9} {'events/s':>12} {'ratio to (a)':>13}")
    for name, seconds in rows:
        print(f"{name:42} {seconds:9.2f} {len(events) / seconds:12,.0f} {t_parse / seconds:13.4f}")
    suggestion = report.review.monitoring_suggestion if report.review else None
    print(f"suggestion: {suggestion.why if suggestion else 'none'}")


def each(rules: tuple, path: str, repeat: int) -> None:
    """Every incident's investigation (no suggestion), best of ``repeat``, and the share of it
    spent finding the root causes (rootcause.py): CPU seconds of this process (the machine's
    load does not count), and wall seconds."""
    import firebreak.investigate.report as report_module

    events = events_from_files([path]).events
    records = run_events(rules, events)
    spent = [0.0]
    explain = report_module.explain

    def timed(*a: object, **k: object) -> object:
        t = time.process_time()
        try:
            return explain(*a, **k)
        finally:
            spent[0] += time.process_time() - t

    report_module.explain = timed
    print(f"{'incident':24} {'rule':32} {'group':44} {'CPU s':>7} {'root causes':>11} {'wall s':>7}")
    times = []
    for r in records:
        if r["type"] != "incident.opened":
            continue
        runs = []
        for _ in range(repeat):
            spent[0] = 0.0
            t, w = time.process_time(), time.perf_counter()
            investigate(rules, events, Selection(incident_id=r["incident_id"]), Options(suggest=False), records)
            runs.append((time.process_time() - t, spent[0], time.perf_counter() - w))
        secs, roots, wall = min(runs)
        times.append(secs)
        group = ", ".join(f"{k}={v}" for k, v in (r.get("group") or {}).items())
        print(f"{r['incident_id']:24} {r['rule']:32} {group[:44]:44} {secs:7.2f} {roots:11.2f} {wall:7.2f}")
    report_module.explain = explain
    times.sort()
    print(f"{len(times)} incidents: CPU median {times[len(times) // 2]:.2f} s, max {times[-1]:.2f} s")


if __name__ == "__main__":
    main()
