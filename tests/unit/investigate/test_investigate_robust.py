"""Investigations on incidents the ranking was not tuned for (benchmarks/investigate_families.py:
logs built unlike firebreak.synthetic, with planted causes and near decoys): units, values every
event carries, the incident's own group, slow drifts. Each test failed on the scoring before."""

from __future__ import annotations

import functools
import random
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[3] / "benchmarks"))

import investigate_families  # noqa: E402
from corekit import run as run_rules
from firebreak.core import Event, parse_ts  # noqa: E402
from firebreak.dsl import load_rules  # noqa: E402
from firebreak.investigate import Options, Selection, investigate, list_incidents  # noqa: E402
from firebreak.investigate.anomaly import mass_of, slope_start  # noqa: E402
from firebreak.investigate.contributors import rank_contributors  # noqa: E402

# the incidents come from the engine under test (tests/conftest.py)
pytestmark = pytest.mark.usefixtures("rule_engine")

MINUTE = 60_000


@functools.cache
def planted(family: str, seed: int) -> tuple[investigate_families.Log, dict]:
    log = investigate_families.build(family, seed)
    truth = log.truths[0]
    records = run_rules(log.rules, log.events)
    tied = [
        i
        for i in list_incidents(records)
        if i["rule"] == truth.rule
        and i["group"] == truth.group
        and truth.onset_ts - 10 * MINUTE <= parse_ts(i["opened"]) <= truth.end_ts
    ]
    assert tied, f"{family} seed {seed}: the planted incident was not detected"
    report = investigate(
        log.rules, log.events, Selection(incident_id=tied[0]["incident_id"]), Options(suggest=False), records=records
    )
    return log, report.to_json()


def by_id(report: dict) -> dict[str, dict]:
    return {c["event_id"]: c for c in report["suspected_causes"]}


@pytest.mark.parametrize("seed", [1, 2])
def test_a_cost_explosion_in_a_service_that_costs_cents_is_found(seed):
    """autocomplete costs a twentieth of a cent per call: its 6x rise is cents per window, under
    any floor in dollars. Its own service tops the contributors and the change naming it ranks
    first — above a config change on an expensive service made a minute later."""
    log, report = planted("cheap_service", seed)
    top = report["contributors"][0]
    assert (top["dimension"], top["value"]) == ("service", "autocomplete")
    assert top["score"] > 0.6
    causes = by_id(report)
    assert report["suspected_causes"][0]["event_id"] == log.truths[0].cause_event_id
    assert causes["cheap_service-cause"]["match"] > 0.5
    assert causes["decoy-near"]["match"] == 0
    assert causes["cheap_service-cause"]["score"] > causes["decoy-near"]["score"] + 0.2


def test_the_ranking_does_not_depend_on_the_metric_unit():
    """The same events with costs in dollars and in thousandths of a cent rank the same values
    with the same scores: nothing in the scoring is measured in the metric's unit."""
    log, _ = planted("cheap_service", 1)
    truth = log.truths[0]
    rules, _ = load_rules({"r.rules": "rule spend:\n  sum(cost_usd) > 3x baseline over 15m by service -> sev2"})
    rule = rules[0]
    inside = [e for e in log.events if e.type == "inference" and e.data["service"] == "autocomplete"]
    before = [e for e in inside if truth.onset_ts - 90 * MINUTE <= e.ts < truth.onset_ts]
    during = [e for e in inside if truth.onset_ts <= e.ts < truth.onset_ts + 20 * MINUTE]

    def scaled(events: list[Event], factor: float) -> list[Event]:
        return [Event(e.event_id, e.ts, e.type, {**e.data, "cost_usd": e.data["cost_usd"] * factor}) for e in events]

    def ranking(factor: float) -> list[tuple[str, str, float]]:
        b, d = scaled(before, factor), scaled(during, factor)
        rows = rank_contributors(rule, mass_of(rule, b), d, b, 20 * MINUTE, 90 * MINUTE, frozenset({"service"}))
        return [(r.dimension, r.value, r.score) for r in rows]

    assert ranking(1.0)
    assert ranking(1.0) == ranking(1e-5) == ranking(1000.0)


@pytest.mark.parametrize(("family", "seed"), [("shared_version", 1), ("shared_version", 2)])
def test_a_value_every_event_carries_explains_nothing(family, seed):
    """Every event of every model carries model_version 2026-03-01: it is no contributor, and a
    model update naming only that version 2 minutes before onset does not match the anomaly."""
    log, report = planted(family, seed)
    shared = "2026-03-01"
    assert all(e.data["model_version"] == shared for e in log.events if e.type == "inference")
    assert ("model_version", shared) not in {(c["dimension"], c["value"]) for c in report["contributors"]}
    assert by_id(report)["decoy-shared-version"]["match"] == 0
    top = report["contributors"][0]
    assert (top["dimension"], top["value"]) in log.truths[0].scope
    assert report["suspected_causes"][0]["event_id"] == log.truths[0].cause_event_id


