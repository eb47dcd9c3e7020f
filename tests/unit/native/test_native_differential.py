"""The native engine against the executable specification (the Python core): byte-identical
records on the rule tests, the scenario library, Hypothesis streams, shuffled and corrupted
logs, and snapshot/restore at random points (either engine's snapshot into either)."""

from __future__ import annotations

import os
import random
from pathlib import Path

import firebreak.native.plan as plan_module
import orjson
import pytest
from corekit import MIN, SEC, T0, event, rules
from firebreak.adapters.drive import Driver, batched, drive_batches
from firebreak.adapters.rule_tests import collect_test_files, run_test_file
from firebreak.core import Engine, run_events, validate_event
from firebreak.errors import EngineError
from firebreak.native import NativeEngine, available
from firebreak.synthetic import Injection, Traffic
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_core_properties import BASE, RULES
from test_scenarios import CASES, RATE, START, TAIL, normal_traffic, pack

ROOT = Path(__file__).resolve().parents[3]


def test_the_native_engine_is_built():
    assert available(), "firebreak._native is missing: pip install -e . builds it (needs cargo)"


def dump(records) -> bytes:
    return b"\n".join(orjson.dumps(r) for r in records)


def native_run(compiled, events, lateness_ms=30 * SEC) -> list[dict]:
    engine = NativeEngine(compiled, lateness_ms)
    return engine.feed_events(events).records + engine.finish()


def same(compiled, events, lateness_ms=30 * SEC) -> bytes:
    expected = dump(run_events(compiled, events, lateness_ms))
    assert dump(native_run(compiled, events, lateness_ms)) == expected
    return expected


# ---- the scenario library --------------------------------------------------------------------


@pytest.mark.parametrize("path", collect_test_files([str(ROOT / "rules")]), ids=lambda p: p.name)
def test_rule_tests_give_the_same_records(path: Path):
    python, native = run_test_file(path, engine="python"), run_test_file(path, engine="native")
    assert python.error is None, python.error
    assert dump(native.records) == dump(python.records)
    assert native.failures == python.failures


@pytest.mark.parametrize("category", sorted(CASES))
def test_scenarios_give_the_same_records(category: str):
    case = CASES[category]
    traffic = Traffic(
        11,
        START,
        case.onset + case.duration + TAIL,
        RATE,
        [Injection(category, case.onset, case.duration, case.target)],
    )
    from firebreak.core import validate_event

    events = [validate_event(obj) for obj in traffic.events()]
    assert b"incident.opened" in same(pack()[case.file], events)


def test_normal_traffic_gives_the_same_records_with_the_whole_pack():
    compiled = tuple(r for file_rules in pack().values() for r in file_rules)
    same(compiled, list(normal_traffic()))


# ---- Hypothesis streams ------------------------------------------------------------------------

EDGE_RULES = rules(
    """
rule by_odd_values:
  count() > 3 over 1m by region, tier -> sev4
rule quiet_where:
  rate(pii) > 0.2 over 2m by tenant where region in ["eu", 2] and not flags.jailbreak min 3 events -> sev2
rule ordered_where:
  avg(latency_ms) > 500 over 1m where cost_usd >= 0.01 or tier == true min 2 events -> sev3
rule extremes:
  max(tokens_out) > 3x baseline(5m) over 1m by tenant min 2 events -> sev3
rule floor:
  min(scores.quality) < 0.2 over 1m min 1 events -> sev4
rule population:
  rate(jailbreak) > 3x population with 99% confidence over 1m by user min 2 events -> sev2 contain block_user
rule significant:
  count(pii) > 1 with 95% confidence over 1m by tenant for 10s -> sev2 contain disable_feature for 1m
rule spread:
  distinct(region) > 2x baseline(5m) over 1m min 1 events -> sev4
"""
)

odd_values = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-2, 2),
    st.sampled_from([1.0, 0.5, -0.0, 2.5e-7, 1e16]),
    st.sampled_from(["eu", "us", "", "é", "a'b", 'q"uote']),
    st.just([1, "x"]),
    st.just({"k": [True, None]}),
)


