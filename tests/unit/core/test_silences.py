"""Silences, maintenance windows and acknowledgements (core/silences.py, dsl/maintenance.py):
notify against a PagerDuty-shaped endpoint on 127.0.0.1 — one dedup_key per case, a silence
that holds a page back and its expiry that releases it, acknowledge, resolve; the commands;
`policy.toml` mistakes located with path:line:col."""

from __future__ import annotations

import asyncio

import pytest
from firebreak.adapters.notify import load_notify_config, notify_records
from firebreak.cli import main
from firebreak.core.cases import CaseBook
from firebreak.core.events import format_ts, parse_ts
from firebreak.core.silences import ControlError, SilenceBook, ack_event, expire_event, parse_matchers, silence_event
from firebreak.dsl import load_rules
from firebreak.dsl.grouping import Grouping
from notify_receiver import ENV, Receiver, config_file, serve

T = parse_ts("2026-03-02T10:00:00Z")  # a Monday
MIN = 60_000
PAGING = {"team": "ai-oncall", "page": True, "update_every_ms": 1_800_000}


def rec(kind: str, incident: str, minute: float, rule: str, category: str, group: dict, sev: int = 2) -> dict:
    out = {
        "type": f"incident.{kind}",
        "incident_id": incident,
        "rule": rule,
        "category": category,
        "severity": f"sev{sev}",
        "group": group,
        "ts": format_ts(T + int(minute * MIN)),
        "evidence": [],
        "notify": ["#ai-oncall"],
    }
    if kind != "resolved":
        out["response"] = PAGING
    return out


def problems() -> list[dict]:
    """Two problems: cost on tenant acme (two rules, one case), hallucination on gpt-4o."""
    incidents = [
        rec("opened", "c1", 0, "spend", "cost", {"tenant": "acme"}),
        rec("opened", "h1", 5, "spike", "hallucination", {"model": "gpt-4o"}),
        rec("opened", "c2", 10, "tokens", "cost", {"tenant": "acme"}),
        rec("resolved", "h1", 40, "spike", "hallucination", {"model": "gpt-4o"}),
        rec("resolved", "c1", 150, "spend", "cost", {"tenant": "acme"}),
        rec("resolved", "c2", 160, "tokens", "cost", {"tenant": "acme"}),
    ]
    book = CaseBook(Grouping(by={"cost": ("tenant",), "hallucination": ("model",)}))
    return [out for r in incidents for out in book.process(r)]


def deliver(tmp_path, records, control=(), windows=(), per_case=False):
    receiver = Receiver()

    async def run():
        runner, url = await serve(receiver)
        try:
            config = load_notify_config(config_file(tmp_path, url), env={**ENV, "TEST_SLACK_URL": f"{url}/slack"})
            return await notify_records(config, records, control, windows, per_case)
        finally:
            await runner.cleanup()

    stats = asyncio.run(run())
    return stats, [r["body"] for r in receiver.received if r["path"] == "/v2/enqueue"]


def case_of(records, category):
    return next(r["case_id"] for r in records if r["type"] == "case.opened" and r["category"] == category)


def test_without_silences_one_dedup_key_per_case_trigger_then_resolve(tmp_path):
    records = problems()
    stats, pd = deliver(tmp_path, records)
    cost, hall = case_of(records, "cost"), case_of(records, "hallucination")
    actions = {k: [e["event_action"] for e in pd if e["dedup_key"] == k] for k in (cost, hall)}
    assert {e["dedup_key"] for e in pd} == {cost, hall}  # cases, not incidents
    assert actions == {cost: ["trigger", "trigger", "resolve"], hall: ["trigger", "resolve"]}
    assert stats.suppressed == {"grouping": 1}  # c2 joined the cost case: an update, not a page
    assert "1 pages suppressed (grouping 1)" in stats.summary()


@pytest.mark.parametrize("per_case", [True, False])
def test_the_workers_records_page_per_case(tmp_path, per_case):
    """The live worker's incident records do not name their case; its case stage's records
    follow them. With --per-case PagerDuty hears of cases only; without, from the first case record on."""
    records = [
        {k: v for k, v in r.items() if k != "case_id"} if r["type"].startswith("incident.") else r for r in problems()
    ]
    _, pd = deliver(tmp_path, records, per_case=per_case)
    cases = {r["case_id"] for r in records if r["type"] == "case.opened"}
    incident_keys = [e["dedup_key"] for e in pd if e["dedup_key"] not in cases]
    assert incident_keys == ([] if per_case else ["c1"])  # the first incident, before any case record
    assert {e["dedup_key"] for e in pd} - {"c1"} == cases


