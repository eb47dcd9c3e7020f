"""Root causes as sets of dimension-value combinations (engine/firebreak/investigate/rootcause.py),
and the order of the contributors inside a group."""

from __future__ import annotations

import random

import pytest
from corekit import run as run_rules
from firebreak.core import format_ts, parse_ts, validate_event
from firebreak.dsl import load_rules
from firebreak.investigate import Options, Selection, investigate, list_incidents
from firebreak.investigate.markdown import render_markdown
from firebreak.investigate.rootcause import discover, search, tabulate

DIMS = ("model", "region", "tenant", "service", "user")


def rows(seed: int, n: int, rate_of, cards=(4, 3, 6, 5, 400)) -> list[tuple[list[str], float]]:
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        values = [f"{d}{rng.randrange(k)}" for d, k in zip(DIMS, cards, strict=True)]
        out.append((values, 1.0 if rng.random() < rate_of(values) else 0.0))
    return out


def found(now, before, ratio=True) -> set[frozenset]:
    return {frozenset(c.pairs) for c in search(tabulate(DIMS, now, before, ratio)).causes}


def test_a_combination_is_found_as_itself_not_as_its_single_values():
    before = rows(1, 30_000, lambda v: 0.02)
    now = rows(2, 30_000, lambda v: 0.12 if v[0] == "model1" and v[1] == "region2" else 0.02)
    assert found(now, before) == {frozenset({("model", "model1"), ("region", "region2")})}


def test_several_causes_at_once():
    def rate(v):
        if v[0] == "model1" and v[1] == "region2":
            return 0.12
        if v[2] == "tenant3":
            return 0.10
        return 0.02

    before = rows(3, 30_000, lambda v: 0.02)
    now = rows(4, 30_000, rate)
    assert found(now, before) == {
        frozenset({("model", "model1"), ("region", "region2")}),
        frozenset({("tenant", "tenant3")}),
    }


def test_a_cause_on_a_whole_value_is_not_narrowed():
    """Every region of model1 rose alike: the cause is model1, not model1 in one region."""
    before = rows(5, 30_000, lambda v: 0.02)
    now = rows(6, 30_000, lambda v: 0.08 if v[0] == "model1" else 0.02)
    assert found(now, before) == {frozenset({("model", "model1")})}


