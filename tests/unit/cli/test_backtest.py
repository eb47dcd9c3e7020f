"""`firebreak backtest`: the pure comparison on hand-made records, and the command end to end
on a small synthetic log (old rule over 10m, new over 5m)."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import orjson
import pytest
from firebreak.adapters.backtest import BOTH, ONLY_NEW, ONLY_OLD, BacktestRun, compare, read_truths, run_backtest
from firebreak.adapters.backtest_report import render_text, signed_duration, summary_line
from firebreak.cli import main
from firebreak.core import format_ts, validate_event
from firebreak.dsl import load_rules
from firebreak.synthetic import MINUTE, GroundTruth, scenario

T0 = 1_767_225_600_000  # 2026-01-01T00:00:00Z


# ---- hand-made records ------------------------------------------------------------------------


def opened(
    rule: str,
    minute: float,
    group: dict | None = None,
    *,
    category: str = "hallucination",
    severity: str = "sev2",
    onset: float | None = None,
    iid: str | None = None,
) -> dict[str, Any]:
    ts = T0 + int(minute * MINUTE)
    return {
        "type": "incident.opened",
        "incident_id": iid or f"inc_{rule}_{minute}",
        "rule": rule,
        "category": category,
        "severity": severity,
        "group": group if group is not None else {"model": "m1"},
        "ts": format_ts(ts),
        "onset": format_ts(T0 + int((minute if onset is None else onset) * MINUTE)),
        "window": {"start": format_ts(ts - 10 * MINUTE), "end": format_ts(ts)},
        "value": 0.1,
        "baseline": None,
        "threshold": 0.05,
        "events": 10,
        "sample": 200,
        "users_affected": 7,
        "evidence": [],
        "notify": [],
        "why": "",
    }


def resolved(record: dict[str, Any], minute: float) -> dict[str, Any]:
    return record | {"type": "incident.resolved", "ts": format_ts(T0 + int(minute * MINUTE))}


def escalated(record: dict[str, Any], minute: float, severity: str) -> dict[str, Any]:
    return record | {
        "type": "incident.escalated",
        "ts": format_ts(T0 + int(minute * MINUTE)),
        "severity": severity,
        "previous_severity": record["severity"],
        "reason": "impact",
    }


def statuses(backtest) -> list[tuple]:
    return [(r.status, r.old and r.old.rule, r.new and r.new.rule, r.delta_ms, r.renamed) for r in backtest.rows]


# ---- the comparison ----------------------------------------------------------------------------


def test_both_only_old_only_new_and_the_sign_of_delta() -> None:
    old = [opened("spike", 20), opened("spike", 50, {"model": "m2"}), opened("leak", 30, {"tenant": "t1"})]
    new = [opened("spike", 18), opened("spike", 53, {"model": "m2"}), opened("spike", 40, {"model": "m3"})]
    backtest = compare(old, new)
    assert statuses(backtest) == [
        (BOTH, "spike", "spike", -2 * MINUTE, False),  # new detects earlier: negative
        (ONLY_OLD, "leak", None, None, False),  # the new version would miss it
        (ONLY_NEW, None, "spike", None, False),  # the new version adds it
        (BOTH, "spike", "spike", 3 * MINUTE, False),  # later: positive
    ]
    s = backtest.summary
    assert (s["old_incidents"], s["new_incidents"], s["both"], s["only_old"], s["only_new"]) == (3, 3, 2, 1, 1)
    assert (s["new_earlier"], s["new_later"], s["median_delta_ms"]) == (1, 1, MINUTE // 2)
    assert summary_line(backtest) == (
        "old: 3 incidents, new: 3; both 2, only old 1, only new 1; new detects earlier in 1 of 2 (median +30s)"
    )


def test_every_incident_is_in_exactly_one_row() -> None:
    # one long new incident spans two old ones of the same rule and group: it pairs with one of them
    first, second, long = opened("spike", 10), opened("spike", 40), opened("spike", 12)
    old = [first, resolved(first, 25), second, resolved(second, 55)]
    new = [long, resolved(long, 60)]
    backtest = compare(old, new)
    assert statuses(backtest) == [(BOTH, "spike", "spike", 2 * MINUTE, False), (ONLY_OLD, "spike", None, None, False)]
    ids = [i.incident_id for r in backtest.rows for i in (r.old, r.new) if i is not None]
    assert sorted(ids) == sorted({first["incident_id"], second["incident_id"], long["incident_id"]})


def test_pairs_closest_openings_first() -> None:
    a, b = opened("spike", 10), opened("spike", 30)
    near_b = opened("spike", 29)
    backtest = compare([a, resolved(a, 40), b], [near_b])
    assert statuses(backtest) == [(ONLY_OLD, "spike", None, None, False), (BOTH, "spike", "spike", -MINUTE, False)]


@pytest.mark.parametrize(
    ("old_resolved", "new_at", "paired"),
    [
        (20, 20, True),  # resolves at T, the other opens at T: the ends are included
        (20, 21, False),  # opens after the old one resolved
        (None, 500, True),  # never resolved: open to the end of the input
    ],
)
def test_overlap_edges(old_resolved: float | None, new_at: float, paired: bool) -> None:
    old = [opened("spike", 10)] + ([resolved(opened("spike", 10), old_resolved)] if old_resolved else [])
    backtest = compare(old, [opened("spike", new_at)])
    assert [r.status for r in backtest.rows] == ([BOTH] if paired else [ONLY_OLD, ONLY_NEW])


def test_new_resolved_before_old_opens_is_no_match() -> None:
    new = opened("spike", 10)
    backtest = compare([opened("spike", 30)], [new, resolved(new, 20)])
    assert [r.status for r in backtest.rows] == [ONLY_NEW, ONLY_OLD]


def test_same_rule_other_group_is_no_match() -> None:
    backtest = compare([opened("spike", 10, {"model": "m1"})], [opened("spike", 10, {"model": "m2"})])
    assert [r.status for r in backtest.rows] == [ONLY_OLD, ONLY_NEW]
    # group keys are canonical JSON: key order does not matter, true and 1 stay apart
    two = {"model": "m1", "tenant": "t"}
    assert [r.status for r in compare([opened("x", 1, two)], [opened("x", 1, dict(reversed(two.items())))]).rows] == [
        BOTH
    ]
    assert len(compare([opened("x", 1, {"f": True})], [opened("x", 1, {"f": 1})]).rows) == 2


def test_renamed_rule_pairs_by_group_and_category() -> None:
    old = [opened("rate_hallucination_6be9d660", 20), opened("pii", 30, {"model": "m1"}, category="data_leakage")]
    new = [opened("rate_hallucination_0f00ba12", 19), opened("leak", 31, {"model": "m1"}, category="cost")]
    backtest = compare(old, new)
    assert statuses(backtest) == [
        (BOTH, "rate_hallucination_6be9d660", "rate_hallucination_0f00ba12", -MINUTE, True),
        (ONLY_OLD, "pii", None, None, False),  # another category: not the same rule renamed
        (ONLY_NEW, None, "leak", None, False),
    ]
    assert backtest.summary["renamed"] == 1
    assert "rate_hallucination_6be9d660 → rate_hallucination_0f00ba12 (renamed)" in render_text(BacktestRun(backtest))


def test_rules_in_both_versions_are_never_taken_for_renamed() -> None:
    # the new version drops the spike incident and a ceiling rule (present in both) fires instead
    old, new = [opened("spike", 20)], [opened("ceiling", 21)]
    backtest = compare(old, new, old_rules=["spike", "ceiling"], new_rules=["spike", "ceiling"])
    assert [r.status for r in backtest.rows] == [ONLY_OLD, ONLY_NEW]
    counts = {c.rule: (c.old, c.new) for c in backtest.counts}
    assert counts == {"ceiling": (0, 1), "spike": (1, 0)}
    # without the names, the rules that opened something are all that is known
    assert [r.renamed for r in compare(old, new).rows] == [True]


def test_since_leaves_out_rows_opened_only_in_the_warm_up() -> None:
    warm = opened("spike", 5, {"model": "m9"})
    straddling_old, straddling_new = opened("spike", 58), opened("spike", 61)
    old = [warm, resolved(warm, 20), straddling_old, opened("spike", 70, {"model": "m2"})]
    new = [warm, resolved(warm, 20), straddling_new]
    backtest = compare(old, new, since_ms=T0 + 60 * MINUTE)
    assert statuses(backtest) == [(BOTH, "spike", "spike", 3 * MINUTE, False), (ONLY_OLD, "spike", None, None, False)]
    assert backtest.summary["old_incidents"] == 2 and [(c.old, c.new) for c in backtest.counts] == [(2, 1)]


def test_final_severities_and_per_rule_counts() -> None:
    first = opened("spike", 10, severity="sev3")
    backtest = compare([first], [first, escalated(first, 12, "sev2")], old_rules=["spike"], new_rules=["spike", "x"])
    (row,) = backtest.rows
    assert (row.old.severity, row.new.severity, row.severity_differs) == ("sev3", "sev2", True)
    assert backtest.summary["severity_differs"] == 1
    assert [(c.rule, c.old, c.new) for c in backtest.counts] == [("spike", 1, 1), ("x", None, 0)]
    assert "sev3 → sev2" in render_text(BacktestRun(backtest))


def test_lag_is_opened_minus_onset() -> None:
    backtest = compare([opened("slow", 20, onset=15)], [opened("slow", 18, onset=18)])
    (row,) = backtest.rows
    assert (row.old.lag_ms, row.new.lag_ms, row.delta_ms) == (5 * MINUTE, 0, -2 * MINUTE)


def test_time_to_detect_against_ground_truth() -> None:
    truth = GroundTruth(
        "hallucination", "model", "m1", None, None, T0 + 15 * MINUTE, T0 + 45 * MINUTE, scope=(("model", "m1"),)
    )
    other = GroundTruth(
        "cost", "service", "s9", None, None, T0 + 60 * MINUTE, T0 + 70 * MINUTE, scope=(("service", "s9"),)
    )
    old = [opened("spike", 22), opened("noise", 5, {"model": "m1"})]  # opened 10m before onset: not a detection
    new = [opened("spike", 17), opened("noise", 5, {"model": "m1"})]
    backtest = compare(old, new, truths=[truth, other])
    found, missed = backtest.truths
    assert (found.old.rule, found.ttd_old_ms, found.ttd_new_ms, found.difference_ms) == (
        "spike",
        7 * MINUTE,
        2 * MINUTE,
        -5 * MINUTE,
    )
    assert (missed.old, missed.new, missed.ttd_old_ms, missed.difference_ms) == (None, None, None, None)
    assert [r.truth is truth for r in backtest.rows] == [False, True]
    assert backtest.summary["truths_detected_old"] == backtest.summary["truths_detected_new"] == 1
    assert "MISSED" in render_text(BacktestRun(backtest))


def test_reading_truth_files(tmp_path: Path) -> None:
    truth = GroundTruth(
        "adversarial",
        "tenant",
        "globex",
        None,
        None,
        T0,
        T0 + MINUTE,
        users=("u1", "u2"),
        scope=(("tenant", "globex"),),
    )
    as_array = tmp_path / "truth.json"
    as_array.write_bytes(orjson.dumps([dataclasses.asdict(truth)], option=orjson.OPT_INDENT_2))  # what demo writes
    as_lines = tmp_path / "truth.jsonl"
    as_lines.write_bytes(orjson.dumps(dataclasses.asdict(truth)) + b"\n" + orjson.dumps(dataclasses.asdict(truth)))
    assert read_truths(str(as_array)) == [truth]
    assert read_truths(str(as_lines)) == [truth, truth]


def test_durations() -> None:
    assert [signed_duration(ms) for ms in (0, -120_000, 90_000, 3_630_000, -500)] == [
        "0s",
        "-2m",
        "+1m30s",
        "+1h30s",
        "-500ms",
    ]


# ---- end to end -----------------------------------------------------------------------------------

SPIKE = "rule spike: rate(hallucination) > 3x baseline over {window} by model min {min} events -> sev2\n"
OLD_RULES = SPIKE.format(window="10m", min=200) + (
    "rule retired: rate(hallucination) > 0.03 over 15m by model min 300 events -> sev3 category other\n"
)
NEW_RULES = SPIKE.format(window="5m", min=100)


@pytest.fixture(scope="module")
def log(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """Two hours at 5 events/s with a hallucination spike from 80m (~30k events)."""
    traffic = scenario("hallucination", rate=5.0, duration_ms=120 * MINUTE, onset_ms=80 * MINUTE)
    folder = tmp_path_factory.mktemp("backtest")
    events, truth = folder / "events.jsonl", folder / "truth.json"
    events.write_bytes(b"".join(orjson.dumps(e) + b"\n" for e in traffic.events()) + b"{not json\n")
    truth.write_bytes(orjson.dumps([dataclasses.asdict(t) for t in traffic.truths]))
    return events, truth


def rule_files(tmp_path: Path, old: str = OLD_RULES, new: str = NEW_RULES) -> tuple[str, str]:
    (tmp_path / "old").mkdir()
    (tmp_path / "new").mkdir()
    (tmp_path / "old" / "h.rules").write_text(old)
    (tmp_path / "new" / "h.rules").write_text(new)
    return str(tmp_path / "old"), str(tmp_path / "new" / "h.rules")


@pytest.mark.usefixtures("rule_engine")
def test_backtest_json_end_to_end(tmp_path: Path, log: tuple[Path, Path], capsys: pytest.CaptureFixture) -> None:
    events, truth = log
    old, new = rule_files(tmp_path)
    argv = ["backtest", "--rules", old, "--against", new, "--events", str(events), "--truth", str(truth)]
    assert main([*argv, "--format", "json"]) == 0
    captured = capsys.readouterr()
    assert f"bad line: {events}:" in captured.err  # the broken last line: counted, reported
    report = orjson.loads(captured.out)
    assert report["input"]["bad"] == 1 and report["input"]["events"] > 25_000
    rows = report["rows"]
    for row in rows:
        assert {
            "status",
            "rule_old",
            "rule_new",
            "group",
            "opened_old",
            "opened_new",
            "delta_ms",
            "severity_old",
            "severity_new",
            "incident_id_old",
            "incident_id_new",
        } <= set(row)
    (injected,) = [r for r in rows if r["truth"] is not None and r["status"] == "both"]
    assert injected["rule_old"] == injected["rule_new"] == "spike"
    assert injected["delta_ms"] < 0  # the 5m window detects the injected spike earlier
    assert any(r["status"] == "only old" and r["rule_old"] == "retired" for r in rows)
    (detected,) = report["truths"]
    assert detected["detected_old"] and detected["detected_new"]
    assert detected["difference_ms"] == injected["delta_ms"] < 0
    summary = report["summary"]
    assert (
        summary["both"] + summary["only_old"]
        == summary["old_incidents"]
        == sum(r["rule_old"] is not None for r in rows)
    )
    assert summary["new_earlier"] >= 1
    assert {"rule": "retired", "old": summary["only_old"], "new": None} in report["rules"]

    out = tmp_path / "report.md"
    assert main([*argv, "--out", str(out)]) == 0
    text = out.read_text()
    assert text.splitlines()[2].startswith(
        f"old: {summary['old_incidents']} incidents, new: {summary['new_incidents']};"
    )
    assert "| status " in text and "| only old | retired" in text


@pytest.mark.usefixtures("rule_engine")
def test_an_added_rule_shows_as_only_new(tmp_path: Path, log: tuple[Path, Path], capsys: pytest.CaptureFixture) -> None:
    events, _ = log
    added = "rule any_hallucinations: count(hallucination) >= 30 over 10m by model -> sev4\n"
    old, new = rule_files(tmp_path, NEW_RULES, NEW_RULES + added)
    assert main(["backtest", "--rules", old, "--against", new, "--events", str(events), "--format", "json"]) == 0
    report = orjson.loads(capsys.readouterr().out)
    assert {r["status"] for r in report["rows"] if r["rule_new"] == "any_hallucinations"} == {"only new"}
    assert all(r["status"] == "both" and r["delta_ms"] == 0 for r in report["rows"] if r["rule_new"] == "spike")


@pytest.mark.usefixtures("rule_engine")
def test_unchanged_rules_reuse_the_old_records(log: tuple[Path, Path]) -> None:
    events, _ = log
    old, _ = load_rules({"old.rules": OLD_RULES})
    new, _ = load_rules(
        {
            "new.rules": NEW_RULES + "rule retired: rate(hallucination) > 0.03 over 15m by model "
            "min 300 events -> sev3 category other"
        }
    )
    fast = run_backtest(old, new, [str(events)])
    full = run_backtest(old, new, [str(events)], reuse_unchanged=False)
    assert fast.backtest == full.backtest
    as_events = [validate_event(orjson.loads(line)) for line in events.read_bytes().splitlines()[:-1]]
    assert run_backtest(old, new, as_events).backtest == full.backtest  # an iterable of events: one pass


def test_broken_new_rules_exit_1_with_a_caret(tmp_path: Path, log: tuple[Path, Path], capsys) -> None:
    events, _ = log
    old, new = rule_files(tmp_path, new="rule spike: rate(hallucination) > 3x baselin over 5m -> sev2\n")
    assert main(["backtest", "--rules", old, "--against", new, "--events", str(events)]) == 1
    captured = capsys.readouterr()
    assert f"{new}:1:" in captured.err and "^" in captured.err
    assert "Traceback" not in captured.err and captured.out == ""


@pytest.mark.usefixtures("rule_engine")
def test_missing_event_file_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    old, new = rule_files(tmp_path)
    assert main(["backtest", "--rules", old, "--against", new, "--events", str(tmp_path / "nope.jsonl")]) == 1
    assert capsys.readouterr().err.startswith("firebreak backtest: ")


@pytest.mark.usefixtures("rule_engine")
def test_fail_on_missed_for_ci(tmp_path: Path, log: tuple[Path, Path], capsys: pytest.CaptureFixture) -> None:
    """Exit 3 when the candidate loses something: an injection the current rules catch
    (with --truth), else an incident only the current rules open."""
    events, truth = log
    old, new = rule_files(tmp_path)
    base = ["backtest", "--rules", old, "--against", new, "--events", str(events), "--fail-on-missed"]
    assert main([*base, "--truth", str(truth)]) == 0  # the 5m window still catches the spike
    capsys.readouterr()
    assert main(base) == 3  # ... but `retired` opened incidents the candidate does not
    assert "firebreak backtest: only old: retired" in capsys.readouterr().err
    blind = tmp_path / "blind.rules"
    blind.write_text("rule spike: rate(hallucination) > 50x baseline over 10m by model min 200 events -> sev2\n")
    assert (
        main(
            [
                "backtest",
                "--rules",
                new,
                "--against",
                str(blind),
                "--events",
                str(events),
                "--truth",
                str(truth),
                "--fail-on-missed",
            ]
        )
        == 3
    )
    assert "firebreak backtest: missed: hallucination on model=" in capsys.readouterr().err
