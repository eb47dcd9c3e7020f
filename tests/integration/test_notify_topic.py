"""firebreak notify following the incidents topic: committed offsets, resumes where it stopped,
re-delivers what it could not deliver (at least once), to a real HTTP server on 127.0.0.1."""

from __future__ import annotations

import asyncio
import sys

import orjson
import pytest
from notify_receiver import Receiver, config_file, serve
from test_worker_live import clocks, replay, scenario

pytestmark = pytest.mark.kafka


def records() -> list[dict]:
    """The live scenario's records (its rules name no notify target: default_targets routes them)."""
    events = scenario(minutes=80, seed=61)
    return replay(events, [e for _, e in clocks(events)])


async def publish(bootstrap: str, incidents: str, containment: str, items: list[dict]) -> None:
    from aiokafka import AIOKafkaProducer

    producer = AIOKafkaProducer(bootstrap_servers=bootstrap)
    await producer.start()
    try:
        for record in items:
            topic = incidents if record["type"].startswith("incident.") else containment
            await producer.send_and_wait(topic, orjson.dumps(record))
    finally:
        await producer.stop()


async def notify(
    bootstrap: str,
    tmp_path,
    incidents: str,
    containment: str,
    script: list[str],
    extra: str = "",
    control_topic: str | None = None,
    idle: str = "3",
):
    receiver = Receiver(script)
    runner, url = await serve(receiver)
    try:
        more = ["--control-topic", control_topic, "--per-case"] if control_topic else []
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "firebreak.cli",
            "notify",
            "--config",
            config_file(tmp_path, url, extra),
            "--topic",
            incidents,
            "--containment-topic",
            containment,
            "--bootstrap",
            bootstrap,
            "--group",
            f"{incidents}-notify",
            "--idle",
            idle,
            *more,
            stderr=asyncio.subprocess.PIPE,
            env={"TEST_PD_KEY": "K", "TEST_SLACK_URL": f"{url}/slack", "PATH": ""},
        )
        _, err = await asyncio.wait_for(proc.communicate(), 120)
        return proc.returncode, err.decode(), receiver
    finally:
        await runner.cleanup()


def pd_keys(receiver: Receiver) -> list[tuple[str, str]]:
    return [
        (r["body"]["dedup_key"], r["body"]["event_action"])
        for r in receiver.received
        if r["path"] == "/v2/enqueue" and r["behaviour"] == "ok"
    ]


def test_follows_the_topic_resumes_and_redelivers_what_failed(kafka_bootstrap, unique_topic, tmp_path):
    incidents, containment = unique_topic("inc"), unique_topic("cmd")
    items = records()
    half = len(items) // 2
    run = asyncio.run
    run(publish(kafka_bootstrap, incidents, containment, items[:half]))
    code, err, first = run(notify(kafka_bootstrap, tmp_path, incidents, containment, []))
    assert code == 0, err
    want_first = [
        (r["incident_id"], "resolve" if r["type"] == "incident.resolved" else "trigger")
        for r in items[:half]
        if r["type"].startswith("incident.")
    ]
    assert sorted(pd_keys(first)) == sorted(want_first)

    run(publish(kafka_bootstrap, incidents, containment, items[half:]))
    code, err, down = run(notify(kafka_bootstrap, tmp_path, incidents, containment, ["500"] * 50, "retries = 1"))
    assert code == 4 and "gave up" in err and "Traceback" not in err

    code, err, second = run(notify(kafka_bootstrap, tmp_path, incidents, containment, []))
    assert code == 0, err
    want_second = [
        (r["incident_id"], "resolve" if r["type"] == "incident.resolved" else "trigger")
        for r in items[half:]
        if r["type"].startswith("incident.")
    ]
    assert sorted(pd_keys(second)) == sorted(want_second)  # resumed after the first run; nothing skipped


def open_incident_records() -> list[dict]:
    """One sev2 incident still open at the end, its policy asking for an update every second."""
    from firebreak.core import Event, run_events
    from firebreak.dsl import load_rules

    rules, problems = load_rules(
        {"r.rules": "rule leak:\n  count(pii) >= 1 over 1m by tenant -> sev2\n"},
        {"policy.toml": '[sev2]\nteam = "sec"\nupdate_every = "1s"\n'},
    )
    assert not problems
    t0 = 1_767_225_600_000
    events = [
        Event(
            f"e{i}",
            t0 + i * 5_000,
            "inference",
            {"event_id": f"e{i}", "ts": t0 + i * 5_000, "tenant": "acme", "flags": {"pii": True}},
        )
        for i in range(30)
    ]
    records = run_events(rules, events)
    assert [r["type"] for r in records if r["type"].startswith("incident.")] == ["incident.opened"]
    return records


