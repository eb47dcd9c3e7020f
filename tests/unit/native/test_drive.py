"""The one drive loop (engine/firebreak/adapters/drive.py): batches of lines → engine → sink.

On the engine under test (the rule_engine fixture), against the Python core's records
(run_events, the specification); one test compares the two engines' replay output."""

from __future__ import annotations

import orjson
import pytest
from corekit import MIN, T0, rules, steady
from firebreak.adapters.drive import BATCH_LINES, Driver, batched, drive_batches
from firebreak.core import run_events

RULE = "count() > 5 over 1m by tenant -> sev3"


class ListSink:
    def __init__(self) -> None:
        self.records: list[dict] = []
        self.refused: list[tuple] = []

    def record(self, record: dict) -> None:
        self.records.append(record)

    def bad(self, where, reason: str, raw: bytes, late: bool) -> None:
        self.refused.append((where, reason.split(":")[0], raw, late))


def lines_of(events) -> list[bytes]:
    return [orjson.dumps(e.data) + b"\n" for e in events]


def test_drive_batches_gives_the_records_of_run_events_and_reports_refused_lines_in_input_order(rule_engine):
    compiled = rules(RULE)
    events = list(steady(0, 10 * MIN, 5_000, tenant="a"))
    lines = lines_of(events)
    late = orjson.dumps({"event_id": "old", "ts": T0, "tenant": "a"}) + b"\n"
    source = [*lines[:60], b"\n", b"{not json\n", late, *lines[60:]]
    sink = ListSink()
    counts = drive_batches(batched(enumerate(source, start=1)), Driver(compiled, engine=rule_engine), sink)
    assert sink.records == run_events(compiled, events)
    assert [(where, reason, late) for where, reason, _, late in sink.refused] == [
        (62, "invalid JSON", False),
        (63, "late", True),
    ]
    assert (counts.lines, counts.events, counts.bad, counts.late) == (len(source), len(events), 1, 1)
    assert counts.records == len(sink.records)


def test_batches_do_not_change_anything(rule_engine):
    compiled = rules(RULE)
    events = list(steady(0, 3 * BATCH_LINES * 100, 100, tenant="a"))
    sink = ListSink()
    drive_batches(batched(enumerate(lines_of(events))), Driver(compiled, engine=rule_engine), sink)
    assert sink.records == run_events(compiled, events)


def test_feed_events_and_finish(rule_engine):
    compiled = rules(RULE)
    events = list(steady(0, 5 * MIN, 1_000, tenant="b"))
    driver = Driver(compiled, engine=rule_engine)
    fed = driver.feed_events(events)
    assert fed.records + driver.finish() == run_events(compiled, events)
    assert driver.placement() == {compiled[0].name: rule_engine}


def test_replay_engine_switch_gives_the_same_output(tmp_path, capsys):
    """Differential: `replay --engine python` and `--engine native`, in every pass."""
    from firebreak.cli import main

    rules_file = tmp_path / "t.rules"
    rules_file.write_text(RULE + "\n")
    events = tmp_path / "events.jsonl"
    events.write_bytes(b"".join(lines_of(steady(0, 10 * MIN, 2_000, tenant="a"))) + b"{bad\n")
    outputs = []
    for engine in ("python", "native"):
        assert main(["replay", "--rules", str(rules_file), "--engine", engine, str(events)]) == 0
        captured = capsys.readouterr()
        outputs.append((captured.out, captured.err))
    assert outputs[0] == outputs[1]
    assert '"incident.opened"' in outputs[0][0]


def test_file_replay_reads_batches_and_numbers_refused_lines_across_them(tmp_path, monkeypatch, rule_engine):
    """File replay reads lines a batch at a time (readlines' hint in bytes): a bad or late line
    in any batch is reported with its own line number, and the records are those of one run."""
    from firebreak.adapters import file_replay

    monkeypatch.setattr(file_replay, "BATCH_BYTES", 700)  # a few lines a batch: many boundaries
    compiled = rules(RULE)
    events = list(steady(0, 10 * MIN, 5_000, tenant="a"))
    lines = lines_of(events)
    late = orjson.dumps({"event_id": "old", "ts": T0, "tenant": "a"}) + b"\n"
    source = [*lines[:40], b"{bad\n", *lines[40:90], late, b"\n", b"[]\n", *lines[90:]]
    path = tmp_path / "events.jsonl"
    path.write_bytes(b"".join(source))
    records: list[dict] = []
    dead = tmp_path / "dead.jsonl"
    with dead.open("wb") as sink:
        result = file_replay.replay_files([str(path)], compiled, records.append, sink, engine=rule_engine)
    assert records == run_events(compiled, events)
    assert (result.lines, result.events, result.bad, result.late) == (len(source), len(events), 2, 1)
    letters = [orjson.loads(line) for line in dead.read_bytes().splitlines()]
    assert [(d["line"], d["reason"].split(":")[0]) for d in letters] == [
        (41, "invalid JSON"),
        (92, "late"),
        (94, "an event is a JSON object, not list"),
    ], letters


def test_read_ahead_gives_every_read_in_order_and_raises_a_read_error_in_its_turn():
    import threading

    from firebreak.adapters.file_replay import read_ahead

    reads = iter([[b"1"], [b"2"], [b"3"], []])
    assert list(read_ahead(lambda: next(reads))) == [[b"1"], [b"2"], [b"3"]]

    def failing():
        calls.append(1)
        if len(calls) == 3:
            raise OSError("disk gone")
        return [b"x"]

    calls: list[int] = []
    got = []
    try:
        for item in read_ahead(failing):
            got.append(item)
    except OSError as error:
        assert str(error) == "disk gone"
    else:
        raise AssertionError("the read error was lost")
    assert got == [[b"x"], [b"x"]]  # the batches before the error, then the error

    # a consumer that stops early stops the reader (it does not read on forever)
    endless = read_ahead(lambda: [b"y"])
    assert next(endless) == [b"y"]
    endless.close()
    assert not [t for t in threading.enumerate() if t.name == "firebreak-read-ahead"]


@pytest.mark.usefixtures("rule_engine")
def test_replay_max_skew_option_bounds_or_not(tmp_path, capsys):
    from firebreak.cli import main

    rules_file = tmp_path / "t.rules"
    rules_file.write_text(RULE + "\n")
    events = tmp_path / "events.jsonl"
    base = 1_700_000_000_000
    honest = [orjson.dumps({"event_id": f"e{i}", "ts": base + i * 1000, "tenant": "a"}) + b"\n" for i in range(20)]
    far = orjson.dumps({"event_id": "far", "ts": base + 3 * 3_600_000, "tenant": "a"}) + b"\n"
    events.write_bytes(b"".join(honest[:10] + [far] + honest[10:]))
    dead = tmp_path / "dead.jsonl"
    # refused as ahead (the rest on time), or taken (the 10 events after it are then late)
    for skew, ahead, late in (("1h", 1, 0), ("2h", 1, 0), ("4h", 0, 10), ("off", 0, 10)):
        assert (
            main(["replay", "--rules", str(rules_file), "--max-skew", skew, "--dead-letter", str(dead), str(events)])
            == 0
        )
        capsys.readouterr()
        reasons = [orjson.loads(letter)["reason"] for letter in dead.read_bytes().splitlines()]
        assert sum(r.startswith("ahead: ") for r in reasons) == ahead, (skew, reasons)
        assert sum(r.startswith("late: ") for r in reasons) == late == len(reasons) - ahead, (skew, reasons)
