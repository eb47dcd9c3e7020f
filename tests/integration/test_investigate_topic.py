"""`firebreak investigate --topic` on the real broker: the same report as from the files
holding the same events, whatever partition each event landed on."""

from __future__ import annotations

import sys
import uuid
from pathlib import Path

import orjson
import pytest
from firebreak.cli import main
from firebreak.core import format_ts, parse_ts
from test_topic_replay import create_topics
from worker_harness import publish, run

sys.path.insert(0, str(Path(__file__).parents[1] / "unit"))
from investigate_scenarios import RULES, build  # noqa: E402

pytestmark = pytest.mark.kafka


def report_of(capsys, *args: str) -> dict:
    assert main(["investigate", *args, "--format", "json"]) == 0, capsys.readouterr().err
    return orjson.loads(capsys.readouterr().out)


@pytest.fixture(scope="module")
def published(kafka_bootstrap, tmp_path_factory):
    """The cost case on a 4-partition topic, and in a file."""
    case = build("cost", rate=3.0)
    lines = [{**e.data, "ts": format_ts(e.ts)} for e in case.events]
    topic = f"inv-{uuid.uuid4().hex[:8]}"
    run(create_topics(kafka_bootstrap, [topic]))
    run(publish(kafka_bootstrap, topic, lines, key_field="event_id"))  # spread over all partitions
    folder = tmp_path_factory.mktemp("inv")
    events = folder / "events.jsonl"
    events.write_bytes(b"".join(orjson.dumps(line) + b"\n" for line in lines))
    rules = folder / "cost.rules"
    rules.write_text(RULES["cost"] + "\n")
    return case, topic, events, rules


def test_topic_range_gives_the_report_the_files_give(kafka_bootstrap, published, capsys):
    case, topic, events, rules = published

    from_files = report_of(capsys, "--rules", str(rules), "--events", str(events), "--rule", "spend")
    since, until = format_ts(case.events[0].ts), format_ts(case.events[-1].ts + 1)
    from_topic = report_of(
        capsys,
        "--rules",
        str(rules),
        "--topic",
        topic,
        "--since",
        since,
        "--until",
        until,
        "--bootstrap",
        kafka_bootstrap,
        "--rule",
        "spend",
    )
    assert from_topic["range"].pop("source").startswith(f"topic {topic}")
    from_files["range"].pop("source")
    assert from_topic == from_files
    assert from_topic["suspected_causes"][0]["event_id"] == case.truth.cause_event_id
    assert (from_topic["contributors"][0]["dimension"], from_topic["contributors"][0]["value"]) == (
        "service",
        case.truth.value,
    )


def test_the_listing_of_a_topic_range_leaves_out_the_warm_up(kafka_bootstrap, published, capsys):
    case, topic, _, rules = published
    common = ["investigate", "--rules", str(rules), "--topic", topic, "--bootstrap", kafka_bootstrap]
    last = format_ts(case.events[-1].ts + 1)
    assert main([*common, "--since", format_ts(case.events[0].ts), "--until", last]) == 0
    everything = [line.split()[:2] for line in capsys.readouterr().out.splitlines() if line.startswith("  inc_")]
    assert everything
    # From just after the first incident opened: it is in the warm-up, so not listed, though
    # the events before --since were read (the report of a later incident needs them).
    after_first = format_ts(parse_ts(everything[0][1]) + 1)
    assert main([*common, "--since", after_first, "--until", last]) == 0
    later = [line.split()[:2] for line in capsys.readouterr().out.splitlines() if line.startswith("  inc_")]
    assert later == everything[1:]


def test_dead_broker_is_one_clear_line(tmp_path, capsys):
    rules = tmp_path / "cost.rules"
    rules.write_text(RULES["cost"] + "\n")
    code = main(
        [
            "investigate",
            "--rules",
            str(rules),
            "--topic",
            "t",
            "--since",
            "2026-01-01T00:00:00Z",
            "--until",
            "2026-01-01T01:00:00Z",
            "--bootstrap",
            "127.0.0.1:1",
        ]
    )
    err = capsys.readouterr().err
    assert code == 1 and err.startswith("firebreak investigate: ") and "127.0.0.1:1" in err
    assert "Traceback" not in err
