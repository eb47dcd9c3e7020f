"""`firebreak check --topic`: the traffic check over a range of a real topic says what the same
events say from a file."""

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

RULES = """\
rule spike: rate(hallucination) > 3x baseline over 10m by model min 200 events -> sev2
rule never: count(toxicity) >= 1 over 1m by tenant -> sev2
rule always: count() > 3 over 1m by tenant -> sev4
"""


def check_json(capsys: pytest.CaptureFixture, *args: str) -> dict:
    assert main(["check", *args, "--format", "json"]) == 0, capsys.readouterr().err
    out, err = capsys.readouterr()
    assert err.startswith("ok: 3 rules in 1 file(s)\n")
    return orjson.loads(out)


def test_a_topic_range_is_checked_like_the_same_events_from_a_file(
    kafka_bootstrap: str, create_topic, unique_topic, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    traffic = scenario("normal", rate=3.0, duration_ms=40 * MINUTE)
    events = list(traffic.events())
    topic = asyncio.run(create_topic(unique_topic("events"), partitions=2))
    asyncio.run(publish(kafka_bootstrap, topic, events, key_field="model"))
    asyncio.run(publish_raw(kafka_bootstrap, topic, [(1, b"{not json")]))
    (tmp_path / "t.rules").write_text(RULES)
    since, until = traffic.start_ms, traffic.start_ms + 40 * MINUTE
    log = tmp_path / "events.jsonl"
    log.write_bytes(b"".join(orjson.dumps(e) + b"\n" for e in sorted(events, key=lambda e: e["ts"])))

    from_topic = check_json(
        capsys,
        str(tmp_path / "t.rules"),
        "--topic",
        topic,
        "--bootstrap",
        kafka_bootstrap,
        "--since",
        format_ts(since),
        "--until",
        str(until),
    )
    from_file = check_json(capsys, str(tmp_path / "t.rules"), "--events", str(log))

    assert from_topic["source"] == f"{topic} from {format_ts(since)} to {format_ts(until)}"
    assert (from_topic["events"], from_topic["bad"]) == (len(events), 1)
    assert from_topic["rules"] == from_file["rules"]
    verdicts = {r["name"]: (r["opened"], r["warnings"]) for r in from_topic["rules"]}
    assert verdicts["never"][1][0].startswith("never fires: flag `toxicity` is never true")
    assert verdicts["always"][0] > 0 and verdicts["always"][1][0].startswith("fires all the time")


def test_an_unknown_topic_is_one_line(kafka_bootstrap: str, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    (tmp_path / "t.rules").write_text(RULES)
    code = main(
        [
            "check",
            str(tmp_path / "t.rules"),
            "--topic",
            "fbt-check-no-such-topic",
            "--bootstrap",
            kafka_bootstrap,
            "--since",
            "2026-01-01T00:00:00Z",
        ]
    )
    err = capsys.readouterr().err
    assert code == 1
    assert err == f"firebreak check: topic 'fbt-check-no-such-topic' does not exist on {kafka_bootstrap}\n"