@st.composite
def streams(draw, min_n=1):
    n = draw(st.integers(min_n, 150))
    at = 0
    out = []
    for i in range(n):
        at += draw(st.integers(0, 12 * SEC))
        jitter = draw(st.integers(-20 * SEC, 0))
        fields = {
            "region": draw(odd_values),
            "tier": draw(st.sampled_from([True, False, 1, None, "gold"])),
            "tenant": draw(st.sampled_from(["t1", "t2", "t3"])),
            "user": draw(st.sampled_from(["u1", "u2", "u3", "u4", None])),
            "latency_ms": draw(st.one_of(st.integers(0, 2000), st.floats(0, 2000, allow_nan=False), st.none())),
            "cost_usd": draw(st.sampled_from([0, 0.001, 0.02, 0.1, None])),
            "tokens_out": draw(st.integers(0, 5000)),
            "flags": {"pii": draw(st.booleans()), "jailbreak": draw(st.booleans())},
            "scores": {"quality": draw(st.floats(0, 1, allow_nan=False))},
        }
        if draw(st.integers(0, 20)) == 0:
            fields["type"] = "change"
            fields["kind"] = "deploy"
        out.append(event(f"h{i}", max(0, at + jitter), **{k: v for k, v in fields.items() if v is not None}))
    return out


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(streams(), st.sampled_from([0, 5 * SEC, 30 * SEC]))
def test_hypothesis_streams_give_the_same_records(events, lateness):
    same_on_both(EDGE_RULES, events, lateness)


def same_on_both(rules, events, lateness: int) -> None:
    """Both engines over ``events``: the same records, late events, open incidents and counts."""
    python, native = Driver(rules, lateness, "python"), Driver(rules, lateness, "native")
    fed_python, fed_native = python.feed_events(events), native.feed_events(events)
    assert dump(fed_native.records) == dump(fed_python.records)
    assert fed_native.late == fed_python.late
    assert dump(native.finish()) == dump(python.finish())
    assert native.open_incidents() == python.open_incidents()
    assert native.opened == python.opened


def test_the_edge_rules_fire():
    events = [
        event(
            f"x{i}",
            i * SEC,
            tenant="t1",
            user="u1",
            region="eu",
            flags={"pii": True, "jailbreak": i % 2 == 0},
            latency_ms=900,
            cost_usd=0.02,
            tokens_out=10 * i,
            scores={"quality": 0.1},
        )
        for i in range(200)
    ]
    records = orjson.loads(b"[" + same(EDGE_RULES, events).replace(b"\n", b",") + b"]")
    opened = {r["rule"] for r in records if r["type"] == "incident.opened"}
    assert {"by_odd_values", "quiet_where", "ordered_where", "floor", "significant"} <= opened


# Rules whose quiet groups the native engine skips without reading their buckets (`can_hold`:
# too few events or flagged events, a count or a non-negative sum under an absolute limit) —
# near their limits, with negative values in a sum, and across a snapshot at a random point.
GUARD_RULES = rules(
    """
rule few_flagged:
  count(jailbreak) >= 2 over 1m by user -> sev4
rule signed_sum:
  sum(region) > 1 over 1m by tenant -> sev4
rule spend:
  sum(cost_usd) >= 0.05 over 1m by user -> sev4
rule gated_rate:
  rate(pii) > 0.5 over 1m by user min 3 events -> sev4
rule gated_p90:
  p90(latency_ms) > 1000 over 1m by user min 3 events -> sev4
rule gated_flagged:
  rate(jailbreak) > 0.4 over 10m by tenant min 2 flagged -> sev3
rule against_population:
  rate(jailbreak) > 1.5x population over 1m by user min 2 events -> sev4
rule against_baseline:
  rate(pii) > 1.5x baseline(3m) over 1m by user min 1 events -> sev4
"""
)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(streams(), st.sampled_from([0, 5 * SEC]), st.floats(0, 1))
def test_groups_skipped_without_reading_their_buckets_give_the_same_records(events, lateness, cut_at):
    expected = dump(run_events(GUARD_RULES, events, lateness))
    assert dump(native_run(GUARD_RULES, events, lateness)) == expected
    # Across a snapshot, without the sum of `region`: a total beyond 64 bits (1e16 in
    # millionths) does not survive a JSON snapshot (orjson) in either engine.
    kept = tuple(r for r in GUARD_RULES if r.name != "signed_sum")
    expected = dump(run_events(kept, events, lateness))
    cut = int(len(events) * cut_at)
    first = NativeEngine(kept, lateness)
    head = first.feed_events(events[:cut]).records
    restored = NativeEngine.restore(kept, first.snapshot())
    assert dump(head + restored.feed_events(events[cut:]).records + restored.finish()) == expected


# ---- shuffled and corrupted logs -------------------------------------------------------------------

