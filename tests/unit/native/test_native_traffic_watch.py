"""The live worker's traffic watch, counted by the native router (native/src/watch.rs), against
the Python `_Tallies` observing every event (the executable specification): the same per-rule
facts and the same warnings over generate.py-like traffic with edge cases mixed in."""

from __future__ import annotations

import dataclasses
import itertools
import random

import orjson
import pytest
from firebreak.adapters.live.routing import RouteStage
from firebreak.adapters.live.settings import WorkerSettings
from firebreak.adapters.starter_pack import starter_companion_sources, starter_rule_sources
from firebreak.adapters.traffic_check import TrafficWatch
from firebreak.core import InvalidEvent, format_ts, parse_ts, validate_event
from firebreak.dsl import load_rules
from firebreak.native import available
from firebreak.synthetic import CATEGORIES, Injection, Traffic

pytestmark = pytest.mark.skipif(not available(), reason="the native extension is not built")

START = 1_767_225_600_000  # 2026-01-01T00:00:00Z
HOUR = 3_600_000
VOCABULARY = 'fields = ["region", "attributes.*"]\nflags = ["rare"]\nlabels = ["odd"]\n'
EDGE_RULES = """\
rule e_avg_nested: avg(attributes.depth.x) > 3 over 10m by attributes.tag -> sev3
rule e_sum_mixed: sum(attributes.size) > 100 over 5m by model, region -> sev3
rule e_sum_mixed_1m: max(attributes.size) > 100 over 1m by model, region min 3 events -> sev3
rule e_where_fails: count() >= 1 over 1m where service == "nope" -> sev2
rule e_where_flag: count() > 1 over 1m by user where flags.error -> sev3
rule e_where_bool: count() > 5 over 1m by attributes.on where attributes.on == true -> sev4
rule e_where_num: count() > 5 over 2m by attributes.on where attributes.on == 1 -> sev4
rule e_distinct: distinct(attributes.tag) > 50 over 10m by model min 20 events -> sev3
rule e_label: reports(odd) > 3 over 10m by model -> sev3
rule e_label_wrong: reports(wrong) > 3 over 10m by region min 4 events -> sev3
rule e_reports: reports() > 100 over 10m -> sev3
rule e_rare: count(rare) > 100 over 10m by attributes.absent -> sev2
rule e_min: rate(hallucination) > 0.01 over 1m by user min 50 events -> sev2
rule e_p95: p95(latency_ms) > 1000000000 over 15m by tenant, attributes.tag min 10 events -> sev3
"""


def edge_events(rng: random.Random, ts: int, n: int) -> list[dict]:
    """Events with the edge cases the watch must count alike: missing fields, booleans vs
    numbers, non-numeric metrics, nested paths, lists and objects as values, report labels."""
    values = [None, True, False, 1, 1.0, 0, -0.0, 2.5, "1", "x", [1, 2], {"a": 1}, "[1, 2]", 10**6]
    out = []
    for i in range(n):
        attributes = {}
        for name in ("size", "on", "tag", "absent"):
            if rng.random() < 0.7:
                attributes[name] = rng.choice(values)
        if rng.random() < 0.5:
            attributes["depth"] = rng.choice([{"x": rng.choice(values)}, {"y": 1}, 3, None])
        event = {"event_id": f"edge{ts}-{i}", "ts": ts + i, "attributes": attributes}
        if rng.random() < 0.6:
            event["model"] = rng.choice(["m1", "m2"])
        if rng.random() < 0.5:
            event["region"] = rng.choice(["eu", "us", 3, True])
        if rng.random() < 0.5:
            event["user"] = f"u{rng.randrange(30)}"
        if rng.random() < 0.4:
            event["flags"] = {"rare": rng.random() < 0.1, "error": rng.random() < 0.5}
        if rng.random() < 0.3:
            event["latency_ms"] = rng.choice([5, 1.5, 0])
        if rng.random() < 0.25:
            event["type"] = "report"
            event["labels"] = rng.choice([["odd"], ["wrong", "odd"], ["wrong"], ["thumbs_down"]])
        out.append(event)
    return out


def traffic(seed: int) -> list[bytes]:
    """Two hours of generate.py-like traffic (10 events/s, an incident of each category) with a
    burst of edge-case events every five minutes."""
    span = 2 * HOUR
    injections = [
        Injection(c, onset_ms=int(span * (0.45 + 0.05 * i)), duration_ms=20 * 60_000) for i, c in enumerate(CATEGORIES)
    ]
    events = list(itertools.islice(Traffic(seed, START, span, 10.0, injections).events(), 70_000))
    rng = random.Random(seed)
    out: list[dict] = []
    next_edge = START
    for event in events:
        ts = parse_ts(event["ts"])
        if ts >= next_edge:
            out.extend(edge_events(rng, ts, 40))
            next_edge += 5 * 60_000
        out.append(event)
    for event in out[::997]:  # a time the native decoder leaves to Python: the batch is routed again
        event["ts"] = format_ts(parse_ts(event["ts"])).replace("Z", "+00:00").replace("T", " ")
    return [orjson.dumps(e) for e in out]


