"""The pure pieces of `firebreak replay --topic` (no broker): times, warm-up, merge order, CLI checks.

The replay against a real broker is tested in tests/integration/test_topic_replay.py."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from firebreak.adapters.topic_replay import (
    TopicMessage,
    TopicReplayResult,
    check_range,
    merge_by_event_time,
    parse_time,
    warmup_ms,
)
from firebreak.cli import main
from firebreak.core import Event, parse_ts
from firebreak.dsl import load_rules

MIN = 60_000


# ---- times -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "ms"),
    [
        ("2026-03-01T01:00:00Z", parse_ts("2026-03-01T01:00:00Z")),
        ("2026-03-01T02:00:00+01:00", parse_ts("2026-03-01T01:00:00Z")),
        ("2026-03-01T01:00:00.250Z", parse_ts("2026-03-01T01:00:00Z") + 250),
        ("1772326800000", 1_772_326_800_000),
        (" 0 ", 0),
    ],
)
def test_parse_time_takes_rfc3339_with_a_zone_or_epoch_ms(text: str, ms: int) -> None:
    assert parse_time(text) == ms


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("yesterday", "`yesterday` is not a time: "),
        ("2026-03-01T01:00:00", "`2026-03-01T01:00:00` has no zone: add Z or an offset (2026-03-01T01:00:00Z)"),
        ("-5", "`-5` is not a time: "),
        ("99999999999999999", "`99999999999999999` is not a time: "),
    ],
)
def test_parse_time_says_what_is_wrong_in_one_line(text: str, message: str) -> None:
    with pytest.raises(ValueError) as caught:
        parse_time(text)
    if message.endswith(": "):
        message += "use RFC 3339 with a zone (2026-03-01T01:00:00Z) or epoch milliseconds"
    assert str(caught.value) == message


def test_check_range_wants_since_before_until() -> None:
    check_range(1, 2)
    with pytest.raises(ValueError, match=r"^--since 1970-01-01T00:00:00.002Z is not before --until 1970-01-01T00"):
        check_range(2, 2)


# ---- warm-up ---------------------------------------------------------------------------------


def compiled(text: str):
    rules, problems = load_rules({"t.rules": text})
    assert not problems, problems
    return rules


def test_warm_up_covers_window_baseline_and_one_step_of_the_longest_rule() -> None:
    rules = compiled(
        "rule spike:\n  rate(hallucination) > 3x baseline over 10m by model -> sev2\n"  # 10m + 6 × 10m + 1m step
        "rule leak:\n  count(pii) >= 1 over 1m by tenant -> sev2\n"  # 1m + 0 + 5s
    )
    assert [(r.window_ms, r.baseline_ms, r.step_ms) for r in rules] == [(10 * MIN, 60 * MIN, MIN), (MIN, 0, 5_000)]
    assert warmup_ms(rules) == 71 * MIN
    assert warmup_ms(rules[1:]) == MIN + 5_000  # absolute rules: baseline_ms is 0


def test_warm_up_includes_for_so_a_pending_timer_is_full_at_since() -> None:
    [rule] = compiled("rule slow:\n  p95(latency_ms) > 900 over 5m for 20m -> sev3\n")
    assert warmup_ms([rule]) == 5 * MIN + 20 * MIN + rule.step_ms


def test_warm_up_of_an_explicit_baseline_span() -> None:
    [rule] = compiled("rule cost:\n  sum(cost_usd) > 2x baseline(2h) over 10m -> sev3\n")
    assert warmup_ms([rule]) == 10 * MIN + 120 * MIN + MIN
    assert warmup_ms([]) == 0


# ---- merge order -----------------------------------------------------------------------------


def message(partition: int, offset: int, ts: int) -> TopicMessage:
    return TopicMessage(partition, offset, Event(f"p{partition}o{offset}", ts, "inference", {}), b"{}")


async def stream(items: list[TopicMessage], pulled: list[str]):
    for item in items:
        pulled.append(item.event.event_id)
        yield item


async def merged(partitions: dict[int, list[int]], pulled: list[str] | None = None) -> list[tuple[int, int, int]]:
    pulled = [] if pulled is None else pulled
    streams = [stream([message(p, o, ts) for o, ts in enumerate(times)], pulled) for p, times in partitions.items()]
    return [(m.event.ts, m.partition, m.offset) async for m in merge_by_event_time(streams)]


async def test_merge_orders_by_event_time_then_partition_then_offset() -> None:
    got = await merged({0: [10, 20, 30], 1: [10, 15, 40], 2: [5, 30]})
    assert got == [(5, 2, 0), (10, 0, 0), (10, 1, 0), (15, 1, 1), (20, 0, 1), (30, 0, 2), (30, 2, 1), (40, 1, 2)]


async def test_merge_keeps_each_partitions_arrival_order() -> None:
    # Partition 0 arrived out of order (30 before 10): it stays that way; the other partition
    # interleaves by event time around it.
    got = await merged({0: [30, 10, 50], 1: [20, 25, 40]})
    assert got == [(20, 1, 0), (25, 1, 1), (30, 0, 0), (10, 0, 1), (40, 1, 2), (50, 0, 2)]
    assert [(p, o) for _, p, o in got if p == 0] == [(0, 0), (0, 1), (0, 2)]


async def test_merge_reads_a_stream_only_when_its_head_is_taken() -> None:
    pulled: list[str] = []
    streams = [
        stream([message(0, o, ts) for o, ts in enumerate([1, 2, 3])], pulled),
        stream([message(1, o, ts) for o, ts in enumerate([10, 20])], pulled),
    ]
    merge = merge_by_event_time(streams)
    first = await anext(merge)
    assert first.event.event_id == "p0o0"
    assert pulled == ["p0o0", "p1o0"]  # one head each, nothing more
    await anext(merge)
    assert pulled == ["p0o0", "p1o0", "p0o1"]


async def test_merge_of_nothing() -> None:
    assert await merged({}) == []
    assert await merged({0: [], 1: [7]}) == [(7, 1, 0)]


# ---- summary ---------------------------------------------------------------------------------


def test_topic_summary_names_the_range_the_warm_up_and_messages() -> None:
    since = parse_ts("2026-03-01T01:00:00Z")
    result = TopicReplayResult(
        topic="ai.inference.events",
        since=since,
        until=since + 25 * MIN,
        read_from=since - 71 * MIN,
        partitions=4,
        partitions_read=3,
        lines=12,
        events=9,
        bad=2,
        records=5,
        warmup_records=1,
        after_until=3,
        outside=1,
    )
    result.opened["spike"] = 1
    assert result.summary() == (
        "topic ai.inference.events: 2026-03-01T01:00:00Z to 2026-03-01T01:25:00Z, read from 2026-02-28T23:49:00Z "
        "(warm-up 1h11m), 3 of 4 partitions\n"
        "messages read: 12   events read: 9   bad messages: 2   late events: 0   records: 5\n"
        "not written: 1 warm-up records (before since), 3 records at or after until   events outside the range: 1\n"
        "incidents opened by rule:\n"
        "  spike: 1"
    )


# ---- the command line: everything that is decided before any broker is asked -------------------


@pytest.fixture
def rules_file(tmp_path: Path) -> Path:
    path = tmp_path / "r.rules"
    path.write_text("rule leak:\n  count(pii) >= 1 over 1m by tenant -> sev2\n")
    return path


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["--topic", "t", "--since", "2026-03-01T02:00:00Z", "--until", "2026-03-01T01:00:00Z"],
            "--since 2026-03-01T02:00:00Z is not before --until 2026-03-01T01:00:00Z",
        ),
        (
            ["--topic", "t", "--since", "1772326800000", "--until", "2026-03-01T01:00:00Z"],
            "--since 2026-03-01T01:00:00Z is not before --until 2026-03-01T01:00:00Z",
        ),
        (
            ["--topic", "t", "--since", "soon", "--until", "2026-03-01T01:00:00Z"],
            "--since: `soon` is not a time: use RFC 3339 with a zone (2026-03-01T01:00:00Z) or epoch milliseconds",
        ),
        (
            ["--topic", "t", "--since", "0", "--until", "2026-03-01T01:00:00"],
            "--until: `2026-03-01T01:00:00` has no zone: add Z or an offset (2026-03-01T01:00:00Z)",
        ),
        (["--topic", "t", "--since", "0"], "--topic needs --since and --until"),
        (["events.jsonl", "--topic", "t", "--since", "0", "--until", "1"], "give event FILEs or --topic, not both"),
        ([], "give event FILEs, or --topic with --since and --until"),
        (["events.jsonl", "--since", "0"], "--since needs --topic"),
        (["events.jsonl", "--emit"], "--emit needs --topic"),
        (["--topic", "t", "--since", "0", "--until", "1", "--incidents-topic", "x"], "--incidents-topic needs --emit"),
    ],
)
def test_replay_argument_errors_are_one_line(rules_file: Path, capsys, args: list[str], message: str) -> None:
    assert main(["replay", "--rules", str(rules_file), *args]) == 1
    out, err = capsys.readouterr()
    assert (out, err) == ("", f"firebreak replay: {message}\n")


def test_since_after_until_as_a_subprocess_needs_no_broker(rules_file: Path) -> None:
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "firebreak.cli",
            "replay",
            "--rules",
            str(rules_file),
            "--topic",
            "t",
            "--bootstrap",
            "127.0.0.1:1",
            "--since",
            "2026-03-01T02:00:00Z",
            "--until",
            "2026-03-01T01:00:00Z",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 1
    assert done.stdout == ""
    assert done.stderr == "firebreak replay: --since 2026-03-01T02:00:00Z is not before --until 2026-03-01T01:00:00Z\n"


@pytest.mark.usefixtures("rule_engine")
def test_file_replay_still_takes_files(rules_file: Path, tmp_path: Path, capsys) -> None:
    events = tmp_path / "e.jsonl"
    events.write_text('{"event_id": "a", "ts": 0, "tenant": "t", "flags": {"pii": true}}\nnot json\n')
    assert main(["replay", "--rules", str(rules_file), str(events)]) == 0
    out, err = capsys.readouterr()
    assert '"type":"incident.opened"' in out
    assert f"bad line: {events}:2: invalid JSON" in err
    assert "events read: 1   bad lines: 1   late events: 0" in err