CORRUPT = [
    b"{not json",
    b"[1, 2]",
    b'{"ts": 1}',
    b'{"event_id": "", "ts": 1}',
    b'{"event_id": "c1", "ts": true}',
    b'{"event_id": "c2", "ts": "yesterday"}',
    b'{"event_id": "c3", "ts": "2026-01-01T00:00:00"}',
    b'{"event_id": "c4", "ts": -5}',
    b'{"event_id": "c5", "ts": 1, "type": "other"}',
    b'{"event_id": "c6", "ts": 1, "model": 7}',
    b'{"event_id": "c7", "ts": 1, "latency_ms": "slow"}',
    b'{"event_id": "c8", "ts": 1, "flags": {"pii": 1}}',
    b'{"event_id": "c9", "ts": 1, "scores": {"quality": true}}',
    b'{"event_id": "c10", "ts": 1, "type": "change"}',
    b'{"event_id": "c11", "ts": 1, "type": null}',
    b'{"event_id": "c12", "ts": 1} trailing',
    b"   ",
    b"",
]


def lines_of(events) -> list[bytes]:
    return [orjson.dumps(e.data) + b"\n" for e in events]


class Sink:
    def __init__(self) -> None:
        self.records: list[bytes] = []
        self.refused: list[tuple] = []

    def record(self, record: dict) -> None:
        self.records.append(orjson.dumps(record))

    def bad(self, where, reason: str, raw: bytes, late: bool) -> None:
        self.refused.append((where, reason, raw, late))


