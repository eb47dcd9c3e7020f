"""The compiled plan (engine/firebreak/dsl/plan.py): one compile gives both engines their rules."""

from __future__ import annotations

import orjson
import pytest
from firebreak import _native
from firebreak.dsl import load_rules
from firebreak.dsl.compiler import compile_where
from firebreak.dsl.plan import PLAN_VERSION, compile_plan
from firebreak.native import NativeEngine
from firebreak.native.plan import plans_json
from firebreak.testing import event

TEXT = """
rule spike:
  rate(hallucination) > 3x baseline over 10m by model
  where service == "chat" and not flags.test and (latency_ms >= 200 or tenant in ["a", "b"])
  -> sev2 contain fallback(model="small") notify "oncall"
rule slow: p95(latency_ms) > 900 over 5m by tenant min 10 events -> sev3
rule users: rate(pii) > 5x population over 10m by tenant -> sev4
rule wrong: reports(wrong) > 3 with 99% confidence over 15m by model -> sev3
"""


def rules():
    compiled, problems = load_rules({"t.rules": TEXT})
    assert problems == []
    return compiled


def test_the_plan_is_versioned_plain_json_with_each_rules_parts():
    plan = compile_plan(rules())
    assert orjson.loads(orjson.dumps(plan)) == plan  # plain data: survives JSON unchanged
    assert plan["plan_version"] == PLAN_VERSION == _native.PLAN_VERSION
    spike, slow, users, wrong = plan["rules"]
    assert spike["metric"] == {
        "func": "rate",
        "accumulates": "flagged",
        "quantile": None,
        "rate": True,
        "additive": False,
        "arg": ["flags", "hallucination"],
        "source": "inference",
        "label": None,
    }
    assert spike["condition"] == {
        "op": ">",
        "reference": "baseline",
        "threshold": None,
        "factor": 3.0,
        "population": None,
        "population_fallback": False,  # `baseline(S, population)`: not here
        "prior": None,  # `baseline(S, prior P)`: none here
        "trim": 0.0,  # `baseline(S, median | trimmed P%)`: none here
    }
    assert spike["window"]["window_ms"] == 600_000 and spike["window"]["baseline_ms"] > 0
    assert spike["window"]["warmup_ms"] == 0  # `baseline(S, warmup D)`: none here
    assert spike["window"]["slices_every_ms"] == 0  # the span pooled
    assert spike["where"] == {
        "and": [
            {"and": [{"compare": ["==", ["service"], "chat"]}, {"not": {"truthy": ["flags", "test"]}}]},
            {"or": [{"compare": [">=", ["latency_ms"], 200]}, {"in": [["tenant"], ["a", "b"], False]}]},
        ]
    }
    assert spike["actions"]["severity"] == 2 and spike["actions"]["notify"] == ["oncall"]
    assert spike["actions"]["contains"][0]["action"] == "fallback"
    assert slow["metric"]["quantile"] == 0.95 and slow["options"]["min_events"] == 10
    assert users["condition"]["reference"] == "population" and users["condition"]["population"] == 5.0
    assert wrong["metric"]["source"] == "report" and wrong["metric"]["label"] == "wrong"
    assert wrong["options"]["confidence"] == 0.99


def test_the_python_predicate_is_built_from_the_plan_data():
    (spike, *_) = rules()
    predicate = compile_where(spike.where_plan)
    cases = [
        {"service": "chat", "flags": {}, "latency_ms": 250, "tenant": "z"},
        {"service": "chat", "flags": {"test": True}, "latency_ms": 250},
        {"service": "chat", "flags": {}, "latency_ms": 100, "tenant": "b"},
        {"service": "chat", "flags": {}, "latency_ms": 100, "tenant": "c"},
        {"service": "mail", "latency_ms": 900},
    ]
    assert [spike.where(c) for c in cases] == [predicate(c) for c in cases] == [True, False, True, False, False]


def test_no_rule_text_is_parsed_again_for_the_native_engine(monkeypatch):
    """The native engine's own intake (its plan), in every pass."""
    from firebreak.dsl.grammar import lark_parser

    compiled = rules()
    parsed = []
    real = lark_parser().parse
    monkeypatch.setattr(lark_parser(), "parse", lambda *a, **k: parsed.append(a) or real(*a, **k))
    assert load_rules({"t.rules": TEXT})[1] == [] and len(parsed) == 4  # the spy sees a compile's parses
    parsed.clear()
    engine = NativeEngine(compiled)
    assert parsed == []
    assert set(engine.placement().values()) == {"native"}
    fed = engine.feed_events([event(f"e{i}", i * 1000, model="m", service="chat") for i in range(50)])
    assert fed.events == 50


def test_the_crate_refuses_another_plan_version_with_a_clear_message():
    plan = compile_plan(rules())
    assert _native.Core.check_plan(plans_json(rules())) is None
    other = orjson.dumps({**plan, "plan_version": PLAN_VERSION + 1})
    why = _native.Core.check_plan(other)
    assert why == (
        f"rule plan version {PLAN_VERSION + 1}: this native engine reads version {PLAN_VERSION} "
        "(rebuild it with the Python package: pip install -e .)"
    )
    with pytest.raises(ValueError, match=f"rule plan version {PLAN_VERSION + 1}"):
        _native.Core(other, 0, None)
    assert "plan_version" in _native.Core.check_plan(b"[]")  # the old layout: a list of rules
    assert "plan_version" in _native.Core.check_plan(orjson.dumps({"rules": plan["rules"]}))


def test_the_crate_refuses_a_metric_it_does_not_run_by_name():
    plan = compile_plan(rules())
    slow = plan["rules"][1]
    bad = {**slow, "metric": {**slow["metric"], "func": "p42"}}
    why = _native.Core.check_plan(orjson.dumps({**plan, "rules": [bad]}))
    assert "unknown variant `p42`" in why and "`p99`" in why
    odd = {**slow, "metric": {**slow["metric"], "quantile": 0.5}}  # p95 that says it keeps p50
    assert "is not a kind this engine runs" in _native.Core.check_plan(orjson.dumps({**plan, "rules": [odd]}))
