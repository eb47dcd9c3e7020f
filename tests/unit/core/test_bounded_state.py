"""State that forgets (issue 26): under steady user churn — every user new, none coming back —
the groups, the native engine's interned keys and the snapshots level off instead of growing
with every user ever seen; in both engines, with records and snapshots the same."""

from __future__ import annotations

import random

import orjson
import pytest
from corekit import HOUR, MIN, SEC, event, rules
from firebreak.adapters.drive import Driver
from firebreak.core import Engine
from firebreak.native import NativeEngine, available

CHURN_RULES = rules(
    """
rule user_burst:
  count() > 3 over 5m by user -> sev4
rule user_leak:
  count(pii) >= 2 over 2m by user -> sev2
rule user_spend:
  sum(cost_usd) > 2x baseline(20m) over 5m by user -> sev3
rule tenant_user:
  distinct(user) > 200 over 5m by tenant, user -> sev4
rule tenant_spike:
  rate(hallucination) > 3x baseline over 5m by tenant -> sev3
"""
)

HOURS = 8
PER_HOUR = 3_600  # new users an hour, two events each: one event a second


def churn(seed: int, hours: int = HOURS) -> list:
    """One event a second for ``hours``; the n-th event's user is ``c{n // 2}`` (every user new),
    a few heavy users of each hour coming back (enough to fire)."""
    rng = random.Random(seed)
    out = []
    for i in range(hours * PER_HOUR):
        at = i * SEC
        heavy = rng.random() < 0.05
        user = f"heavy{at // HOUR}-{rng.randrange(3)}" if heavy else f"c{i // 2}"
        out.append(
            event(
                f"e{i}",
                at,
                tenant=rng.choice(["t1", "t2"]),
                user=user,
                cost_usd=round(rng.uniform(0, 0.05 if heavy else 0.01), 4),
                flags={"hallucination": rng.random() < 0.03, "pii": heavy and rng.random() < 0.3},
            )
        )
    return out


def lines_of(events) -> list[bytes]:
    return [orjson.dumps(e.data) for e in events]


def python_groups(engine: Engine) -> int:
    return sum(len(state.groups) for state in engine.states)


def test_the_native_engine_is_built():
    assert available(), "firebreak._native is missing: pip install -e . builds it (needs cargo)"


@pytest.mark.parametrize("seed", [1, 2])
def test_churn_keeps_keys_groups_and_snapshots_bounded_in_both_engines(seed: int):
    """Differential: both engines in every pass, records and snapshots byte for byte, and the
    native engine's keys (its own bookkeeping) bounded."""
    events = churn(seed)
    lines = lines_of(events)
    python, native = Driver(CHURN_RULES, engine="python"), Driver(CHURN_RULES, engine="native")
    records_python, records_native = [], []
    keys, live, snapshots = [], [], []
    for hour in range(HOURS):
        batch = lines[hour * PER_HOUR : (hour + 1) * PER_HOUR]
        for i in range(0, len(batch), 500):  # batches through the native engine's routed-ahead path
            records_python += python.feed_lines(batch[i : i + 500]).records
            records_native += native.feed_lines(batch[i : i + 500]).records
            keys.append(sum(native.core.core.key_counts()))
            live.append(python_groups(python.core))
        snap_python, snap_native = python.core.snapshot(), native.core.snapshot()
        assert orjson.loads(orjson.dumps(snap_native)) == orjson.loads(orjson.dumps(snap_python))
        snapshots.append(len(native.core.snapshot_json()))
        assert native.core.memory().groups == python_groups(python.core)
    records_python += python.finish()
    records_native += native.finish()
    assert orjson.dumps(records_native) == orjson.dumps(records_python)
    assert any(r["type"] == "incident.opened" for r in records_python)  # the state was not trivial

    users = HOURS * PER_HOUR // 2
    # groups alive: those of the last minutes' users only (memory is window + baseline)
    assert max(live) < users / 5, f"groups kept past their state's life: {max(live)} of {users} users"
    # keys: at most about twice the keys alive (forgotten when more than half are dead), never
    # one per user ever seen (28,800 here; ~3,000 at most are alive at once)
    assert max(keys) <= 4 * max(live) + 2 * 1024, f"keys kept past their groups: {max(keys)}, alive {max(live)}"
    assert keys[-1] < users / 4
    # a plateau, not a line: the last hours' snapshots no bigger than the third hour's (+25%)
    assert max(snapshots[3:]) < 1.25 * snapshots[2], snapshots


def test_forgotten_keys_come_back_as_new_groups_and_restore_across_engines():
    """Users who come back after their keys were forgotten, a snapshot taken and restored
    in each engine in the middle of it: the same records as one run of the core (differential:
    the native engine's key forgetting against the Python core, in every pass)."""
    events = churn(3, hours=4)
    # the first hour's users come back in the last hour: their keys were forgotten long ago
    back = [
        event(
            f"b{i}",
            3 * HOUR + 30 * MIN + i * SEC,
            tenant="t1",
            user=f"c{i // 2}",
            cost_usd=0.04,
            flags={"hallucination": False, "pii": i % 3 == 0},
        )
        for i in range(600)
    ]
    everything = sorted(events + back, key=lambda e: e.ts)
    expected = Engine(CHURN_RULES)
    want = [r for e in everything for r in expected.process(e)] + expected.finish()
    cut = len(everything) * 5 // 8
    head = NativeEngine(CHURN_RULES)
    got = head.feed_lines(lines_of(everything[:cut])).records
    assert sum(head.core.key_counts()) < cut / 3  # forgotten already
    via_core = Engine.restore(CHURN_RULES, head.snapshot()).snapshot()
    for restored in (NativeEngine.restore(CHURN_RULES, head.snapshot()), NativeEngine.restore(CHURN_RULES, via_core)):
        tail = restored.feed_lines(lines_of(everything[cut:])).records + restored.finish()
        assert orjson.dumps(got + tail) == orjson.dumps(want)
    rest = head.feed_events(everything[cut:]).records + head.finish()  # one event at a time
    assert orjson.dumps(got + rest) == orjson.dumps(want)


def test_shards_that_forget_keys_still_own_the_same_groups():
    """Two shards of one engine (each aggregating only its (rule, group) pairs) renumber their
    keys as they forget them: together they give the records of one engine. The native
    engine's own key numbering: the Python core keeps no keys to forget."""
    events = churn(4, hours=3)
    whole = NativeEngine(CHURN_RULES)
    want = whole.feed_events(events).records + whole.finish()
    got = []
    for shard in range(2):
        engine = NativeEngine(CHURN_RULES)
        engine.own(shard, 2)
        got += engine.feed_events(events).records + engine.finish(max_ts=events[-1].ts)
        assert sum(engine.core.key_counts()) < len(events) / 3  # 10,800 kept forever
    key = lambda r: orjson.dumps(r, option=orjson.OPT_SORT_KEYS)  # noqa: E731
    assert sorted(map(key, got)) == sorted(map(key, want))
    assert any(r["type"] == "incident.opened" for r in want)
