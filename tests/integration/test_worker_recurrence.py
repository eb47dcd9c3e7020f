"""Issue 32 in the live worker: a recurrence six minutes after a resolve opens an incident, and
the records equal a replay's — also when the worker is killed between the resolve and the
recurrence, so that the spans kept out of the baseline come back from its checkpoint."""

from __future__ import annotations

import time

import pytest
from firebreak.core import format_ts, parse_ts, run_events, validate_event
from firebreak.dsl import load_rules
from test_worker_live import await_records, before, clocks, feed, worker_setup
from worker_harness import publish, read_all, run, wait_for

pytestmark = pytest.mark.kafka

RULES = """
rule spike:
  rate(hallucination) > 3x baseline over 10m by model -> sev2 contain fallback(model="safe")
"""
T0 = parse_ts("2026-03-01T00:00:00Z")
MIN, HOUR = 60_000, 3_600_000
LATENESS_MS = 2_000
# as tests/unit/core/test_core_recurrence.py: the first spike's incident resolves at 3h29m, the
# recurrence starts six minutes later
SPIKES = ((2 * HOUR + 28 * MIN, 3 * HOUR + 11 * MIN), (3 * HOUR + 35 * MIN, 4 * HOUR + 5 * MIN))


def traffic() -> list[dict]:
    events = []
    for model in ("m-a", "m-b"):
        for i, at in enumerate(range(0, 4 * HOUR + 30 * MIN, 2_000)):
            spike = model == "m-a" and any(a <= at < b for a, b in SPIKES)
            events.append(
                {
                    "event_id": f"{model}-{i}",
                    "ts": format_ts(T0 + at),
                    "service": "support",
                    "model": model,
                    "tenant": f"t{i % 8}",
                    "user": f"u{i % 97}",
                    "flags": {"hallucination": i % 5 == 0 if spike else i % 50 == 0},
                }
            )
    events.sort(key=lambda e: (e["ts"], e["event_id"]))
    return events


def replay(events: list[dict], clock_events: list[dict]) -> list[dict]:
    rules, problems = load_rules({"live.rules": RULES})
    assert not problems
    return run_events(rules, [validate_event(e) for e in events + clock_events], lateness_ms=LATENESS_MS)


@pytest.fixture
def setup(kafka_bootstrap, unique_topic, tmp_path, create_topic):
    yield from worker_setup(kafka_bootstrap, unique_topic, tmp_path, create_topic, RULES)


def opened_at(records: list[dict]) -> list[int]:
    # the recurrence comes within the policy's reopen_within of the resolve: the same incident
    # reopens (flapping, docs/response.md) — an opening either way
    return sorted(parse_ts(r["ts"]) - T0 for r in records if r["type"] in ("incident.opened", "incident.reopened"))


def test_the_worker_opens_the_recurrence_as_replay_does_across_a_kill(kafka_bootstrap, setup):
    topics, start = setup
    events = traffic()
    clock = clocks(events)
    expected = replay(events, [e for _, e in clock])
    assert opened_at(expected) == [2 * HOUR + 31 * MIN, 3 * HOUR + 38 * MIN]  # the recurrence: 3 minutes, as the first
    cutoff = max(parse_ts(e["ts"]) for e in events) + 2 * HOUR
    worker = start(lateness="2s")
    worker.wait_ready()
    # up to just after the resolve: the worker checkpoints the span kept out of the baseline
    cut = next(i for i, e in enumerate(events) if parse_ts(e["ts"]) >= T0 + 3 * HOUR + 31 * MIN)
    run(publish(kafka_bootstrap, topics.events, events[:cut]))
    wait_for(lambda: worker.metrics()["firebreak_events_total"] >= cut, 120, "the first part", [worker])
    wait_for(
        lambda: any(
            r["type"] == "incident.resolved" for r in run(read_all(kafka_bootstrap, topics.incidents, settle_s=0.5))
        ),
        60,
        "the first incident's resolve",
        [worker],
    )
    time.sleep(8)  # a checkpoint or two (every 3s) after the resolve
    worker.kill()
    restarted = start(lateness="2s")
    feed(kafka_bootstrap, topics, events[cut:], clock)
    incidents, containment = await_records(kafka_bootstrap, topics, expected, [restarted], timeout=240)
    assert before(incidents + containment, cutoff) == before(expected, cutoff)
    assert opened_at([r for r in incidents if parse_ts(r["ts"]) < cutoff]) == opened_at(expected)
