"""benchmarks/worlds.py and benchmarks/world_eval.py (issue 30): tiny worlds are deterministic per
seed, every event is valid, the ground truth agrees with the events, and the scorer's matching
tells a true incident from a false one on a hand-built case."""

from __future__ import annotations

import sys
from pathlib import Path

import orjson
import pytest
from firebreak.core.events import validate_event

sys.path.insert(0, str(Path(__file__).resolve().parents[3] / "benchmarks"))

import world_eval  # noqa: E402
import worlds  # noqa: E402

TINY = 0.02


@pytest.fixture(scope="module")
def tiny_worlds() -> list[worlds.World]:
    return [worlds.generate(seed, TINY) for seed in (0, 1, 2)]


def test_same_seed_same_world(tiny_worlds: list[worlds.World]) -> None:
    again = worlds.generate(1, TINY)
    first = tiny_worlds[1]
    assert [orjson.dumps(e) for e in again.events] == [orjson.dumps(e) for e in first.events]
    assert [t.to_json() for t in again.truths] == [t.to_json() for t in first.truths]
    assert orjson.dumps(tiny_worlds[0].events[:50]) != orjson.dumps(tiny_worlds[2].events[:50])


def test_every_event_is_valid_and_in_time_order(tiny_worlds: list[worlds.World]) -> None:
    for world in tiny_worlds:
        assert world.events
        ids = set()
        last = 0
        for e in world.events:
            event = validate_event(orjson.loads(orjson.dumps(e)))
            assert event.ts >= last
            last = event.ts
            assert world.start <= event.ts < world.end
            assert event.event_id not in ids
            ids.add(event.event_id)
        types = {e.get("type", "inference") for e in world.events}
        assert {"inference", "change"} <= types


def test_ground_truth_is_consistent(tiny_worlds: list[worlds.World]) -> None:
    for world in tiny_worlds:
        assert world.truths
        by_id = {e["event_id"]: e for e in world.events}
        for i, truth in enumerate(world.truths):
            assert truth.id == i
            assert world.start <= truth.start < truth.end <= world.end
            assert truth.category == worlds.KINDS[truth.kind][0] or truth.kind == "report_surge"
            assert truth.category in truth.categories
            assert truth.size_class in ("obvious", "subtle", "below_floor")
            assert truth.size["window_min"] >= worlds.MIN_WINDOW_MIN
            # the scope's values are among the affected ones, and the events in scope during the
            # span are counted as affected
            for field, value in truth.scope.items():
                if truth.affected_events:
                    assert value in truth.affected[field], (truth.kind, field)
            in_scope = [
                e
                for e in world.events
                if e.get("type") is None
                and truth.start <= e["ts"] < truth.end
                and all(e.get(k) == v for k, v in truth.scope.items())
            ]
            if truth.kind not in worlds._ADDS:
                # an injection changing the distribution of its scope's events: all of them
                assert truth.affected_events == len(in_scope), truth.kind
            else:
                # an injection adding events (attackers, a burst to one user): those, and only
                # those, beside the scope's ordinary events
                assert 1 <= truth.affected_events <= len(in_scope), truth.kind
                if truth.kind.startswith("attack"):
                    # new accounts (TENANT-nNNNNNN); another attack on the tenant may overlap
                    added = [e for e in in_scope if e["user"] in truth.affected["user"]]
                    assert truth.affected_events == len(added)
                    assert all("-n" in u for u in truth.affected["user"])
        for e in world.events:
            if e.get("type") == "report":
                assert e["ref"] in by_id


def test_size_classes_follow_the_floor() -> None:
    t = worlds.Truth(
        0, "pii_scattered", "data_leakage", ("data_leakage",), 0, 30 * worlds.MINUTE, {"tenant": "a"}, {}, "count:pii"
    )
    for m in range(30):
        t._bg[m], t._ex[m] = 0.01, 0.0
    worlds.size_truth(t)
    assert t.size_class == "below_floor"
    # 0.27 expected in the 30m window: noise reaches 6 once per ~2e6 windows (the floor: 6), 5 too often
    t._ex[3] = 12.0  # 12 extra: at least twice the 5.73 the floor needs
    worlds.size_truth(t)
    assert t.size_class == "obvious"
    t._ex[3] = 8.0  # 8.27 expected: past the floor, not twice it
    worlds.size_truth(t)
    assert t.size_class == "subtle", t.size