def test_rank_contributors_against_the_rest_of_the_population():
    """Two tenants, a shared version, a diffuse anomaly: tenant a's flag rate rose 3x, b's
    1.5x. The shared version's own past says 2.25x — but it has no complement: no excess."""
    rng = random.Random(7)
    rules, _ = load_rules({"r.rules": "rule leak:\n  rate(pii) > 0.01 over 10m -> sev2"})
    rule = rules[0]

    def events(lo: int, rates: dict[str, float]) -> list[Event]:
        out = []
        for i in range(4000):
            tenant = "a" if i % 2 else "b"
            data = {"tenant": tenant, "model_version": "shared", "flags": {"pii": rng.random() < rates[tenant]}}
            out.append(Event(f"e{lo}-{i}", lo + i, "inference", data))
        return out

    before, during = events(0, {"a": 0.02, "b": 0.02}), events(10_000, {"a": 0.06, "b": 0.03})
    rows = rank_contributors(rule, mass_of(rule, before), during, before, 4000, 4000)
    assert [(r.dimension, r.value) for r in rows][:1] == [("tenant", "a")]
    assert "model_version" not in {r.dimension for r in rows}


@pytest.mark.parametrize("seed", [2, 4])
def test_a_change_naming_only_the_incidents_group_matches_it(seed):
    """Hallucinations across region=eu (or one service): the rule groups by `region`, a field
    of ours. The change naming only that region ranks first with a strong match; the same
    change on another region a minute later, and a model update, do not match."""
    log, report = planted("group_only", seed)
    truth = log.truths[0]
    assert "region" in truth.group
    causes = by_id(report)
    assert report["suspected_causes"][0]["event_id"] == truth.cause_event_id
    assert causes[truth.cause_event_id]["match"] > 0.5
    assert causes["decoy-near"]["match"] == 0
    top = report["contributors"][0]
    assert (top["dimension"], top["value"]) == next(iter(truth.group.items()))


@pytest.mark.parametrize("seed", [1, 3])
def test_inside_the_group_a_sibling_change_matches_only_where_it_applies(seed):
    """A PII leak across all of a tenant's services. A prompt change on one of that tenant's
    services names the tenant too, but changed only where the two meet: it matches far less
    than the change naming the tenant, which ranks first."""
    log, report = planted("tenant_leak", seed)
    truth = log.truths[0]
    causes = by_id(report)
    true, sibling = causes[truth.cause_event_id], causes["decoy-sibling"]
    assert true["rank"] == 1
    assert sibling["match"] < 0.6 * true["match"]
    assert " and " in sibling["why"]
    # A tenant's busiest users receive most of its leak: that is no attack.
    attack = [c for c in report["suspected_causes"] if c["kind"] == "attack"]
    assert not attack or attack[0]["score"] < true["score"] - 0.2


def test_contributors_of_a_grouped_rule_are_found_inside_the_group():
    """Quality by service, drifting in one template: the template tops the contributors,
    computed inside the service; no other service's value is listed."""
    log, report = planted("ramp", 1)
    truth = log.truths[0]
    top = report["contributors"][0]
    assert (top["dimension"], top["value"]) in truth.scope and top["dimension"] != "service"
    services = {c["value"] for c in report["contributors"] if c["dimension"] == "service"}
    assert services <= {truth.group["service"]}


@pytest.mark.parametrize("seed", [2, 3])
def test_a_slow_drift_is_dated_where_its_ramp_begins(seed):
    """Quality slides linearly over 3 h (seed 2) or 4 h (seed 3) and the rule fires an hour or
    more in. The broken-stick fit dates the start within 15% of the ramp; a config change on the
    same template 45% into the ramp (after the start) ranks below the change that began it."""
    log, report = planted("ramp", seed)
    truth = log.truths[0]
    assert truth.ramp_ms >= 180 * MINUTE
    assert report["anomaly"]["shape"] == "slope"
    error = parse_ts(report["anomaly"]["estimated_start"]) - truth.onset_ts
    assert abs(error) <= 0.15 * truth.ramp_ms
    assert report["suspected_causes"][0]["event_id"] == truth.cause_event_id
    assert by_id(report)["decoy-fix-attempt"]["rank"] > 1


def test_the_fit_tells_a_slope_from_a_step():
    rules, _ = load_rules({"r.rules": "rule q:\n  avg(scores.quality) < 0.8 over 15m -> sev3"})
    rule = rules[0]
    rng = random.Random(3)

    def series(shape) -> list[Event]:
        quality = [rng.gauss(0.9 - shape(i * 10_000), 0.05) for i in range(6 * 240)]
        return [Event(f"e{i}", i * 10_000, "inference", {"scores": {"quality": q}}) for i, q in enumerate(quality)]

    ramp_from = 100 * MINUTE
    ramp = series(lambda t: 0.3 * max(0, t - ramp_from) / (120 * MINUTE))
    step = series(lambda t: 0.2 if t >= ramp_from else 0.0)
    mass = mass_of(rule, ramp[:300])
    fit = slope_start(mass, ramp, MINUTE, 0, 200 * MINUTE)
    assert fit is not None and fit.is_slope
    assert abs(fit.start - ramp_from) <= 0.15 * 120 * MINUTE
    fit = slope_start(mass, step, MINUTE, 0, 120 * MINUTE)
    assert fit is None or not fit.is_slope
