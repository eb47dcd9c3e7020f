"""`firebreak worker` on the real broker: same incidents and cases as replay, scale-out, kill -9, dead letters."""

from __future__ import annotations

import random
import time

import orjson
import pytest
from firebreak.adapters.case_replay import with_cases
from firebreak.core import format_ts, parse_ts, run_events, validate_event
from firebreak.dsl import load_rules
from worker_harness import Topics, Worker, publish, publish_raw, read_all, run, wait_for

pytestmark = pytest.mark.kafka

RULES = """
rule spike:
  rate(hallucination) > 3x baseline over 10m by model -> sev2 contain fallback(model="safe")
rule leak:
  count(pii) >= 1 over 1m by tenant -> sev2 contain disable_feature
rule global_hallucinations:
  count(hallucination) > 3x baseline over 10m -> sev3
rule jailbreaker:
  rate(jailbreak) > 0.5 over 5m by user min 5 events -> sev3 contain block_user
"""
T0 = parse_ts("2026-03-01T00:00:00Z")
MIN = 60_000
PARTITIONS = 4
LATENESS_MS = 2_000


def scenario(minutes: int = 90, per_second: float = 3.0, seed: int = 11, t0: int = T0) -> list[dict]:
    """Tenants, models and users; a hallucination spike on model m-a at 60–80 m, a pii
    leak on tenant t3 at 70 m, two users of tenant t9 jailbreaking at 50 m (two `by user`
    incidents, one case: their evidence is all t9's — docs/response.md#cases)."""
    rng = random.Random(seed)
    events = []
    step = int(1000 / per_second)
    for i, at in enumerate(range(0, minutes * MIN, step)):
        model = rng.choice(["m-a", "m-b", "m-c"])
        spike = model == "m-a" and 60 * MIN <= at < 80 * MIN
        user = f"u{rng.randrange(200)}"
        jail = 50 * MIN <= at < 53 * MIN and i % 4 == 0
        tenant = f"t{rng.randrange(8)}" if not (70 * MIN <= at < 71 * MIN and i % 50 == 0) else "t3"
        if jail:
            user, tenant = ("mallory" if i % 8 == 0 else "trudy"), "t9"
        events.append(
            {
                "event_id": f"e{i}",
                "ts": format_ts(t0 + at),
                "service": "support",
                "model": model,
                "tenant": tenant,
                "user": user,
                "latency_ms": rng.randint(200, 900),
                "flags": {
                    "hallucination": rng.random() < (0.3 if spike else 0.02),
                    "pii": 70 * MIN <= at < 71 * MIN and i % 50 == 0,
                    "jailbreak": jail,
                },
                "prompt": "raw prompt text must never reach a record",
            }
        )
    return events


CLOCK_STEP_MS = 45 * MIN  # under the worker's maximum skew (1h): each step is taken, none dead-lettered