@pytest.mark.parametrize(
    "seeds",
    [
        "11000-11001",
        "11049",
        "10000-10001",
        "10049",
        "9000-9001",
        "9049",
        "8000-8001",
        "8049",
        "7000-7001",
        "7049",
        "6000-6001",
        "6049",
        "5000-5001",
        "5049",
        "4000-4001",
        "4049",
        "3000-3001",
        "2049",
        "1000-1001",
        "48-1000",
    ],
)
def test_held_back_seeds_are_refused_without_the_flag(seeds: str, capsys: pytest.CaptureFixture[str]) -> None:
    # 11000-11049 is the held-back range; 1000-1049 to 10000-10049, whose results were seen, stay refused
    assert world_eval.main(["--seeds", seeds, "--scale", str(TINY)]) == 2
    assert "held-back" in capsys.readouterr().err


def test_held_back_ranges() -> None:
    assert all(
        worlds.is_held_out(s)
        for s in (
            11000,
            11049,
            10000,
            10049,
            9000,
            9049,
            8000,
            8049,
            7000,
            7049,
            6000,
            6049,
            5000,
            5049,
            4000,
            4049,
            3000,
            3049,
            2000,
            2049,
            1000,
            1049,
        )
    )
    assert not any(
        worlds.is_held_out(s)
        for s in (
            11050,
            10999,
            10050,
            9999,
            9050,
            8999,
            8050,
            7999,
            7050,
            6999,
            6050,
            5999,
            5050,
            4999,
            4050,
            3050,
            2999,
            2050,
            49,
            1999,
            1050,
        )
    )
    with pytest.raises(SystemExit, match="held-back"):
        worlds.main(["--seed", "2003", "--out", "/nonexistent-never-written"])


def _incident(category: str, group: dict[str, str], start: int, end: int) -> dict[str, object]:
    return {
        "id": "i",
        "rule": "r",
        "category": category,
        "group": group,
        "opened": end,
        "window_start": start,
        "window_end": end,
        "severity": "sev2",
    }


def test_matching_on_a_hand_built_case() -> None:
    h = worlds.HOUR
    truth = {
        "id": 0,
        "kind": "hallucination_spike",
        "categories": ["hallucination", "quality_degradation"],
        "start": 10 * h,
        "end": 11 * h,
        "affected": {"model": ["orca-2"], "service": ["search"], "tenant": ["t01", "t02"], "user": ["t01-u1"]},
    }
    true_one = _incident("hallucination", {"model": "orca-2"}, 10 * h + 5 * 60_000, 10 * h + 15 * 60_000)
    wrong_model = _incident("hallucination", {"model": "atlas-mini"}, 10 * h, 10 * h + 10 * 60_000)
    wrong_time = _incident("hallucination", {"model": "orca-2"}, 13 * h, 13 * h + 10 * 60_000)
    wrong_category = _incident("cost", {"service": "search"}, 10 * h, 10 * h + 10 * 60_000)
    late_but_in_grace = _incident("quality_degradation", {"tenant": "t02"}, 11 * h + 10 * 60_000, 11 * h + 40 * 60_000)
    assert world_eval.matches(true_one, truth)
    assert not world_eval.matches(wrong_model, truth)
    assert not world_eval.matches(wrong_time, truth)
    assert not world_eval.matches(wrong_category, truth)
    assert world_eval.matches(late_but_in_grace, truth)
    truths = [dict(truth)]
    incidents = [true_one, wrong_model]
    world_eval.score(truths, incidents)
    assert true_one["truths"] == [0] and wrong_model["truths"] == []
    assert [c["rule"] for c in truths[0]["caught_by"]] == ["r"]
    s = world_eval.summarize(
        [
            {
                "seed": 0,
                "events": 1,
                "days": 1.0,
                "start": 0,
                "generate_s": 0,
                "replay_s": 0,
                "truths": [{**truths[0], "size_class": "obvious", "scope": {}, "params": {}, "size": {}}],
                "incidents": incidents,
            }
        ]
    )
    assert s["precision"]["sev2"] == {"incidents": 2, "true": 1, "false": 1, "precision": 0.5, "false_per_day": 1.0}
    assert s["recall"]["obvious"]["caught"] == 1


def test_a_tiny_world_end_to_end(rule_engine: str) -> None:
    run = world_eval.run_one(
        3, __import__("firebreak.adapters.starter_pack", fromlist=["x"]).starter_rule_sources(), TINY, rule_engine
    )
    assert run["events"] > 0 and run["truths"]
    for inc in run["incidents"]:
        assert inc["severity"] in world_eval.SEVERITIES
        assert (inc.get("cause") in world_eval.CAUSES) == (not inc["truths"])