def facts(watch: TrafficWatch) -> tuple[list[tuple[str, str]], list[dict]]:
    warnings = watch.report()
    return warnings, [dataclasses.asdict(rule) for rule in watch.report_.rules]


@pytest.mark.parametrize(("rule_set", "seed"), [("pack", 3), ("edges", 5)])
def test_the_native_watch_counts_as_the_python_tallies(rule_set: str, seed: int) -> None:
    if rule_set == "pack":
        rules, problems = load_rules(starter_rule_sources(), starter_companion_sources())
    else:
        rules, problems = load_rules({"e.rules": EDGE_RULES}, {"vocabulary.toml": VOCABULARY})
    assert problems == []
    raw = traffic(seed)
    route = RouteStage(rules, WorkerSettings(rules=(), shards=3, input_partitions=1))
    route.watch.span_ms = 10 * HOUR  # never due here: the tallies are taken below
    dead: set[int] = set()
    for start in range(0, len(raw), 700):
        batch = [(0, offset, raw[offset]) for offset in range(start, min(start + 700, len(raw)))]
        for out in route.handle(batch):
            if out.topic == "dead_letter":
                dead.add(orjson.loads(out.value)["offset"])
    native = TrafficWatch(rules)
    native.load_native(route.native.watch_take())
    assert route.stats["events"] == len(raw) - len(dead)

    python = TrafficWatch(rules)  # every event observed, in Python
    observed = 0
    for offset, line in enumerate(raw):
        if offset in dead:
            continue
        try:
            python.observe(validate_event(orjson.loads(line)))
            observed += 1
        except InvalidEvent:
            pytest.fail(f"the router took an event Python refuses: {line!r}")
    assert len(dead) < len(raw) // 100 and observed > 50_000
    py_warnings, py_rules = facts(python)
    native_warnings, native_rules = facts(native)
    assert native.report_.inference == python.report_.inference > 50_000
    assert native.report_.reports == python.report_.reports > 200
    assert (native.report_.first_ts, native.report_.last_ts) == (python.report_.first_ts, python.report_.last_ts)
    for mine, theirs in zip(native_rules, py_rules, strict=True):
        assert mine == theirs, mine["name"]
    assert native_warnings == py_warnings
    assert len(py_warnings) >= 3


def test_many_groups_are_capped_and_not_judged_on_min_events(monkeypatch: pytest.MonkeyPatch) -> None:
    """Past MAX_GROUPS groups the native watch stops counting new ones (their windows unseen): no
    "no group reaches `min N events`" is said then — the busiest of the groups counted is no evidence."""
    rules, problems = load_rules(
        {"c.rules": "rule many: count() > 1 over 1m by user min 5 events -> sev3\n"}, {"vocabulary.toml": ""}
    )
    assert problems == []
    route = RouteStage(rules, WorkerSettings(rules=(), shards=1, input_partitions=1))
    events = [{"event_id": f"e{i}", "ts": START + i * 30, "user": f"u{i}"} for i in range(100_050)]
    batch = [(0, i, orjson.dumps(e)) for i, e in enumerate(events)]
    for start in range(0, len(batch), 5000):
        route.handle(batch[start : start + 5000])
    taken = route.native.watch_take()
    assert taken[4][0][1] == [(100_050, 100_000, True)]  # (passed, groups, capped)
    watch = TrafficWatch(rules)
    watch.load_native(taken)
    assert watch.report() == []
    assert watch.report_.rules[0].groups == 100_000 and watch.report_.rules[0].busiest_window == 1


def _resident_bytes() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * 4096


def test_long_distinct_values_do_not_stay_in_memory() -> None:
    """A watched path's distinct values are kept as 8-byte hashes: 1,000 events each with a
    different 200 KB value (under the worker's 256 KiB limit) leave the watch a few KB, not the
    200 MB the values themselves would hold — and are still counted (1,000: "1000+")."""
    rules, problems = load_rules(
        {"d.rules": "rule tags: distinct(attributes.tag) > 5000 over 10m by model -> sev3\n"},
        {"vocabulary.toml": 'fields = ["attributes.*"]\n'},
    )
    assert problems == []
    route = RouteStage(rules, WorkerSettings(rules=(), shards=1, input_partitions=1))
    route.watch.span_ms = 10 * HOUR  # taken below
    filler = "x" * 200_000

    def batch(first: int) -> list[tuple[int, int, bytes]]:
        return [
            (
                0,
                i,
                orjson.dumps(
                    {"event_id": f"e{i}", "ts": START + i, "model": "m", "attributes": {"tag": f"{i}{filler}"}}
                ),
            )
            for i in range(first, first + 20)
        ]

    route.handle(batch(0))  # the router's and allocator's first growth, before measuring
    before = _resident_bytes()
    for first in range(20, 1_100, 20):
        route.handle(batch(first))
    grown = _resident_bytes() - before
    assert grown < 64 * 2**20, f"resident memory grew by {grown / 2**20:.0f} MB"
    watch = TrafficWatch(rules)
    watch.load_native(route.native.watch_take())
    watch.report()
    tag = next(name for name in watch.report_.rules[0].names if name.path == "attributes.tag")
    assert tag.present == 1_100 and tag.values == 1_000
