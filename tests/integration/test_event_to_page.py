"""From event to page (issue 15), with real parts: a service's answers and a user's report,
published by an independent client (kcat) to a real broker; the live worker opens an incident
from each detection source, carrying who responds; a malformed report is dead-lettered with
its reason; `firebreak notify` pages a PagerDuty-shaped endpoint on 127.0.0.1 for both."""

from __future__ import annotations

import asyncio
import sys

import orjson
import pytest
from firebreak.core import format_ts, run_events, validate_event
from firebreak.dsl import load_rules
from notify_receiver import Receiver, serve
from test_worker_quiet import kcat_publish
from worker_harness import Topics, Worker, read_all, records_arrived, run, wait_for

pytestmark = pytest.mark.kafka

T0 = 1_767_225_600_000
SEC, MIN = 1_000, 60_000
RULES = """
rule data_exposure_reported:
  reports(data_exposure) >= 1 over 10m by tenant -> sev1 notify "#security-oncall"
rule pii_burst:
  count(pii) >= 3 over 2m by tenant -> sev1 contain disable_feature notify "#security-oncall"
"""
POLICY = '[sev1]\nteam = "security-oncall"\npage = true\nupdate_every = "30m"\n'


def cases_of(bootstrap: str, topics: Topics) -> dict[str, str]:
    """{incident id: its case id} from the case stage's case.opened/case.updated records."""
    records = run(read_all(bootstrap, topics.incidents, settle_s=0.3, cases=True))
    return {r["incident_id"]: r["case_id"] for r in records if r["type"] in ("case.opened", "case.updated")}


def traffic() -> tuple[list[dict], dict]:
    """20 minutes of answers from two tenants; three PII answers in acme at 10m; a globex user
    reports someone else's data in an answer at 12m; and a report with no labels."""
    events = []
    for i in range(20 * 60 // 5):
        tenant = ("acme", "globex")[i % 2]
        at = T0 + i * 5 * SEC
        pii = tenant == "acme" and 10 * MIN <= at - T0 < 10 * MIN + 40 * SEC
        events.append(
            {
                "event_id": f"a{i}",
                "ts": format_ts(at),
                "service": "assistant",
                "model": "m1",
                "tenant": tenant,
                "user": f"{tenant}-u{i % 7}",
                "flags": {"pii": pii},
            }
        )
    answer = next(e for e in events if e["tenant"] == "globex" and e["ts"] >= format_ts(T0 + 11 * MIN))
    events.append(
        {
            "event_id": "r1",
            "ts": format_ts(T0 + 12 * MIN),
            "type": "report",
            "labels": ["data_exposure"],
            "ref": answer["event_id"],
            "tenant": "globex",
            "user": answer["user"],
            "comment": "I see another customer's address",
        }
    )
    bad = {"event_id": "r2", "ts": format_ts(T0 + 12 * MIN), "type": "report", "tenant": "globex"}
    events.sort(key=lambda e: e["ts"])
    return events, bad


def test_a_report_and_flagged_answers_each_page_with_their_responders(
    kafka_bootstrap, unique_topic, tmp_path, create_topic
):
    topics = Topics(unique_topic("page"))
    run(create_topic(topics.events, partitions=2))
    (tmp_path / "rules").mkdir()
    (tmp_path / "rules" / "live.rules").write_text(RULES)
    (tmp_path / "rules" / "policy.toml").write_text(POLICY)
    events, bad = traffic()
    rules, problems = load_rules({"live.rules": RULES}, {"policy.toml": POLICY})
    assert not problems
    expected = run_events(rules, [validate_event(e) for e in events], lateness_ms=2_000, finish=False)
    opened = {r["rule"]: r for r in expected if r["type"] == "incident.opened"}
    assert set(opened) == {"data_exposure_reported", "pii_burst"}

    worker = Worker(topics, kafka_bootstrap, tmp_path / "rules", tmp_path, extra=["--idle-timeout", "5s"]).start()
    try:
        worker.wait_ready()
        kcat_publish(kafka_bootstrap, topics.events, 0, [e for e in events if e["tenant"] == "acme"])
        kcat_publish(kafka_bootstrap, topics.events, 1, [e for e in events if e["tenant"] == "globex"] + [bad])
        wait_for(records_arrived(kafka_bootstrap, topics, expected), 120, "both incidents", [worker])
        # the case stage (issue 25) pages per case: wait for the case of each incident too
        wait_for(lambda: len(cases_of(kafka_bootstrap, topics)) == 2, 120, "the incidents' cases", [worker])
    finally:
        worker.stop()
    incidents = run(read_all(kafka_bootstrap, topics.incidents))
    live = {r["rule"]: r for r in incidents if r["type"] == "incident.opened"}
    assert live == opened  # the same records as a replay, response included
    assert all(
        r["response"] == {"team": "security-oncall", "page": True, "update_every_ms": 1_800_000} for r in live.values()
    )
    dead = run(read_all(kafka_bootstrap, topics.dead_letter))
    assert len(dead) == 1 and "a report event needs `labels`" in orjson.dumps(dead[0]).decode()

    receiver = Receiver()

    async def notify():
        runner, url = await serve(receiver)
        try:
            config = tmp_path / "notify.toml"
            config.write_text(
                f'[targets."#security-oncall"]\nkind = "pagerduty"\nurl = "{url}/v2/enqueue"\n'
                f'routing_key_env = "PD_KEY"\nonly_paged = true\n'
            )
            proc = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "firebreak.cli",
                "notify",
                "--config",
                str(config),
                "--topic",
                topics.incidents,
                "--containment-topic",
                topics.containment,
                "--bootstrap",
                kafka_bootstrap,
                "--idle",
                "3",
                "--per-case",  # the worker runs its case stage: page per case from the first record
                stderr=asyncio.subprocess.PIPE,
                env={"PD_KEY": "K", "PATH": ""},
            )
            _, err = await asyncio.wait_for(proc.communicate(), 120)
            return proc.returncode, err.decode()
        finally:
            await runner.cleanup()

    code, err = asyncio.run(notify())
    assert code == 0, err
    pages = [r["body"] for r in receiver.received if r["body"]["event_action"] == "trigger"]
    # one page per case, keyed by the case (a sev1 data leak in acme, a user's report in globex: two cases)
    cases = cases_of(kafka_bootstrap, topics)
    assert set(cases) == {r["incident_id"] for r in live.values()}
    assert sorted(p["dedup_key"] for p in pages) == sorted(set(cases.values()))
    assert {p["payload"]["severity"] for p in pages} == {"critical"}
    assert all(p["payload"]["custom_details"]["response"]["team"] == "security-oncall" for p in pages)
    assert "comment" not in orjson.dumps(receiver.received).decode()  # the user's words stay out of pages