def test_a_silence_holds_the_page_and_its_expiry_releases_what_is_still_open(tmp_path):
    records = problems()
    cost, hall = case_of(records, "cost"), case_of(records, "hallucination")
    silence = silence_event({"tenant": "acme", "category": "cost"}, T - MIN, T + 60 * MIN, "load test", "ana")
    stats, pd = deliver(tmp_path, records, [silence])
    cost_events = [e for e in pd if e["dedup_key"] == cost]
    # held for the hour (c2 joined meanwhile); the first record after the end pages the open case once
    assert [e["event_action"] for e in cost_events] == ["trigger", "resolve"]
    assert cost_events[0]["payload"]["timestamp"] == format_ts(T)  # the page held: the case's opening ...
    assert cost_events[0]["payload"]["summary"].endswith("2 open incident(s)")  # ... as it stands now
    assert [e["event_action"] for e in pd if e["dedup_key"] == hall] == ["trigger", "resolve"]  # not matched
    assert stats.suppressed["silenced"] == 1 and stats.released == 1
    assert "released when their silence ended" in stats.summary()
    assert 'firebreak_notify_pages_suppressed_total{reason="silenced"} 1' in stats.prometheus()


def test_a_case_resolved_while_silenced_is_never_paged_but_counted(tmp_path):
    records = problems()
    cost = case_of(records, "cost")
    silence = silence_event({"tenant": "acme"}, T - MIN, T + 6 * 60 * MIN, "migration", "ana")
    stats, pd = deliver(tmp_path, records, [silence])
    assert cost not in {e["dedup_key"] for e in pd}
    assert stats.suppressed["silenced"] == 1 and stats.released == 0


def test_expiring_a_silence_early_releases_the_page_then(tmp_path):
    records = problems()
    cost = case_of(records, "cost")
    silence = silence_event({"tenant": "acme"}, T - MIN, T + 6 * 60 * MIN, "migration", "ana")
    early = expire_event(silence["silence_id"], "bo", T + 20 * MIN)
    stats, pd = deliver(tmp_path, records, [silence, early])
    assert [e["event_action"] for e in pd if e["dedup_key"] == cost] == ["trigger", "resolve"]
    assert stats.released == 1


def test_acknowledge_goes_to_pagerduty_and_the_case_still_resolves(tmp_path):
    records = problems()
    cost = case_of(records, "cost")
    stats, pd = deliver(tmp_path, records, [ack_event(cost, "ana", T + 30 * MIN)])
    assert [e["event_action"] for e in pd if e["dedup_key"] == cost] == ["trigger", "trigger", "acknowledge", "resolve"]
    assert stats.acknowledged == 1 and stats.failed == 0


def test_a_maintenance_window_holds_pages_like_a_silence(tmp_path):
    policy = (
        '[[maintenance]]\nname = "monday deploys"\ndays = ["mon"]\nfrom = "10:30"\nto = "11:30"\n'
        'timezone = "Europe/Berlin"\nmatch = { model = "gpt-4o" }\n'
    )
    rules, found = load_rules(
        {"r.rules": "rule spike:\n  count(hallucination) > 3 over 5m by model -> sev2\n"}, {"policy.toml": policy}
    )
    assert not found
    [window] = rules[0].grouping.maintenance
    assert window.covers(T) and not window.covers(T + 31 * MIN)  # 11:00-11:30 Berlin: 10:00-10:30 UTC
    records = problems()
    hall = case_of(records, "hallucination")
    stats, pd = deliver(tmp_path, records, windows=rules[0].grouping.maintenance)
    assert [e["event_action"] for e in pd if e["dedup_key"] == hall] == ["trigger", "resolve"]
    assert next(e for e in pd if e["dedup_key"] == hall)["payload"]["timestamp"] == format_ts(T + 5 * MIN)
    # released with the first record after 10:30 UTC: h1's resolution at 10:40 (the trigger, then the resolve)
    assert stats.suppressed["maintenance"] == 1 and stats.released == 1


def test_a_window_over_midnight_belongs_to_the_day_it_starts_on():
    policy = '[[maintenance]]\nname = "night"\ndays = ["sun"]\nfrom = "23:00"\nto = "01:00"\n'
    rules, found = load_rules(
        {"r.rules": "rule a:\n  count(hallucination) > 3 over 5m -> sev2\n"}, {"policy.toml": policy}
    )
    assert not found
    [night] = rules[0].grouping.maintenance
    sunday = parse_ts("2026-03-01T23:30:00Z")
    assert night.covers(sunday) and night.covers(sunday + 60 * MIN) and not night.covers(sunday + 90 * MIN)
    assert not night.covers(sunday - 24 * 60 * MIN)  # saturday night


@pytest.mark.parametrize(
    ("policy", "where", "message"),
    [
        (
            '[[maintenance]]\nname = "x"\ndays = ["mon", "tuesday"]\nfrom = "02:00"\nto = "04:00"\n',
            "3:1",
            "unknown day `tuesday`",
        ),
        (
            '[sev1]\npage = true\n\n[[maintenance]]\nname = "x"\nfrom = "2am"\nto = "04:00"\n',
            "6:1",
            '`from` must be a time of day such as "02:00"',
        ),
        (
            '[[maintenance]]\nname = "a"\nfrom = "01:00"\nto = "02:00"\n[[maintenance]]\nname = "b"\nfrom = "01:00"\n'
            'to = "02:00"\ntimezone = "Mars/Olympus"\n',
            "9:1",
            "unknown time zone `Mars/Olympus`",
        ),
        ('[[maintenance]]\nname = "x"\nfrom = "01:00"\nuntil = "02:00"\n', "4:1", "unknown key `until`"),
    ],
)
def test_maintenance_mistakes_are_located(tmp_path, capsys, policy, where, message):
    (tmp_path / "r.rules").write_text("rule a:\n  count(hallucination) > 3 over 5m -> sev2\n")
    (tmp_path / "policy.toml").write_text(policy)
    assert main(["check", str(tmp_path)]) != 0
    err = capsys.readouterr()
    text = err.out + err.err
    assert f"policy.toml:{where}: error: {message}" in text, text