def test_a_fundamental_measure_traffic_of_one_slice():
    """count(): the events of tenant2 AND service4 tripled (a volume, not a rate)."""
    before = [(v, 1.0) for v, _ in rows(7, 30_000, lambda v: 0)]
    extra = [(v, 1.0) for v, _ in rows(8, 60_000, lambda v: 0) if v[2] == "tenant2" and v[3] == "service4"]
    now = [(v, 1.0) for v, _ in rows(9, 30_000, lambda v: 0)] + extra[: len(extra) // 1]
    assert found(now, before, ratio=False) == {frozenset({("tenant", "tenant2"), ("service", "service4")})}


def test_high_cardinality_dimensions_are_capped_and_say_so():
    """400 users: only the values of largest excess are candidates; one user's spike is still found."""
    before = rows(10, 30_000, lambda v: 0.02)
    now = rows(11, 30_000, lambda v: 0.9 if v[4] == "user7" else 0.02)
    table = tabulate(DIMS, now, before, True)
    result = search(table)
    assert result.capped == ("user",)
    assert max(len(names) for names in table.names) <= 30
    assert {frozenset(c.pairs) for c in result.causes} == {frozenset({("user", "user7")})}


def test_no_cause_in_noise():
    before = rows(12, 30_000, lambda v: 0.03)
    now = rows(13, 30_000, lambda v: 0.03)
    assert found(now, before) == set()


def test_every_dimension_the_events_carry_is_considered():
    data = [
        {
            "event_id": "e1",
            "ts": 1,
            "model": "m",
            "prompt": "raw text",
            "cost_usd": 0.1,
            "x": {"region": "eu", "retrieval_index": "kb-7", "weight": 3},
            "flags": {"pii": True},
            "client_version": "1.2.3",
        }
    ]
    dims = discover(data, first=("model", "tenant"))
    assert dims[:2] == ("model", "tenant")
    assert {"x.region", "x.retrieval_index", "client_version"} <= set(dims)
    assert not {"prompt", "event_id", "cost_usd", "flags.pii", "x.weight"} & set(dims)


# --- through the investigation -----------------------------------------------------------------

T0 = parse_ts("2026-05-04T00:00:00Z")
RULES = """
rule by_user:
  rate(hallucination) > 0.3 over 10m by user min 20 events -> sev2

rule overall:
  rate(hallucination) > 0.06 over 10m min 200 events -> sev2
"""


def log(seed: int = 0) -> list:
    """Two hours, 4 events/s, 40 users, 90% of calls to claude-x, regions as an `x` attribute.
    From 90 min: u-attacker-17 (3% of the calls, 95% of its own on claude-x) gets hallucinations
    in 60% of its answers, and claude-x in region eu in 25% (2% before)."""
    rng = random.Random(seed)
    events = []
    for i in range(2 * 3600 * 4):
        ts = T0 + i * 250
        late = i >= 90 * 60 * 4
        attacker = late and rng.random() < 0.03
        user = "u-attacker-17" if attacker else f"u-{rng.randrange(40)}"
        model = "claude-x" if rng.random() < (0.95 if attacker else 0.9) else "gpt-y"
        region = rng.choice(("eu", "us", "ap"))
        p = 0.02
        if attacker:
            p = 0.6
        elif late and model == "claude-x" and region == "eu":
            p = 0.25
        events.append(
            {
                "event_id": f"e{i}",
                "ts": format_ts(ts),
                "type": "inference",
                "model": model,
                "service": "chat",
                "tenant": f"t{rng.randrange(4)}",
                "user": user,
                "x": {"region": region},
                "flags": {"hallucination": rng.random() < p},
            }
        )
    return [validate_event(e) for e in events]


def report_of(rule_index: int, group: dict | None) -> dict:
    rules, problems = load_rules({"t.rules": RULES})
    assert not problems
    events = log()
    records = run_rules(rules, events)
    name = rules[rule_index].name
    tied = [i for i in list_incidents(records) if i["rule"] == name and (group is None or i["group"] == group)]
    assert tied, "the planted incident was not detected"
    report = investigate(
        rules, events, Selection(incident_id=tied[0]["incident_id"]), Options(suggest=False), records=records
    )
    return report


@pytest.mark.usefixtures("rule_engine")
def test_a_by_user_incident_leads_with_the_user_and_lists_no_lift_1_row():
    report = report_of(0, {"user": "u-attacker-17"})
    rows = report.contributors
    assert (rows[0].dimension, rows[0].value) == ("user", "u-attacker-17")
    assert all(r.lift >= 1.1 for r in rows)
    assert ("model", "claude-x") not in {(r.dimension, r.value) for r in rows[:1]}
    roots = report.root_causes
    assert roots is not None and roots.causes
    first = roots.causes[0]
    assert {(v.dimension, v.value) for v in first.values} == {("user", "u-attacker-17")}
    assert "x.region" in roots.dimensions and "user" in roots.capped or "user" in roots.dimensions


@pytest.mark.usefixtures("rule_engine")
def test_a_combination_with_an_x_attribute_is_a_root_cause_in_every_format():
    report = report_of(1, None)
    causes = {frozenset((v.dimension, v.value) for v in c.values) for c in report.root_causes.causes}
    assert frozenset({("model", "claude-x"), ("x.region", "eu")}) in causes
    js = report.to_json()
    assert list(js).index("root_causes") == list(js).index("suspected_causes") + 1
    assert js["root_causes"]["measure"] == "derived"
    text = render_markdown(report)
    assert "## Root causes" in text and "x.region=eu" in text


# --- the native tallies against the Python reference ---------------------------------------------


def test_native_columns_give_the_python_references_numbers_and_causes():
    """firebreak._native.Columns (native/src/rootcause.rs) against _PyColumns: the same tallies,
    float for float, after capping a high-cardinality dimension and removing causes, and so
    the same search — on a fundamental measure with lognormal masses and missing values."""
    from firebreak._native import Columns  # noqa: F401 (the extension is built with the package)

    rng = random.Random(21)

    def cost_rows(n: int, hot: bool) -> list:
        out = []
        for _ in range(n):
            v = [
                f"m{rng.randrange(4)}",
                rng.choice(("eu", "us", None)),
                f"t{rng.randrange(6)}",
                "s",
                f"u{int(rng.paretovariate(1.2))}",
            ]
            w = rng.lognormvariate(-4, 0.6) * (5 if hot and v[0] == "m1" and v[1] == "eu" else 1)
            out.append((v, w))
        return out

    before, now = cost_rows(6000, False), cost_rows(6000, True)
    py = tabulate(DIMS, now, before, False, scale=1.0, max_values=8, native=False)
    rs = tabulate(DIMS, now, before, False, scale=1.0, max_values=8, native=True)
    assert type(py.columns).__name__ == "_PyColumns" and type(rs.columns).__name__ == "Columns"
    assert py.names == rs.names and py.capped == rs.capped == ("user",)
    for pattern in ((), ((0, 1),), ((0, 1), (1, 0)), ((4, 0), (2, 3))):
        assert py.tally(pattern) == rs.tally(pattern)
        assert py.marginals(pattern) == rs.marginals(pattern)
    py.remove(((0, 1),))
    rs.remove(((0, 1),))
    assert py.marginals(()) == rs.marginals(())
    a, b = search(py), search(rs)
    assert a == b and {frozenset(c.pairs) for c in a.causes} == {frozenset({("model", "m1"), ("region", "eu")})}
