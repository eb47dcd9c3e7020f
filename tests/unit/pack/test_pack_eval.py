"""The rule-pack evaluation: its traffic families (engine/firebreak/families.py) and its scoring
(benchmarks/pack_eval.py), and the starter pack on the tiny `--quick` families."""

from __future__ import annotations

import sys
from collections import Counter
from pathlib import Path

import orjson
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[3] / "benchmarks"))

import pack_eval  # noqa: E402
from firebreak.families import BURST_MS, FAMILIES, MINUTE, Truth, generate, quick  # noqa: E402


def test_the_same_seed_gives_the_same_events_and_another_seed_others():
    family = quick(FAMILIES["heavy"])
    first, again, other = generate(family, 1), generate(family, 1), generate(family, 2)
    assert first.events == again.events and first.truths == again.truths
    assert first.events != other.events


def test_a_family_has_tenants_of_very_different_sizes_heavy_accounts_and_its_noise():
    run = generate(FAMILIES["heavy"], 3)  # 10 events/s for 2 h, 5 tenants 20x apart
    ordinary = [e for e in run.events if e["event_id"].startswith("e")]
    tenants = Counter(e["tenant"] for e in ordinary)
    assert 12 < max(tenants.values()) / min(tenants.values()) < 30
    for tenant, n in tenants.items():
        heavy = sum(1 for e in ordinary if e["tenant"] == tenant and e["user"] == f"{tenant}-backend")
        assert 0.14 < heavy / n < 0.20
    injected = sum(1 for e in ordinary if e["flags"]["prompt_injection"]) / len(ordinary)
    assert 0.005 < injected < 0.007  # the family's classifier noise, 0.6%
    assert all(run.events[i]["ts"] <= run.events[i + 1]["ts"] for i in range(len(run.events) - 1))


def test_a_pii_burst_is_a_few_answers_to_one_user_within_30_seconds():
    for seed in range(1, 6):
        run = generate(FAMILIES["small"], seed)
        (truth,) = [t for t in run.truths if t.kind == "pii_burst"]
        leaked = [e for e in run.events if e["event_id"].startswith("x") and e["flags"]["pii"]]
        assert len(leaked) == truth.size and 3 <= truth.size <= 6
        assert {e["user"] for e in leaked} == set(truth.users)
        assert {e["tenant"] for e in leaked} == {truth.value}
        assert truth.onset_ts <= leaked[0]["ts"] and leaked[-1]["ts"] < truth.onset_ts + BURST_MS


def _record(group: dict, category: str, evidence: tuple[str, ...] = ()) -> dict:
    return {"group": group, "category": category, "evidence": list(evidence)}


def test_incidents_are_tied_to_injections_by_time_group_and_category():
    truth = Truth("attacker", "adversarial", "tenant", "t01", 60 * MINUTE, 75 * MINUTE, ("t01-new7",))
    ramp = Truth(
        "quality_ramp",
        "quality_degradation",
        "prompt_template",
        "chat-v3",
        0,
        10**9,
        scope=(("prompt_template", "chat-v3"), ("service", "assistant"), ("feature", "chat")),
    )
    truths = [truth, ramp]
    at = 62 * MINUTE
    assert pack_eval._tie(_record({"user": "t01-new7"}, "adversarial"), at, truths) == ("detection", 0)
    assert pack_eval._tie(_record({"user": "t01-u00003"}, "adversarial"), at, truths) == ("detection", 0)
    assert pack_eval._tie(_record({"tenant": "t01"}, "cost"), at, truths) == ("side effect", 0)
    assert pack_eval._tie(_record({"user": "t02-backend"}, "adversarial"), at, truths) == ("false", None)
    too_late = truth.end_ts + pack_eval.MATCH_AFTER_MS + 1
    assert pack_eval._tie(_record({"user": "t01-new7"}, "adversarial"), too_late, truths) == ("false", None)
    assert pack_eval._tie(_record({"service": "cost-svc"}, "cost", ("x1-9",)), at, truths) == ("side effect", 0)
    # a group on the ramp's service and feature points at it; another feature does not
    assert pack_eval._tie(_record({"service": "assistant", "feature": "chat"}, "quality_degradation"), at, truths) == (
        "detection",
        1,
    )
    assert pack_eval._tie(
        _record({"service": "assistant", "feature": "account-help"}, "quality_degradation"), at, truths
    ) == ("false", None)


