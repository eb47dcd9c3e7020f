"""firebreak notify against a real HTTP server on 127.0.0.1 that records what it receives."""

from __future__ import annotations

import asyncio
import subprocess
import sys

import orjson
import pytest
from corekit import run as run_rules
from firebreak.adapters.notify import (
    NotifyConfigError,
    load_notify_config,
    notify_records,
    pagerduty_event,
    slack_message,
)
from firebreak.dsl import load_rules
from notify_receiver import ENV, Receiver, config_file, serve
from test_core_properties import BASE

RULES = """
rule spike:
  rate(hallucination) > 3x baseline over 5m by model -> sev3 contain fallback notify "#ai-oncall" notify "#chat"
rule leak:
  count(pii) >= 2 over 1m by tenant -> sev2 contain disable_feature notify "#ai-oncall"
rule users:
  distinct(user) > 40 over 2m -> sev4
"""


@pytest.fixture(scope="module")
def records(rule_engine_kind: str) -> list[dict]:
    """The rules' records over BASE, on the engine under test: what notify delivers."""
    rules, problems = load_rules({"n.rules": RULES})
    assert not problems
    out = run_rules(rules, BASE, engine=rule_engine_kind)
    assert {r["rule"] for r in out if r["type"] == "incident.opened"} == {"spike", "leak", "users"}
    return out


def run_notify(tmp_path, receiver: Receiver, records: list[dict], extra: str = ""):
    async def main():
        runner, url = await serve(receiver)
        try:
            env = {**ENV, "TEST_SLACK_URL": f"{url}/slack"}
            config = load_notify_config(config_file(tmp_path, url, extra), env=env)
            return await notify_records(config, records)
        finally:
            await runner.cleanup()

    return asyncio.run(main())


def test_pagerduty_lifecycle_with_dedup_keys(tmp_path, records):
    receiver = Receiver()
    stats = run_notify(tmp_path, receiver, records)
    pd = [r["body"] for r in receiver.received if r["path"] == "/v2/enqueue"]
    incident_records = [r for r in records if r["type"].startswith("incident.")]
    assert len(pd) == len(incident_records)  # every incident record; users (no notify) via default_targets
    for record, event in zip(incident_records, pd, strict=True):
        assert event["dedup_key"] == record["incident_id"] and event["routing_key"] == "R0UTINGKEY"
        action = "resolve" if record["type"] == "incident.resolved" else "trigger"
        assert event["event_action"] == action
        if action == "trigger":
            assert (
                event["payload"]["severity"]
                == {"sev2": "error", "sev3": "warning", "sev4": "info", "sev1": "critical"}[record["severity"]]
            )
            assert event["payload"]["source"] == f"firebreak/{record['rule']}"
            command = event["payload"]["custom_details"]["investigate"]
            assert command.startswith("firebreak investigate --rules rules/ --topic ai.inference.events --since ")
            assert command.endswith(f"--incident {record['incident_id']}")
    by_incident: dict[str, list[str]] = {}
    for event in pd:
        by_incident.setdefault(event["dedup_key"], []).append(event["event_action"])
    assert all(actions[0] == "trigger" and actions[-1] in ("trigger", "resolve") for actions in by_incident.values())
    assert stats.failed == 0 and stats.retries == 0
    keys = [h["Idempotency-Key"] for h, r in zip(receiver.headers, receiver.received, strict=True)]
    assert len(keys) == len(set(keys)) + sum(1 for r in receiver.received if r["path"] == "/slack")


def test_slack_messages_say_what_how_much_who_containment_and_the_next_command(tmp_path, records):
    receiver = Receiver()
    run_notify(tmp_path, receiver, records)
    slack = [r["body"]["text"] for r in receiver.received if r["path"] == "/slack"]
    spike = [r for r in records if r["rule"] == "spike" and r["type"].startswith("incident.")]
    assert len(slack) == len(spike) > 0
    opened = slack[0]
    assert opened.startswith("*[sev3] spike opened for model=")
    assert "against limit" in opened and "users affected" in opened and "containment: fallback" in opened
    assert "investigate: `firebreak investigate --rules rules/ --topic ai.inference.events --since " in opened
    assert "R0UTINGKEY" not in "".join(slack)


def test_5xx_and_timeouts_are_retried_4xx_is_not(tmp_path, records):
    first = [r for r in records if r["type"] == "incident.opened" and r["rule"] == "leak"][:1]
    receiver = Receiver(["500", "slow", "ok"])
    stats = run_notify(tmp_path, receiver, first)
    assert [r["behaviour"] for r in receiver.received] == ["500", "slow", "ok"]
    assert stats.retries == 2 and stats.delivered["#ai-oncall"] == 1 and stats.failed == 0
    assert len({orjson.dumps(r["body"]) for r in receiver.received}) == 1  # the same request each time

    refused = Receiver(["400"])
    stats = run_notify(tmp_path, refused, first)
    assert len(refused.received) == 1 and stats.refused["#ai-oncall"] == 1 and stats.retries == 0

    down = Receiver(["500"] * 10)
    stats = run_notify(tmp_path, down, first, extra="retries = 2")
    assert len(down.received) == 3 and stats.gave_up["#ai-oncall"] == 1