def test_reminders_at_the_policy_cadence_go_on_after_a_restart_and_stop_at_resolution(
    kafka_bootstrap, unique_topic, tmp_path
):
    incidents, containment = unique_topic("inc"), unique_topic("cmd")
    items = open_incident_records()
    (opened,) = [r for r in items if r["type"] == "incident.opened"]
    run = asyncio.run
    run(publish(kafka_bootstrap, incidents, containment, items))
    code, err, first = run(notify(kafka_bootstrap, tmp_path, incidents, containment, []))
    assert code == 0, err
    bodies = [r["body"] for r in first.received if r["path"] == "/v2/enqueue"]
    assert bodies[0]["payload"]["summary"].startswith("[sev2] leak opened")
    reminders = [b for b in bodies[1:] if "still open" in b["payload"]["summary"]]
    assert len(reminders) >= 2 and len(reminders) == len(bodies) - 1  # ~one a second for the 3 s idle
    assert all(b["dedup_key"] == opened["incident_id"] and b["event_action"] == "trigger" for b in reminders)
    assert "1 incident records; " in err and f"{len(reminders)} reminders" in err

    # a restart: the opened record is before the committed offset, not delivered again, but known open
    code, err, second = run(notify(kafka_bootstrap, tmp_path, incidents, containment, []))
    assert code == 0, err
    again = [r["body"] for r in second.received if r["path"] == "/v2/enqueue"]
    assert again and all("still open" in b["payload"]["summary"] for b in again)

    resolved = {
        **opened,
        "type": "incident.resolved",
        "ts": "2026-01-01T00:10:00Z",
        "opened_at": opened["ts"],
        "duration_s": 600,
        "peak": 1,
        "held_commands": [],
    }
    resolved.pop("response")
    run(publish(kafka_bootstrap, incidents, containment, [resolved]))
    code, err, third = run(notify(kafka_bootstrap, tmp_path, incidents, containment, []))
    assert code == 0, err
    actions = [r["body"]["event_action"] for r in third.received if r["path"] == "/v2/enqueue"]
    assert "resolve" in actions and actions[actions.index("resolve") :] == ["resolve"]  # nothing after it


def live_case_records(now_ms: int) -> list[dict]:
    """A cost case on tenant acme as the worker writes it now: incident records without case_id,
    the case stage's records after them."""
    from firebreak.core.cases import CaseBook
    from firebreak.core.events import format_ts
    from firebreak.dsl.grouping import Grouping

    response = {"team": "ai-oncall", "page": True, "update_every_ms": 3_600_000}
    opened = {
        "type": "incident.opened",
        "incident_id": "c1",
        "rule": "spend",
        "category": "cost",
        "severity": "sev2",
        "group": {"tenant": "acme"},
        "ts": format_ts(now_ms),
        "evidence": [],
        "response": response,
    }
    out = CaseBook(Grouping()).process(opened)
    return [{k: v for k, v in r.items() if k != "case_id"} if r["type"].startswith("incident.") else r for r in out]


def control(bootstrap: str, topic: str, *args: str) -> str:
    import subprocess

    done = subprocess.run(
        [sys.executable, "-m", "firebreak.cli", *args, "--topic", topic, "--bootstrap", bootstrap],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_a_silence_on_the_control_topic_holds_the_page_until_it_ends_then_ack(kafka_bootstrap, unique_topic, tmp_path):
    import time

    incidents, containment, topic = unique_topic("inc"), unique_topic("cmd"), unique_topic("ctl")
    silence = control(
        kafka_bootstrap,
        topic,
        "silence",
        "add",
        "--match",
        "tenant=acme",
        "--for",
        "6s",
        "--reason",
        "load test",
        "--by",
        "ana",
    )
    silence_id = silence.split(":")[0]
    assert "active" in control(kafka_bootstrap, topic, "silence", "list")
    items = live_case_records(int(time.time() * 1000))
    case_id = next(r["case_id"] for r in items if r["type"] == "case.opened")
    asyncio.run(publish_all(kafka_bootstrap, incidents, items))
    began = time.monotonic()
    code, err, receiver = asyncio.run(
        notify(kafka_bootstrap, tmp_path, incidents, containment, [], control_topic=topic, idle="9")
    )
    assert code == 0, err
    assert pd_keys(receiver) == [(case_id, "trigger")]  # held, then paged once the silence ended; no incident page
    [page] = [r for r in receiver.received if r["path"] == "/v2/enqueue"]
    assert time.monotonic() - began >= 6  # not before the silence's end
    assert "1 pages suppressed (silenced 1), 1 released when their silence ended" in err
    assert silence_id.startswith("sil_") and page["body"]["payload"]["component"] == "tenant=acme"

    control(kafka_bootstrap, topic, "ack", case_id, "--by", "ana")
    code, err, receiver = asyncio.run(
        notify(kafka_bootstrap, tmp_path, incidents, containment, [], control_topic=topic, idle="3")
    )
    assert code == 0, err
    assert pd_keys(receiver) == [(case_id, "acknowledge")]  # after a restart: the case's page is known open


async def publish_all(bootstrap: str, topic: str, items: list[dict]) -> None:
    from aiokafka import AIOKafkaProducer

    producer = AIOKafkaProducer(bootstrap_servers=bootstrap)
    await producer.start()
    try:
        for record in items:
            await producer.send_and_wait(topic, orjson.dumps(record), partition=0)
    finally:
        await producer.stop()