def test_matchers_see_record_fields_then_scope_then_group():
    book = SilenceBook()
    book.apply(silence_event({"tenant": "acme", "severity": "sev2"}, T, T + MIN, "r", "a"))
    case = {"type": "case.opened", "case_id": "c", "severity": "sev2", "scope": {"tenant": "acme"}, "category": "cost"}
    assert book.silencing(case, T) is not None
    assert book.silencing({**case, "severity": "sev1"}, T) is None
    assert book.silencing(case, T + MIN) is None  # ended
    assert book.silencing({**case, "scope": {}, "group": {"tenant": "acme"}}, T) is not None
    with pytest.raises(ControlError, match="NAME=VALUE"):
        parse_matchers(["tenant"])
    with pytest.raises(ControlError, match="at least one"):
        parse_matchers([])
    with pytest.raises(ControlError, match="`matchers` is missing"):
        book.apply({"type": "silence.added", "silence_id": "x", "starts": format_ts(T), "ends": format_ts(T)})
    with pytest.raises(ControlError, match="unknown control event"):
        book.apply({"type": "silence.maybe"})


def test_a_silence_of_absurd_length_is_refused_with_one_line_and_nothing_written(tmp_path, capsys):
    path = tmp_path / "control.jsonl"
    code = main(
        [
            "silence",
            "add",
            "--file",
            str(path),
            "--match",
            "tenant=acme",
            "--for",
            "99999999d",
            "--reason",
            "r",
            "--by",
            "a",
        ]
    )
    assert code != 0
    assert "at most 366 days" in capsys.readouterr().err
    assert not path.exists() or path.read_text() == ""
    main(
        ["silence", "add", "--file", str(path), "--match", "tenant=acme", "--for", "366d", "--reason", "r", "--by", "a"]
    )
    main(["silence", "list", "--file", str(path)])
    assert "skipped" not in capsys.readouterr().err  # a year's silence reads back


def test_the_commands_write_list_and_expire_silences_in_a_file(tmp_path, capsys):
    path = str(tmp_path / "control.jsonl")
    at = ["--file", path, "--at", "2026-03-02T10:00:00Z"]
    assert (
        main(
            [
                "silence",
                "add",
                "--match",
                "tenant=acme",
                "--match",
                "category=cost",
                "--for",
                "2h",
                "--reason",
                "load test",
                "--by",
                "ana",
                *at,
            ]
        )
        == 0
    )
    silence_id = capsys.readouterr().out.split(":")[0]
    assert silence_id.startswith("sil_")
    assert main(["silence", "list", *at]) == 0
    assert "active" in capsys.readouterr().out
    assert main(["silence", "expire", "sil_nope", "--by", "bo", *at]) == 1
    assert "no silence 'sil_nope'" in capsys.readouterr().err
    assert main(["silence", "expire", silence_id, "--by", "bo", "--file", path, "--at", "2026-03-02T10:30:00Z"]) == 0
    assert main(["silence", "list", "--file", path, "--at", "2026-03-02T11:00:00Z"]) == 0
    assert f"{silence_id}  expired" in capsys.readouterr().out
    assert main(["ack", "case_1", "--by", "ana", *at]) == 0
    assert main(["silence", "add", "--match", "tenant", "--for", "2h", "--reason", "x", "--by", "y", *at]) == 1
    assert "expected NAME=VALUE" in capsys.readouterr().err


def test_reminders_are_per_case_and_stop_when_it_is_acknowledged():
    from firebreak.adapters.notify import REMINDER, Reminders

    records = problems()
    reminders = Reminders()
    for record in records[:5]:  # c1, its case, h1, its case, c2 joining the cost case
        reminders.track(record, now=0.0)
    cost, hall = case_of(records, "cost"), case_of(records, "hallucination")
    assert set(reminders.open) == {cost, hall}  # two problems, two reminders (not three incidents)
    due = reminders.due(1800.0)  # PAGING: every 30 minutes
    assert sorted((r["type"], r["case_id"]) for r in due) == sorted([(REMINDER, cost), (REMINDER, hall)])
    assert next(r for r in due if r["case_id"] == cost)["group"] == {"tenant": "acme"}
    reminders.forget([cost])  # acknowledged
    assert [r["case_id"] for r in reminders.due(3600.0)] == [hall]
    for record in records[5:]:
        reminders.track(record, now=3700.0)
    assert reminders.open == {}  # every case resolved