def test_the_command_delivers_a_records_file_and_exits_4_on_failures(tmp_path, records):
    out = tmp_path / "records.jsonl"
    out.write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in records))

    async def main(script):
        receiver = Receiver(script)
        runner, url = await serve(receiver)
        try:
            proc = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "firebreak.cli",
                "notify",
                "--config",
                config_file(tmp_path, url),
                "--records",
                str(out),
                stderr=subprocess.PIPE,
                env={"TEST_PD_KEY": "R0UTINGKEY", "TEST_SLACK_URL": f"{url}/slack", "PATH": ""},
            )
            _, err = await proc.communicate()
            return proc.returncode, err.decode(), receiver
        finally:
            await runner.cleanup()

    code, err, receiver = asyncio.run(main([]))
    assert code == 0, err
    assert err.strip().splitlines()[-1].startswith(f"notify: {sum(1 for r in records if r['type'].startswith('inc'))}")
    code, err, _ = asyncio.run(main(["400"]))
    assert code == 4 and "refused" in err and "routing_key is wrong" in err and "R0UTINGKEY" not in err
    assert "Traceback" not in err


def test_payloads_are_pure(records):
    opened = next(r for r in records if r["type"] == "incident.opened")
    assert pagerduty_event(opened, "k") == pagerduty_event(dict(opened), "k")
    assert slack_message(opened, ["fallback"], "x")["text"] == slack_message(opened, ["fallback"], "x")["text"]


@pytest.mark.parametrize(
    ("text", "env", "message"),
    [
        ('[targets."#a"]\nkind = "pager"\nurl = "http://x"\n', {}, r"kind must be one of pagerduty, slack, webhook"),
        ('[targets."#a"]\nkind = "pagerduty"\nurl = "http://x"\n', {}, r"needs routing_key_env"),
        (
            '[targets."#a"]\nkind = "pagerduty"\nurl = "http://x"\nrouting_key_env = "NOPE"\n',
            {},
            r"the environment variable NOPE is not set",
        ),
        ('[targets."#a"]\nkind = "slack"\n', {}, r"give url, or url_env"),
        ('[targets."#a"]\nkind = "webhook"\nurl = "ftp://x"\n', {}, r"must start with http"),
        ('default_targets = ["#b"]\n', {}, r"default_targets names '#b'"),
        ("targets = [\n", {}, r"notify.toml: "),
        ('[targets."#a"]\nkind = "webhook"\nurl = "http://x"\nretry = 3\n', {}, r"unknown key 'retry'"),
    ],
)
def test_config_mistakes_are_one_line(tmp_path, text, env, message):
    path = tmp_path / "notify.toml"
    path.write_text(text)
    with pytest.raises(NotifyConfigError, match=message) as caught:
        load_notify_config(str(path), env=env)
    assert "\n" not in str(caught.value)


# ---- the response policy, reminders, and the demo's incidents (issue 15) --------------------

from firebreak.adapters.notify import REMINDER, Reminders, idempotency_key  # noqa: E402

POLICY = '[sev2]\nupdate_every = "10m"\n[sev3]\npage = false\nupdate_every = "1h"\n'


def policy_records() -> list[dict]:
    rules, problems = load_rules({"n.rules": RULES}, {"policy.toml": POLICY})
    assert not problems
    return run_rules(rules, BASE)


def test_reminders_follow_the_cadence_until_resolution():
    opened = {
        "type": "incident.opened",
        "incident_id": "inc_1",
        "rule": "leak",
        "category": "data_leakage",
        "severity": "sev2",
        "group": {"tenant": "a"},
        "ts": "2026-01-01T00:00:00Z",
        "onset": "2026-01-01T00:00:00Z",
        "response": {"team": "sec", "page": True, "update_every_ms": 600_000},
    }
    reminders = Reminders()
    reminders.track(opened, now=1000.0)
    assert reminders.due(1599.0) == []
    (first,) = reminders.due(1600.0)
    assert first["type"] == REMINDER and first["incident_id"] == "inc_1" and first["opened"] == opened["ts"]
    assert reminders.due(1700.0) == [] and len(reminders.due(2200.0)) == 1
    escalated = {
        **opened,
        "type": "incident.escalated",
        "ts": "2026-01-01T00:20:00Z",
        "severity": "sev1",
        "response": {"team": "sec", "page": True, "update_every_ms": 60_000},
    }
    reminders.track(escalated, now=2300.0)
    (again,) = reminders.due(2360.0)
    assert again["severity"] == "sev1" and again["opened"] == opened["ts"]  # the new cadence, the first opening
    assert idempotency_key(again) != idempotency_key(first)
    reminders.track({**opened, "type": "incident.resolved"}, now=2361.0)
    assert reminders.due(9999.0) == [] and reminders.open == {}


