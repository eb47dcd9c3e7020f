"""`firebreak backtest --topic` on the real broker: the events are read from the topic (with the
rules' warm-up before --since) and the comparison is the one the same events give from a file."""

from __future__ import annotations

import asyncio
from pathlib import Path

import orjson
import pytest
from firebreak.cli import main
from firebreak.core import format_ts
from firebreak.synthetic import MINUTE, scenario
from worker_harness import publish, publish_raw

pytestmark = pytest.mark.kafka

OLD = "rule spike: rate(hallucination) > 3x baseline over 10m by model min 200 events -> sev2\n"
NEW = "rule spike: rate(hallucination) > 3x baseline over 5m by model min 100 events -> sev2\n"


def backtest_json(capsys: pytest.CaptureFixture, *args: str) -> dict:
    assert main(["backtest", *args, "--format", "json"]) == 0, capsys.readouterr().err
    return orjson.loads(capsys.readouterr().out)


def test_backtest_of_a_topic_matches_the_same_events_from_a_file(
    kafka_bootstrap: str, create_topic, unique_topic, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    traffic = scenario("hallucination", rate=5.0, duration_ms=120 * MINUTE, onset_ms=80 * MINUTE)
    events = list(traffic.events())
    topic = asyncio.run(create_topic(unique_topic("events"), partitions=2))
    asyncio.run(publish(kafka_bootstrap, topic, events, key_field="model"))
    asyncio.run(publish_raw(kafka_bootstrap, topic, [(0, b"{not json")]))
    log = tmp_path / "events.jsonl"
    log.write_bytes(b"".join(orjson.dumps(e) + b"\n" for e in events))
    (tmp_path / "old.rules").write_text(OLD)
    (tmp_path / "new.rules").write_text(NEW)
    rules = ["--rules", str(tmp_path / "old.rules"), "--against", str(tmp_path / "new.rules")]
    since, until = traffic.start_ms + 60 * MINUTE, traffic.start_ms + 120 * MINUTE

    from_topic = backtest_json(
        capsys,
        *rules,
        "--topic",
        topic,
        "--bootstrap",
        kafka_bootstrap,
        "--since",
        format_ts(since),
        "--until",
        str(until),
    )
    from_file = backtest_json(capsys, *rules, "--events", str(log))

    # the warm-up (10m window + 1h baseline + a step) reaches back before the log: all of it is read
    assert from_topic["input"]["read_from"] == format_ts(since - 71 * MINUTE)
    assert from_topic["input"]["events"] == len(events) and from_topic["input"]["bad"] == 1
    in_range = [r for r in from_file["rows"] if max(r["opened_old"] or "", r["opened_new"] or "") >= format_ts(since)]
    assert from_topic["rows"] == in_range
    (injected,) = [r for r in from_topic["rows"] if r["status"] == "both"]
    assert injected["group"] == {"model": traffic.truths[0].value} and injected["delta_ms"] < 0


def test_an_unknown_topic_is_one_line(kafka_bootstrap: str, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    (tmp_path / "r.rules").write_text(OLD)
    rules = str(tmp_path / "r.rules")
    span = ["--since", "2026-01-01T00:00:00Z", "--until", "2026-01-01T01:00:00Z"]
    code = main(
        [
            "backtest",
            "--rules",
            rules,
            "--against",
            rules,
            "--topic",
            "fbt-backtest-no-such-topic",
            "--bootstrap",
            kafka_bootstrap,
            *span,
        ]
    )
    err = capsys.readouterr().err
    assert code == 1 and err.startswith("firebreak backtest: topic 'fbt-backtest-no-such-topic' does not exist")
    assert "Traceback" not in err