def clocks(events: list[dict], ahead_ms: int = 3 * 3_600_000) -> list[tuple[int, dict]]:
    """Change events on every partition up to ``ahead_ms`` after the end, so every partition's
    watermark passes it — in steps of CLOCK_STEP_MS, as one jump further than the maximum skew
    would be refused by stage 1 (docs/live.md, "Event time across partitions")."""
    last = max(parse_ts(e["ts"]) for e in events)
    steps = -(-ahead_ms // CLOCK_STEP_MS)
    return [
        (p, {"event_id": f"clock-{p}-{k}", "ts": last + ahead_ms * k // steps, "type": "change", "kind": "deploy"})
        for k in range(1, steps + 1)
        for p in range(PARTITIONS)
    ]


def replay(events: list[dict], clock_events: list[dict]) -> list[dict]:
    rules, problems = load_rules({"live.rules": RULES})
    assert not problems
    return run_events(rules, [validate_event(e) for e in events + clock_events], lateness_ms=LATENESS_MS)


def replay_cases(expected: list[dict], cutoff: int) -> list[dict]:
    """The case records `replay --cases` gives before ``cutoff`` (the worker's case stage, too,
    reads only records: where a `by user` incident's evidence concentrates is on the record)."""
    rules, _ = load_rules({"live.rules": RULES})
    return [r for r in with_cases(expected, rules) if r["type"].startswith("case.") and parse_ts(r["ts"]) < cutoff]


def live_cases(bootstrap: str, topics: Topics, expected: list[dict], cutoff: int, workers: list[Worker]) -> list[dict]:
    """The case stage's records on the incidents topic before ``cutoff``, once as many as ``expected`` are there."""
    got: list[dict] = []

    def arrived() -> bool:
        records = run(read_all(bootstrap, topics.incidents, settle_s=0.5, cases=True))
        got[:] = [r for r in records if r["type"].startswith("case.") and parse_ts(r["ts"]) < cutoff]
        return len(got) >= len(expected)

    wait_for(arrived, 120, "the case records on the incidents topic", workers)
    return got


def assert_one_attack_case(cases: list[dict]) -> None:
    """Both jailbreaking users of t9 (two `by user` incidents) are in one case on tenant=t9."""
    attack = [r for r in cases if r["category"] == "adversarial"]
    assert [r["scope"] for r in attack if r["type"] == "case.opened"] == [{"tenant": "t9"}]
    assert len({r["incident_id"] for r in attack if r["type"] != "case.resolved"}) == 2


def by_case(records: list[dict]) -> dict[str, list[bytes]]:
    """Each case's records in order (a case's records share a key: one partition, in order)."""
    out: dict[str, list[bytes]] = {}
    for record in records:
        out.setdefault(record["case_id"], []).append(orjson.dumps(record))
    return out


def before(records: list[dict], cutoff: int) -> list[bytes]:
    return sorted(orjson.dumps(r) for r in records if parse_ts(r["ts"]) < cutoff)


def worker_setup(kafka_bootstrap, unique_topic, tmp_path, create_topic, rules_text: str):
    """The body of a `setup` fixture: fresh topics, the rules in a file, and `start(**kwargs)`
    to run workers on them (stopped afterwards)."""
    topics = Topics(unique_topic("fb"))
    run(create_topic(topics.events, partitions=PARTITIONS))
    rules = tmp_path / "live.rules"
    rules.write_text(rules_text)
    workers: list[Worker] = []

    def start(**kwargs) -> Worker:
        worker = Worker(topics, kafka_bootstrap, rules, tmp_path, **kwargs).start()
        workers.append(worker)
        return worker

    yield topics, start
    for worker in workers:
        worker.stop()


@pytest.fixture
def setup(kafka_bootstrap, unique_topic, tmp_path, create_topic):
    yield from worker_setup(kafka_bootstrap, unique_topic, tmp_path, create_topic, RULES)


def feed(bootstrap: str, topics: Topics, events: list[dict], clock: list[tuple[int, dict]] = ()) -> None:
    run(publish(bootstrap, topics.events, events))
    run(publish_raw(bootstrap, topics.events, [(p, orjson.dumps(e)) for p, e in clock]))


def await_records(
    bootstrap: str, topics: Topics, expected: list[dict], workers: list[Worker], timeout: float = 120
) -> tuple[list[dict], list[dict]]:
    want = {(r["type"], r.get("incident_id"), r["ts"]) for r in expected}
    got: dict = {}

    def arrived() -> bool:
        got["incidents"] = run(read_all(bootstrap, topics.incidents, settle_s=0.5))
        got["containment"] = run(read_all(bootstrap, topics.containment, settle_s=0.5))
        seen = {(r["type"], r.get("incident_id"), r["ts"]) for r in got["incidents"] + got["containment"]}
        return want <= seen

    wait_for(arrived, timeout, "the replay's records on the output topics", workers)
    time.sleep(2)  # anything extra would show up now
    return run(read_all(bootstrap, topics.incidents)), run(read_all(bootstrap, topics.containment))


def test_one_worker_emits_what_replay_emits(kafka_bootstrap, setup):
    topics, start = setup
    events = scenario()
    clock = clocks(events)
    expected = replay(events, [e for _, e in clock])
    cutoff = max(parse_ts(e["ts"]) for e in events) + 2 * 3_600_000
    assert {r["rule"] for r in expected if r["type"] == "incident.opened"} == {
        "spike",
        "leak",
        "global_hallucinations",
        "jailbreaker",
    }
    worker = start()
    worker.wait_ready()
    feed(kafka_bootstrap, topics, events, clock)
    incidents, containment = await_records(kafka_bootstrap, topics, expected, [worker])
    cases = replay_cases(expected, cutoff)
    assert {r["type"] for r in cases} == {"case.opened", "case.updated", "case.resolved"}
    assert_one_attack_case(cases)
    assert by_case(live_cases(kafka_bootstrap, topics, cases, cutoff, [worker])) == by_case(cases)
    assert before(incidents + containment, cutoff) == before(expected, cutoff)
    assert all(r["type"].startswith("incident.") for r in incidents)
    assert all(r["type"].startswith("containment.") for r in containment)
    assert b"raw prompt text" not in b"".join(orjson.dumps(r) for r in incidents + containment)
    metrics = worker.metrics()
    assert metrics["firebreak_events_total"] == len(events) + len(clock)
    assert metrics["firebreak_late_events_total"] == 0


def test_two_workers_on_four_partitions_emit_what_replay_emits(kafka_bootstrap, setup):
    topics, start = setup
    events = scenario(seed=12)
    clock = clocks(events)
    expected = replay(events, [e for _, e in clock])
    cutoff = max(parse_ts(e["ts"]) for e in events) + 2 * 3_600_000
    first, second = start(), start()
    first.wait_ready()
    second.wait_ready()
    feed(kafka_bootstrap, topics, events, clock)
    incidents, containment = await_records(kafka_bootstrap, topics, expected, [first, second])
    cases = replay_cases(expected, cutoff)
    assert by_case(live_cases(kafka_bootstrap, topics, cases, cutoff, [first, second])) == by_case(cases)
    assert before(incidents + containment, cutoff) == before(expected, cutoff)
    shares = [w.metrics()["firebreak_events_total"] for w in (first, second)]
    assert sum(shares) == len(events) + len(clock) and min(shares) > 0  # both did work


def test_kill_9_mid_stream_loses_and_duplicates_nothing(kafka_bootstrap, setup):
    topics, start = setup
    events = scenario(seed=13)
    clock = clocks(events)
    expected = replay(events, [e for _, e in clock])
    cutoff = max(parse_ts(e["ts"]) for e in events) + 2 * 3_600_000
    worker = start()
    worker.wait_ready()
    cut = int(len(events) * 0.7)  # after the spike opened, before it resolved
    run(publish(kafka_bootstrap, topics.events, events[:cut]))
    wait_for(lambda: worker.metrics()["firebreak_events_total"] >= cut * 0.9, 60, "most of the first part", [worker])
    worker.kill()
    restarted = start()
    feed(kafka_bootstrap, topics, events[cut:], clock)
    incidents, containment = await_records(kafka_bootstrap, topics, expected, [restarted])
    opened = [r["incident_id"] for r in incidents if r["type"] == "incident.opened"]
    assert len(opened) == len(set(opened)), "an incident was opened twice"
    cases = replay_cases(expected, cutoff)
    assert_one_attack_case(cases)
    live = live_cases(kafka_bootstrap, topics, cases, cutoff, [restarted])
    assert by_case(live) == by_case(cases), "cases lost, sent twice or in another order"
    assert before(incidents + containment, cutoff) == before(expected, cutoff)


def test_malformed_messages_are_dead_lettered_and_detection_is_unchanged(kafka_bootstrap, setup):
    topics, start = setup
    events = scenario(minutes=80, seed=14)
    clock = clocks(events)
    expected = replay(events, [e for _, e in clock])
    cutoff = max(parse_ts(e["ts"]) for e in events) + 2 * 3_600_000
    worker = start()
    worker.wait_ready()
    bad = [
        (0, b"{not json"),
        (1, orjson.dumps({"event_id": "no-ts"})),
        (2, orjson.dumps({"event_id": "bad-flags", "ts": events[10]["ts"], "flags": {"pii": "yes"}})),
        (3, orjson.dumps({"event_id": "huge", "ts": events[10]["ts"], "prompt": "x" * 400_000})),
    ]
    run(publish(kafka_bootstrap, topics.events, events[:100]))
    run(publish_raw(kafka_bootstrap, topics.events, bad))
    feed(kafka_bootstrap, topics, events[100:], clock)
    incidents, containment = await_records(kafka_bootstrap, topics, expected, [worker])
    assert before(incidents + containment, cutoff) == before(expected, cutoff)
    letters = run(read_all(kafka_bootstrap, topics.dead_letter))
    reasons = sorted(letter["reason"].split(":")[0] for letter in letters)
    assert len(letters) == 4, letters
    assert reasons == sorted(
        [
            "invalid JSON",
            "`ts` is missing",
            "`flags` must be an object of booleans",
            f"event is {len(bad[3][1])} bytes; the limit is 262144",
        ]
    ), reasons
    assert all(letter["topic"] == topics.events and len(letter["raw"]) <= 4096 for letter in letters)


def test_rules_reload_on_change_and_sighup(kafka_bootstrap, setup, tmp_path):
    import signal as signals

    topics, start = setup
    events = scenario(minutes=71, seed=15)  # the pii leak on t3 opens after 70m and is still open at the end
    worker = start(lateness="1s")
    worker.wait_ready()
    run(publish(kafka_bootstrap, topics.events, events))

    def leak_open() -> bool:
        return any(
            r["type"] == "incident.opened" and r["rule"] == "leak"
            for r in run(read_all(kafka_bootstrap, topics.incidents, settle_s=0.3))
        )

    wait_for(leak_open, 90, "the leak incident", [worker])
    rules_file = tmp_path / "live.rules"
    rules_file.write_text(
        "rule leak:\n  count(pii) >= 1 over 1m by tenant -> sev2 contain disable_feature\n"
        "rule oops:\n  rat(x) > 3 over 1m -> sev9\n"
    )
    worker.process.send_signal(signals.SIGHUP)
    wait_for(lambda: worker.metrics()["firebreak_rule_reload_failures_total"] >= 1, 30, "a refused reload", [worker])
    rules_file.write_text(RULES.replace("rule leak:", "rule leak_v2:"))  # `leak` removed, `leak_v2` new
    wait_for(lambda: worker.metrics()["firebreak_rule_reloads_total"] >= 1, 30, "the reload", [worker])

    def closed() -> list[dict]:
        incidents = run(read_all(kafka_bootstrap, topics.incidents, settle_s=0.3))
        return [r for r in incidents if r["type"] == "incident.resolved" and r["rule"] == "leak"]

    wait_for(lambda: closed(), 30, "the removed rule's incident resolved", [worker])
    [resolved] = closed()
    assert "was removed by a rules reload" in resolved["why"]
    releases = [
        r
        for r in run(read_all(kafka_bootstrap, topics.containment))
        if r["type"] == "containment.release" and r["incident_id"] == resolved["incident_id"]
    ]
    assert [r["action"] for r in releases] == ["disable_feature"]
    worker.check_alive()


def test_a_worker_with_another_shard_count_than_its_group_refuses_to_start(kafka_bootstrap, setup, create_topic):
    topics, start = setup
    run(create_topic(f"{topics.prefix}.routed", partitions=4))  # the group ran with 4 shards
    worker = start(extra=["--shards", "2"])
    assert worker.process.wait(60) == 5
    log = next(worker.log_dir.glob(f"worker-{worker.port}.log")).read_text()
    assert "has 4 shards" in log and "--shards 2" in log and "Traceback" not in log