@pytest.mark.usefixtures("rule_engine")
def test_messages_name_the_responders_and_only_paged_targets_skip_tickets(tmp_path):
    records = policy_records()
    receiver = Receiver()
    run_notify(tmp_path, receiver, records, "only_paged = true")
    pd = [r["body"] for r in receiver.received if r["path"] == "/v2/enqueue"]
    steps = ("incident.opened", "incident.escalated")
    paged = {r["incident_id"] for r in records if r["type"] in steps and r["response"]["page"]}
    tickets = {r["incident_id"] for r in records if r["type"] == "incident.opened"} - paged
    assert paged and tickets and {e["dedup_key"] for e in pd} == paged  # sev3 stays a ticket unless escalated
    escalated = {r["incident_id"] for r in records if r["type"] == "incident.escalated" and r["severity"] == "sev2"}
    assert escalated & paged  # a sev3 escalated to sev2 is paged from its escalation on
    trigger = next(e for e in pd if e["event_action"] == "trigger")
    assert trigger["payload"]["custom_details"]["response"]["update_every_ms"] == 600_000
    slack = [r["body"]["text"] for r in receiver.received if r["path"] == "/slack"]
    assert any("responders: owning-team (ticket), status update every 1h" in text for text in slack)


@pytest.mark.usefixtures("rule_engine")
def test_the_demo_incidents_reach_a_pagerduty_shaped_endpoint_with_their_lifecycle(tmp_path):
    from firebreak.adapters.demo import run_demo
    from firebreak.adapters.starter_pack import starter_companion_sources, starter_rule_sources

    rules, problems = load_rules(starter_rule_sources(), starter_companion_sources())
    assert not [p for p in problems if p.level == "error"]
    result = run_demo(tmp_path / "demo", rules, 7, 6.0, lambda _: None)
    records = [orjson.loads(line) for line in result.records_path.read_bytes().splitlines()]
    names = sorted({name for rule in rules for name in rule.notify})
    receiver = Receiver()

    async def main():
        runner, url = await serve(receiver)
        try:
            text = "".join(
                f'[targets."{name}"]\nkind = "pagerduty"\nurl = "{url}/v2/enqueue"\nrouting_key_env = "TEST_PD_KEY"\n'
                for name in names
            )
            path = tmp_path / "notify.toml"
            path.write_text(f'default_targets = ["{names[0]}"]\n{text}')
            return await notify_records(load_notify_config(str(path), env=ENV), records)
        finally:
            await runner.cleanup()

    stats = asyncio.run(main())
    assert stats.failed == 0 and not stats.unrouted
    pd = [r["body"] for r in receiver.received if r["path"] == "/v2/enqueue"]
    # The demo's incidents name their cases (issue 25): PagerDuty hears of cases, one dedup_key
    # each, not of every incident.
    lifecycle: dict[str, list[dict]] = {}
    for record in records:
        if record["type"].startswith("case."):
            lifecycle.setdefault(record["case_id"], []).append(record)
    sent: dict[str, list[dict]] = {}
    for event in pd:
        sent.setdefault(event["dedup_key"], []).append(event)
    assert set(sent) == set(lifecycle)  # every case, keyed by its case id
    incidents = {r["incident_id"]: r["case_id"] for r in records if r["type"].startswith("incident.")}
    assert len(sent) < len(incidents) and set(incidents.values()) == set(sent)
    severity = {"sev1": "critical", "sev2": "error", "sev3": "warning", "sev4": "info"}
    for case_id, steps in lifecycle.items():
        events = sent[case_id]
        assert [e["event_action"] for e in events] == [
            "resolve" if s["type"] == "case.resolved" else "trigger" for s in steps
        ]
        for step, event in zip(steps, events, strict=True):
            if event["event_action"] == "trigger":  # a rise triggers the same alert again, at the new severity
                assert event["payload"]["severity"] == severity[step["severity"]]
                assert event["payload"]["custom_details"]["response"] == step["response"]
    reported = [r for r in records if r["type"] == "incident.opened" and r["rule"] == "data_exposure_reported"]
    assert reported and reported[0]["case_id"] in sent  # the incident a user report opened is in a paged case


@pytest.mark.usefixtures("rule_engine")
def test_only_paged_pagerduty_gets_the_cases_that_paged_and_slack_every_incident(tmp_path):
    from firebreak.core.cases import CaseBook
    from firebreak.dsl.grouping import Grouping

    book = CaseBook(Grouping())
    records = [out for r in policy_records() for out in book.process(r)]
    receiver = Receiver()
    run_notify(tmp_path, receiver, records, "only_paged = true")
    pd = [r["body"] for r in receiver.received if r["path"] == "/v2/enqueue"]
    paged = {r["case_id"] for r in records if r["type"].startswith("case.") and r.get("page")}
    assert paged and {e["dedup_key"] for e in pd} == paged
    ticket_only = {r["case_id"] for r in records if r["type"] == "case.opened"} - paged
    assert ticket_only  # sev3 cases never escalated to a paging severity: no PagerDuty alert
    assert len([e for e in pd if e["event_action"] == "trigger"]) >= len(paged)
    slack = [r for r in receiver.received if r["path"] == "/slack"]
    assert len(slack) == sum(1 for r in records if r["type"].startswith("incident.") and "#chat" in r["notify"])