def test_an_incident_built_on_an_injections_events_is_its_side_effect_even_late():
    burst = Truth("pii_burst", "data_leakage", "tenant", "t02", 60 * MINUTE, 60 * MINUTE + BURST_MS, ("t02-u00007",), 3)
    cost = Truth("cost", "cost", "service", "assistant", 90 * MINUTE, 120 * MINUTE)
    truths = [burst, cost]
    caused = [({"x1-5", "x1-6", "x1-7"}, set()), (set(), {"e1-40", "e1-41"})]
    reads = {"pii_leak_by_tenant": "pii", "chat_latency_ceiling": "latency_ms", "hallucination_spike": "hallucination"}
    late = burst.end_ts + pack_eval.MATCH_AFTER_MS + 5 * MINUTE  # a 30m window still holding the burst's answers
    leak = _record({"tenant": "t02"}, "data_leakage", ("x1-5", "x1-6", "x1-7", "e1-9")) | {"rule": "pii_leak_by_tenant"}
    assert pack_eval._tie(leak, late, truths, caused, reads) == ("side effect", 0)
    assert pack_eval._tie(leak | {"evidence": ["e1-9"]}, late, truths, caused, reads) == ("false", None)
    # the cost explosion's longer answers make a model's chat slow: its side effect; a rule
    # reading what the injection did not change is not
    slow = _record({"model": "model-a"}, "quality_degradation", ("e1-40",)) | {"rule": "chat_latency_ceiling"}
    assert pack_eval._tie(slow, 95 * MINUTE, truths, caused, reads) == ("side effect", 1)
    other = _record({"model": "model-a"}, "hallucination", ("e1-40",)) | {"rule": "hallucination_spike"}
    assert pack_eval._tie(other, 95 * MINUTE, truths, caused, reads) == ("false", None)


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory) -> dict:
    out = tmp_path_factory.mktemp("eval") / "quick.json"
    assert pack_eval.main(["--quick", "--json", str(out)]) == 0
    return orjson.loads(out.read_bytes())


def test_quick_runs_every_family_twice(quick_run):
    summary = {s["family"]: s for s in quick_run["summary"]}
    assert set(summary) == set(FAMILIES)
    assert all(s["runs"] == 2 for s in summary.values())
    assert sum(s["injected"] for s in summary.values()) >= 20


def test_the_starter_pack_catches_every_quick_injection_without_a_severe_false_incident(quick_run):
    for s in quick_run["summary"]:
        assert s["caught"] == s["injected"], (s["family"], s["misses"])
        assert s["false_severe"] == 0, (s["family"], s["false_by_rule"])
        for kind, ttd in s["ttd"].items():
            if kind == "pii_burst":
                assert ttd["max_s"] <= 300, (s["family"], ttd)


def test_a_leak_is_judged_by_the_evidence_it_left_against_its_tenants_noise():
    # 2 PII answers among a mid-size tenant's 234 answers in 30 min: noise (0.04%) alone
    # expects 0.09 and gives two every few days — below the floor; 6 among 450 once in
    # ~90,000 days — detectable; the other kinds are not assessed (counted detectable)
    span = 30 * MINUTE
    low = pack_eval.evidence("pii_leak", 2, 234, span, 0.0004)
    assert low is not None and not low["detectable"]
    assert abs(low["expected"] - 0.0936) < 1e-9 and 0.003 < low["p_value"] < 0.005
    assert 1 < low["noise_every_days"] < 10
    high = pack_eval.evidence("pii_leak", 6, 450, span, 0.0004)
    assert high is not None and high["detectable"] and high["noise_every_days"] > pack_eval.FLOOR_DAYS
    assert high["p_value"] < 1e-6
    # the floor is a number of days: four in 234 (once per ~1,750 days) is under it
    assert not pack_eval.evidence("pii_leak", 4, 234, span, 0.0004)["detectable"]
    assert pack_eval.evidence("attacker", 0, 0, 15 * MINUTE, 0.0004) is None


def test_the_summary_reports_caught_of_detectable_and_lists_the_below_floor_apart():
    span = 30 * MINUTE

    def truth(kind, size=0, trials=0, caught=True):
        return {
            "kind": kind,
            "target": "tenant=t02",
            "users": [],
            "size": size,
            "onset": 0,
            "evidence": pack_eval.evidence(kind, size, trials, span, 0.0004),
            "detected_by": "r" if caught else None,
            "ttd_ms": 1000 if caught else None,
        }

    runs = [
        {
            "family": "small",
            "seed": 1,
            "events": 10,
            "days": 0.5,
            "replay_s": 1.0,
            "incidents": [],
            "truths": [
                truth("pii_leak", 2, 234, caught=False),
                truth("pii_leak", 6, 450, caught=False),
                truth("attacker"),
                truth("pii_leak", 3, 234),
            ],
        }
    ]
    (s,) = pack_eval.summarize(runs)
    assert (s["caught"], s["injected"]) == (2, 4)  # the raw recall stays
    assert (s["caught_detectable"], s["detectable"]) == (1, 2)  # the attacker; not the 6-answer leak
    assert [m["size"] for m in s["misses"]] == [6]  # a detectable leak missed is a miss
    assert [(m["size"], m["caught"]) for m in s["below_floor"]] == [(2, False), (3, True)]
    text = pack_eval.render([s])
    assert "below the noise floor in small" in text and "2 PII answers of 234" in text
    assert "| 1/2 |" in text