def replay_both(lines: list[bytes], lateness_ms: int = 30 * SEC) -> Sink:
    sinks = []
    for kind in ("python", "native"):
        sink = Sink()
        drive_batches(batched(enumerate(lines, start=1)), Driver(RULES, lateness_ms, kind), sink)
        sinks.append(sink)
    python, native = sinks
    assert native.records == python.records
    assert native.refused == python.refused
    return python


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_shuffled_corrupted_logs_give_the_same_records_and_reasons(seed: int):
    rng = random.Random(seed)
    events = list(BASE)
    for i in range(0, len(events) - 10, 10):  # shuffle within 20s: well inside the lateness
        chunk = events[i : i + 10]
        rng.shuffle(chunk)
        events[i : i + 10] = chunk
    lines = lines_of(events)
    for bad in CORRUPT:
        lines.insert(rng.randrange(len(lines)), bad + b"\n")
    # times the native decoder leaves to Python's fromisoformat: still events, same records
    for i in rng.sample(range(len(lines)), 20):
        obj = orjson.loads(lines[i]) if lines[i].startswith(b'{"event_id":"e') else None
        if obj is not None:
            from firebreak.core import format_ts

            obj["ts"] = format_ts(obj["ts"]).replace("Z", "+00:00").replace("T", " ")
            lines[i] = orjson.dumps(obj) + b"\n"
    late = orjson.dumps({"event_id": "late", "ts": T0, "model": "a"}) + b"\n"
    lines.insert(len(lines) // 2, late)
    python = replay_both(lines)
    assert any(late for *_, late in python.refused)
    assert len([r for r in python.refused if not r[3]]) == len([b for b in CORRUPT if b.strip()])


def test_odd_time_formats_are_events_in_both():
    lines = [
        b'{"event_id": "a", "ts": "2026-01-01T00:00:00.5Z", "model": "m"}',
        b'{"event_id": "b", "ts": "2026-01-01 00:00:01+00:00", "model": "m"}',
        b'{"event_id": "c", "ts": 1767225602000.7, "model": "m"}',
        b'{"event_id": "d", "ts": "2026-01-01T01:00:03.123456+01:00", "model": "m"}',
    ]
    python = replay_both(lines)
    assert python.refused == []


# ---- snapshot and restore ------------------------------------------------------------------------------


def restores_across_engines(rules, events, cut: int) -> None:
    """Both engines up to ``cut``, the same records and snapshots; then each engine's snapshot
    restored in the native engine, and the native one's in the Python core, gives the records
    of one uncut run of the core."""
    expected = dump(run_events(rules, events))
    python, native = Engine(rules), NativeEngine(rules)
    head = [r for e in events[:cut] for r in python.process(e)]
    assert dump(native.feed_events(events[:cut]).records) == dump(head)
    snap_python, snap_native = python.snapshot(), native.snapshot()
    assert orjson.loads(orjson.dumps(snap_native)) == orjson.loads(orjson.dumps(snap_python))
    for restored in (NativeEngine.restore(rules, snap_python), NativeEngine.restore(rules, snap_native)):
        tail = restored.feed_events(events[cut:]).records + restored.finish()
        assert dump(head + tail) == expected
    back = Engine.restore(rules, orjson.loads(orjson.dumps(snap_native)))
    tail = [r for e in events[cut:] for r in back.process(e)] + back.finish()
    assert dump(head + tail) == expected


@pytest.mark.parametrize("seed", [4, 5, 6])
def test_snapshots_restore_across_engines_at_random_points(seed: int):
    restores_across_engines(RULES, BASE, random.Random(seed).randrange(1, len(BASE)))


def test_a_changed_rule_starts_afresh_after_restore():
    native = NativeEngine(RULES)
    native.feed_events(BASE[:1000])
    snap = native.snapshot()
    changed = rules(
        """
rule spike:
  rate(hallucination) > 4x baseline over 5m by model -> sev3 contain fallback
"""
    )
    python = Engine.restore(changed, snap)
    restored = NativeEngine.restore(changed, snap)
    assert orjson.loads(orjson.dumps(restored.snapshot())) == orjson.loads(orjson.dumps(python.snapshot()))


# ---- every rule native ---------------------------------------------------------------------------------


def test_a_rule_the_native_engine_cannot_run_is_refused_with_one_line(monkeypatch):
    """No mixed engine: a rule outside the native plan (only a hand-made CompiledRule can be)
    stops the native engine before it starts, naming the rule and the way to run it."""
    real = plan_module.unsupported
    monkeypatch.setattr("firebreak.native.unsupported", lambda r: "test" if r.name == "leak" else real(r))
    with pytest.raises(EngineError) as refused:
        NativeEngine(RULES)
    assert str(refused.value) == "rule leak cannot run on the native engine (test); run it with --engine python"
    assert "\n" not in str(refused.value)


def test_every_starter_rule_runs_natively():
    compiled = tuple(r for file_rules in pack().values() for r in file_rules)
    assert {r.name: plan_module.unsupported(r) for r in compiled if plan_module.unsupported(r)} == {}


def test_memory_per_group_is_reported():
    engine = NativeEngine(EDGE_RULES + RULES)
    engine.feed_events([event(f"m{i}", i * 100, user=f"u{i % 500}", tenant="t", model="a") for i in range(5000)])
    memory = engine.memory()
    groups, buckets, size = memory.groups, memory.buckets, memory.bytes
    assert groups >= 500 and buckets >= groups
    assert size / groups < 2048


def test_late_events_match():
    events = [event("a", 10 * MIN, model="a"), event("b", 1 * MIN, model="a"), event("c", 10 * MIN + 1, model="a")]
    python, native = Driver(RULES, 30 * SEC, "python"), Driver(RULES, 30 * SEC, "native")
    late = python.feed_events(events).late
    assert [index for index, _ in late] == [1]
    assert native.feed_events(events).late == late


def test_a_whole_float_and_its_int_are_one_group_shown_as_the_int_whatever_came_first():
    """Found by the Hypothesis stream above: a group seen as `region: 1` whose state had
    expired, seen again as `1.0`, was shown as 1.0 by the Python core (the new state's first
    event) and as 1 by the native engine (its interned key) — different incident ids; and
    the shard of a group depended on which form was hashed. Both now key it as the int."""
    from firebreak.core.engine import RuleState
    from firebreak.core.sharding import shard_of

    rule = rules("count() > 2 over 1m by region -> sev4")
    burst = lambda first, value: [event(f"{first}-{i}", first + i * SEC, region=value) for i in range(4)]  # noqa: E731
    for early, late in ((1, 1.0), (1.0, 1), (2.0, 2.0)):
        events = burst(0, early) + burst(10 * MIN, late)  # the first group's state is gone by then
        python = run_events(rule, events)
        native = NativeEngine(rule)
        got = native.feed_events(events).records + native.finish()
        assert got == python
        groups = {orjson.dumps(r["group"]) for r in python if r["type"] == "incident.opened"}
        assert groups == {orjson.dumps({"region": int(early)})}
    key_of = RuleState(rule[0]).key_of
    assert key_of({"region": 3.0}) == key_of({"region": 3}) and type(key_of({"region": 3.0})[0]) is int
    assert shard_of("r", key_of({"region": 3.0}), 7) == shard_of("r", key_of({"region": 3}), 7)
    assert key_of({"region": 0.5}) == (0.5,) and key_of({"region": True}) != key_of({"region": 1})


# ---- rules split over two threads (lib.rs Split) ------------------------------------------------


def test_rules_split_over_two_threads_give_the_same_records(monkeypatch):
    """Every injected category at once through the whole pack, fed as raw lines in batches of
    random sizes: the records of the two-thread engine are the core's, in its order, and its
    state afterwards is the one-thread engine's — also when its `by` lists keep moving from one
    thread to the other between batches (Split::rebalance)."""
    compiled = tuple(r for file_rules in pack().values() for r in file_rules)
    injections = [Injection(c, case.onset, case.duration, case.target) for c, case in sorted(CASES.items())]
    events = [validate_event(obj) for obj in Traffic(5, START, 150 * MIN, RATE, injections).events()]
    lines = lines_of(events)
    expected = dump(run_events(compiled, events, 30 * SEC))
    assert expected.count(b"incident.opened") >= 3
    rng = random.Random(7)
    cuts = [0]
    while cuts[-1] < len(lines):
        cuts.append(cuts[-1] + rng.choice([1, 63, 64, 500, 4096]))
    state = {}
    for threads in ("1", "2", "2, moving"):
        monkeypatch.setenv("FIREBREAK_NATIVE_THREADS", threads[0])
        engine = NativeEngine(compiled, 30 * SEC)
        assert engine.core.threads == int(threads[0])
        if threads == "2, moving":  # a `by` list moved to the other thread after every batch
            engine.core.set_rebalance(1, -1.0, 10_000)
        records = []
        for a, b in zip(cuts, cuts[1:], strict=False):
            fed = engine.feed_lines(lines[a:b])
            assert not fed.bad and not fed.late
            records += fed.records
        records += engine.finish()
        assert dump(records) == expected
        state[threads] = (orjson.dumps(engine.snapshot(), option=orjson.OPT_SORT_KEYS), engine.opened)
        if threads == "2, moving":
            assert engine.core.split_moves > 10
    assert state["1"] == state["2"] == state["2, moving"]


# rules of both threads that hold, and stop holding, at the same steps: records of both sides
# come out of the same event's steps, and must be merged by (step, rule)
DENSE_RULES = rules(
    """
rule dense_tenant:
  count() > 1 over 1m by tenant -> sev4
rule dense_user:
  count() > 1 over 1m by user -> sev4
rule dense_all:
  count() > 2 over 30s -> sev4
rule dense_tier:
  count(pii) > 0 over 1m by tier -> sev4
"""
)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(streams(min_n=16), st.sampled_from([0, 5 * SEC, 30 * SEC]), st.integers(16, 200), st.booleans())
def test_hypothesis_streams_on_two_threads_give_the_same_records(events, lateness, batch, dense):
    """The edge rules (five `by` lists), or rules that hold at the same steps, split over two
    threads: their records merged in the core's order."""
    compiled = DENSE_RULES if dense else EDGE_RULES
    before = os.environ.get("FIREBREAK_NATIVE_THREADS")
    os.environ["FIREBREAK_NATIVE_THREADS"] = "2"
    try:
        native = NativeEngine(compiled, lateness)
    finally:
        if before is None:
            del os.environ["FIREBREAK_NATIVE_THREADS"]
        else:
            os.environ["FIREBREAK_NATIVE_THREADS"] = before
    assert native.core.threads == 2
    python = Driver(compiled, lateness, "python")
    lines = lines_of(events)
    for a in range(0, len(lines), batch):
        fed_python, fed_native = python.feed_lines(lines[a : a + batch]), native.feed_lines(lines[a : a + batch])
        assert dump(fed_native.records) == dump(fed_python.records)
        assert fed_native.late == fed_python.late and fed_native.events == fed_python.events
    assert dump(native.finish()) == dump(python.finish())
    assert native.open_incidents() == python.open_incidents()
    assert native.opened == python.opened


def test_native_objects_can_be_freed_on_another_thread():
    """The worker's shards die wherever Python's garbage collector runs — Faust's consumer
    thread included. An engine freed there must go quietly (CI saw "Core is unsendable, but
    is being dropped on another thread" in a fenced worker's log; the router is built alike)."""
    import gc
    import sys
    import threading

    raised: list[object] = []
    hook, sys.unraisablehook = sys.unraisablehook, raised.append
    try:
        engine = NativeEngine(RULES)
        engine.feed_events(BASE[:50])
        holder = [engine]
        thread = threading.Thread(target=lambda: (holder.clear(), gc.collect()))
        del engine
        thread.start()
        thread.join()
        assert holder == []
    finally:
        sys.unraisablehook = hook
    assert raised == []
