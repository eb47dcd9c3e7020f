"""One event must not stop, blind or trigger the engine (issue 31: events, time, numbers).

Each case of the issue as a regression test, then Hypothesis streams of hostile and of
valid-but-extreme events through both engines. Whatever can take memory runs in a child
process with its address space capped (``resource.RLIMIT_AS``), so a regression fails the
test instead of filling the machine. Both engines must give identical records and identical
refusals (reason for reason), and no crafted value may change what honest events give.
"""

from __future__ import annotations

import os
import random
import resource
import subprocess
import sys
from functools import cache
from pathlib import Path

import orjson
import pytest
from firebreak.adapters.drive import Driver, batched, drive_batches
from firebreak.adapters.investigation import events_from_files
from firebreak.adapters.live.routing import RouteStage
from firebreak.adapters.live.settings import WorkerSettings
from firebreak.adapters.starter_pack import starter_rule_sources
from firebreak.core import InvalidEvent, validate_event
from firebreak.core.engine import AHEAD_CONFIRM
from firebreak.core.events import MAX_DEPTH, MAX_TS_MS
from firebreak.dsl import load_rules
from firebreak.testing import rules
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.internal import charmap

HERE = Path(__file__).resolve()
SEC, MIN, HOUR, DAY = 1000, 60_000, 3_600_000, 86_400_000
T0 = 1_790_000_000_000  # 2026-09-21T14:13:20Z
CAP_BYTES = 1_200 << 20  # the child's address space (an honest run of the pack needs about half)
MAX_RSS_KB = 450 << 10  # the child's peak resident memory, both engines and Hypothesis included

# rules of our own that read a field outside the schema: its numbers have no domain
CUSTOM = """
rule custom_sum:
  sum(extra) > 1000 over 5m
  -> sev3

rule custom_p95:
  p95(extra) > 1000 over 5m
  -> sev3

rule custom_avg_low:
  avg(extra) < -1000 over 5m
  -> sev3
"""


@cache
def pack() -> tuple:
    compiled, problems = load_rules(starter_rule_sources())
    assert not [p for p in problems if p.level == "error"], problems
    return tuple(compiled) + rules(CUSTOM)


class Sink:
    def __init__(self) -> None:
        self.records: list[bytes] = []
        self.refused: list[tuple] = []

    def record(self, record: dict) -> None:
        self.records.append(orjson.dumps(record))

    def bad(self, where, reason: str, raw: bytes, late: bool) -> None:
        self.refused.append((where, reason, late))


def replay_both(lines: list[bytes], max_skew_ms: int | None = HOUR) -> Sink:
    """Both engines over ``lines``: identical records and refusals, or the test fails."""
    sinks = []
    for kind in ("python", "native"):
        sink = Sink()
        driver = Driver(pack(), 30 * SEC, kind, max_skew_ms=max_skew_ms)
        drive_batches(batched(enumerate(lines, start=1)), driver, sink)
        sinks.append(sink)
    python, native = sinks
    assert native.records == python.records
    assert native.refused == python.refused
    return python


def line(event_id: str, ts, **fields) -> bytes:
    return dumps({"event_id": event_id, "ts": ts, **fields})


def honest(n: int, start: int = T0, every: int = SEC, **fields) -> list[bytes]:
    """Ordinary answers of one service: scores 0.9, sub-second latency, tiny costs."""
    return [
        line(
            f"h{i}",
            start + i * every,
            service="chat",
            feature="qa",
            model="m",
            user=f"u{i % 13}",
            latency_ms=400 + i % 50,
            tokens_in=300,
            tokens_out=200,
            cost_usd=0.002,
            scores={"quality": 0.9},
            flags={"hallucination": False},
            **fields,
        )
        for i in range(n)
    ]


def opened(sink: Sink) -> list[bytes]:
    return [r for r in sink.records if b'"incident.opened"' in r or b'"containment' in r]


# ---- the child: a capped process -------------------------------------------------------------


def warm_hypothesis_tables() -> None:
    """Have Hypothesis write its Unicode tables to its storage directory, here, uncapped.

    On a clean clone (CI) they do not exist yet; ``st.text()`` in the child would build them there, a
    table of all of Unicode's code points, and the capped child fails with ``MemoryError`` (CI did).
    Built once here, the child reads them back from a few kilobytes of gzip.
    """
    charmap.charmap()
    charmap.intervals_from_codec("utf-8")


def in_child(mode: str, payload: bytes = b"") -> dict:
    """Run ``mode`` of this file in a child whose address space is capped; its JSON answer."""
    warm_hypothesis_tables()
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(HERE.parent), os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run(
        [sys.executable, str(HERE), mode], input=payload, capture_output=True, env=env, timeout=120, check=False
    )
    assert done.returncode == 0, done.stderr.decode(errors="replace")[-3000:]
    answer = orjson.loads(done.stdout.splitlines()[-1])
    assert answer["maxrss_kb"] < MAX_RSS_KB, answer["maxrss_kb"]
    return answer


def peak_rss_kb() -> int:
    """This process's own peak resident memory (``VmHWM``).

    Not ``ru_maxrss``: Linux carries that across ``execve`` from the moment of the fork, so a child
    of a large pytest process reports its parent's size (CI's did: 489 MB for a 2-event replay).
    """
    with open("/proc/self/status", encoding="ascii") as status:
        for row in status:
            if row.startswith("VmHWM:"):
                return int(row.split()[1])
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def _child(mode: str) -> None:
    resource.setrlimit(resource.RLIMIT_AS, (CAP_BYTES, CAP_BYTES))
    answer: dict = {}
    if mode in ("replay", "replay-unbounded"):
        lines = sys.stdin.buffer.read().splitlines()
        sink = replay_both(lines, HOUR if mode == "replay" else None)
        answer = {"records": len(sink.records), "refused": [r[1] for r in sink.refused]}
    elif mode == "hostile":
        _hostile_over_honest()
    elif mode == "extremes":
        _valid_extremes()
    answer["maxrss_kb"] = peak_rss_kb()
    sys.stdout.write(orjson.dumps(answer).decode() + "\n")


# ---- time: empty time costs nothing ------------------------------------------------------------


def test_a_year_of_empty_time_between_two_events_costs_nothing():
    lines = [line("a", "2026-11-20T08:00:00Z", model="m"), line("b", "2027-11-20T08:00:00Z", model="m")]
    answer = in_child("replay-unbounded", b"\n".join(lines))
    assert answer["refused"] == []


def test_an_event_dated_9999_costs_nothing_even_when_the_clock_takes_it():
    lines = [line("a", "2026-11-20T08:00:00Z", model="m")]
    lines += [line(f"z{i}", "9999-12-31T23:59:59Z", model="m") for i in range(AHEAD_CONFIRM)]
    answer = in_child("replay", b"\n".join(lines))
    assert len(answer["refused"]) == AHEAD_CONFIRM - 1  # the last of the run is taken
    assert all(r.startswith("ahead:") for r in answer["refused"])


def test_epoch_seconds_as_the_first_event_cost_nothing():
    lines = [line("s", 1_795_000_000, model="m"), line("a", T0, model="m"), line("b", T0 + 10 * DAY, model="m")]
    answer = in_child("replay-unbounded", b"\n".join(lines))
    assert "looks like epoch seconds" in answer["refused"][0]


# ---- time: one event must not blind detection ----------------------------------------------------


def test_one_event_a_day_ahead_does_not_make_the_rest_late():
    lines = honest(600)
    lines.insert(100, line("ahead", T0 + DAY, model="m"))
    sink = replay_both(lines)
    assert [(where, late) for where, _, late in sink.refused] == [(101, True)]
    assert sink.refused[0][1].startswith("ahead: ts 2026-09-22T14:13:20Z is more than 1h after the latest")


def test_a_jump_that_enough_events_in_a_row_agree_on_moves_the_clock():
    lines = honest(60) + honest(30, start=T0 + 3 * HOUR)  # a producer back after an outage
    sink = replay_both(lines)
    assert [where for where, _, _ in sink.refused] == list(range(61, 61 + AHEAD_CONFIRM - 1))
    assert len(replay_both(lines, max_skew_ms=None).refused) == 0


def test_events_interleaved_with_far_ones_keep_the_clock():
    lines = honest(200)
    for i in range(10, 210, 10):  # after the first event: the first one sets the clock
        lines.insert(i + i // 10, line(f"far{i}", T0 + 30 * DAY + i, model="m"))
    sink = replay_both(lines)
    assert len(sink.refused) == 20 and all(reason.startswith("ahead:") for _, reason, _ in sink.refused)


@pytest.mark.parametrize(
    ("ts", "reason"),
    [
        (1_795_000_000, "looks like epoch seconds"),
        (1_795_000_000.5, "looks like epoch seconds"),
        (1_795_000_000_000_000, "after year 9999 as epoch milliseconds (microseconds or nanoseconds?)"),
        (1_795_000_000_000_000_000, "after year 9999 as epoch milliseconds"),
        (-1, "out of range for epoch milliseconds"),
        ("2026-11-20T08:00:00+12:60", "has an offset out of range"),
        ("2026-11-20T08:00:00+24:00", "has an offset out of range"),
        ("2026-11-20T08:00:00\x00Z", "is not an RFC 3339 time"),
        ("2026-11-20T08:00\x00:00Z", "is not an RFC 3339 time"),
        ("2026-W47-5T08:00:00Z", "is not an RFC 3339 time"),
        ("20261120T080000Z", "is not an RFC 3339 time"),
        ("2026-11-20T08:00Z", "is not an RFC 3339 time"),
        ("2026-11-20", "is not an RFC 3339 time"),
        ("2026-324T08:00:00Z", "is not an RFC 3339 time"),
        ("2026-11-20T08:00:00,5Z", "is not an RFC 3339 time"),
        ("２０２６-11-20T08:00:00Z", "is not an RFC 3339 time"),
        ("2026-11-20T08:00:00", "has no zone"),
        ("2026-02-30T08:00:00Z", "no such date"),
        ("2026-11-20T08:00:60Z", "no such date"),
        ("9999-12-31T23:00:00-02:00", "is after 9999"),
        ("10000-01-01T00:00:00Z", "is not an RFC 3339 time"),
        ("1969-12-31T23:59:59Z", "is before 1970"),
    ],
)
def test_one_timestamp_grammar_in_both_decoders(ts, reason):
    sink = replay_both([line("t", ts, model="m")])
    [(_, text, late)] = sink.refused
    assert reason in text and not late


@pytest.mark.parametrize(
    ("ts", "ms"),
    [
        ("2026-11-20t08:00:00z", 1_795_161_600_000),
        ("2026-11-20T08:00:00.123456789Z", 1_795_161_600_123),
        ("2026-11-20T08:00:00.5+01:00", 1_795_161_600_500 - HOUR),
        ("2026-11-20 08:00:00Z", 1_795_161_600_000),
        ("9999-12-31T23:59:59.999Z", MAX_TS_MS),
        (MAX_TS_MS, MAX_TS_MS),
        (999_999_999, 999_999_999),
    ],
)
def test_rfc_3339_forms_and_milliseconds_are_taken_alike(ts, ms):
    assert validate_event({"event_id": "t", "ts": ts}).ts == ms
    assert replay_both([line("t", ts, model="m")]).refused == []


# ---- numbers: a domain per field; sums that cannot wrap ------------------------------------------


def test_one_score_of_1e308_neither_opens_an_incident_nor_containment():
    lines = honest(360, every=5 * SEC)  # 30 minutes of answers scored 0.9
    lines.insert(200, line("crafted", T0 + 1000 * SEC + 1, service="chat", feature="qa", scores={"quality": 1e308}))
    sink = replay_both(lines)
    assert opened(sink) == []
    [(_, reason, _)] = sink.refused
    assert "score `quality` 1e+308 is out of range" in reason


@pytest.mark.parametrize(
    ("fields", "reason"),
    [
        ({"cost_usd": 1e32}, "`cost_usd` 1e+32 is out of range (0 to 1000000)"),
        ({"tokens_out": 1.797e308}, "`tokens_out` 1.797e+308 is out of range (0 to 1000000000)"),
        ({"latency_ms": 86_400_001}, "`latency_ms` 86400001 is out of range (0 to 86400000)"),
        ({"latency_ms": -1}, "`latency_ms` -1 is out of range"),
        ({"tokens_in": 1e30}, "`tokens_in` 1e+30 is out of range"),
        ({"scores": {"relevance": -2e9}}, "score `relevance` -2000000000.0 is out of range"),
    ],
)
def test_numbers_out_of_their_domain_are_refused_by_field(fields, reason):
    lines = honest(100)
    for i in range(50):
        lines.insert(2 * i + 1, line(f"x{i}", T0 + 2 * i * SEC, service="chat", feature="qa", user="x", **fields))
    sink = replay_both(lines)
    assert opened(sink) == [] and len(sink.refused) == 50
    assert all(reason in text for _, text, _ in sink.refused), sink.refused[0]


@pytest.mark.parametrize("value", [1e300, -1e300, 1.797e308, 1e15 + 1, 10**19])
def test_extreme_values_of_a_field_without_a_domain_are_not_values(value):
    lines = [line(f"e{i}", T0 + i * SEC, model="m", extra=value) for i in range(50)]
    sink = replay_both(lines)
    assert sink.refused == [] and opened(sink) == []


def test_values_at_the_edge_of_a_metric_still_count():
    lines = [line(f"e{i}", T0 + i * SEC, model="m", extra=1e15) for i in range(50)]
    sink = replay_both(lines)
    assert any(b"custom_sum" in r for r in opened(sink)) and any(b"custom_p95" in r for r in opened(sink))


# ---- depth ---------------------------------------------------------------------------------------


DEEP = "__deep__"


def nested(depth: int) -> dict:
    """Fields whose `extra` makes the event ``depth`` deep (the event itself: 1); `dumps`
    writes it (orjson does not write past 255)."""
    return {"extra": DEEP + str(depth)}


def dumps(obj: dict) -> bytes:
    raw = orjson.dumps(obj)
    mark = raw.find(b'"' + DEEP.encode())
    if mark < 0:
        return raw
    end = raw.index(b'"', mark + 1)
    depth = int(raw[mark + 1 + len(DEEP) : end])
    opens = b"".join(b'{"a":' if i % 2 else b"[" for i in range(depth - 1))
    closes = b"".join(b"}" if i % 2 else b"]" for i in reversed(range(depth - 1)))
    return raw[:mark] + opens + b"1" + closes + raw[end + 1 :]


@pytest.mark.parametrize("depth", [MAX_DEPTH + 1, 254, 1000])
def test_deep_nesting_is_refused_with_a_reason_everywhere(depth, tmp_path):
    raw = line("deep", T0, model="m", **nested(depth))
    sink = replay_both(honest(20) + [raw] + honest(20, start=T0 + 20 * SEC))
    [(_, reason, _)] = sink.refused
    assert reason == f"the event nests objects or arrays more than {MAX_DEPTH} deep"
    with pytest.raises(InvalidEvent, match="nests"):
        validate_event(orjson.loads(raw))
    events = tmp_path / "events.jsonl"
    events.write_bytes(b"\n".join([*honest(5), raw, *honest(5, start=T0 + 5 * SEC)]) + b"\n")
    loaded = events_from_files([str(events)])  # what `firebreak investigate` reads
    assert len(loaded.events) == 10 and loaded.bad == 1 and "nests" in loaded.bad_samples[0]
    route = RouteStage(pack(), WorkerSettings(rules=()))  # the worker's stage 1 (native)
    [out, *_] = route.handle([(0, 7, raw)])
    assert out.topic == "dead_letter" and "nests" in orjson.loads(out.value)["reason"]


def test_nesting_up_to_the_limit_is_an_event():
    raw = line("deep", T0, model="m", **nested(MAX_DEPTH))
    assert validate_event(orjson.loads(raw)).event_id == "deep"
    assert replay_both([raw]).refused == []


# ---- Hypothesis: hostile events over an honest background ------------------------------------------

FAR = st.integers(T0 + 2 * HOUR, MAX_TS_MS)
HOSTILE = st.one_of(
    FAR.map(lambda ts: {"ts": ts}),  # far ahead (alone among honest events: refused)
    st.integers(0, T0 - HOUR).map(lambda ts: {"ts": ts}),  # far behind: late
    st.integers(1_000_000_000, 99_999_999_999).map(lambda ts: {"ts": ts}),  # epoch seconds
    st.integers(MAX_TS_MS + 1, 10**19).map(lambda ts: {"ts": ts}),  # micro/nanoseconds
    st.text(max_size=40).map(lambda ts: {"ts": ts}),
    st.sampled_from(["latency_ms", "tokens_in", "tokens_out", "cost_usd"]).flatmap(
        lambda name: st.one_of(st.floats(1e9 + 1, 1.7e308), st.floats(-1.7e308, -1e-300)).map(lambda v: {name: v})
    ),
    st.one_of(st.floats(1e9 + 1, 1.7e308), st.floats(-1.7e308, -1e9 - 1)).map(lambda v: {"scores": {"quality": v}}),
    st.integers(MAX_DEPTH + 1, 400).map(nested),
)


def _hostile_over_honest() -> None:
    background = honest(400, every=3 * SEC)
    expected = replay_both(background).records

    @settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck), database=None)
    @given(st.lists(HOSTILE, min_size=1, max_size=6), st.randoms(use_true_random=False))
    def check(crafted: list[dict], rng: random.Random) -> None:
        lines = list(background)
        for i, fields in enumerate(crafted):
            at = rng.randrange(1, len(lines))
            obj = {"event_id": f"x{i}", "ts": T0 + 3 * SEC * at, "service": "chat", "feature": "qa", **fields}
            lines.insert(at, dumps(obj))
        sink = replay_both(lines)
        assert sink.records == expected  # nothing crafted changes what honest events give
        assert len(sink.refused) == len(crafted)

    check()


def test_hostile_events_over_an_honest_background_change_nothing():
    in_child("hostile")


# ---- Hypothesis: valid but extreme events ------------------------------------------------------------

NUMBERS = st.one_of(
    st.floats(allow_nan=False, allow_infinity=False), st.integers(-(2**63), 2**64 - 1), st.sampled_from([1e15, -1e15])
)
EXTREME = st.fixed_dictionaries(
    {
        "ts": st.one_of(
            st.integers(0, MAX_TS_MS), st.sampled_from(["9999-12-31T23:59:59.999z", "1970-01-01T00:00:00Z"])
        ),
        "model": st.sampled_from(["m", "n"]),
        "user": st.one_of(
            st.text(max_size=8), st.integers(-(2**63), 2**64 - 1), st.floats(allow_nan=False), st.just("u" * 100_000)
        ),
        "extra": NUMBERS,
        "latency_ms": st.sampled_from([0, 86_400_000, 0.5]),
        "tokens_out": st.sampled_from([0, 1_000_000_000]),
        "cost_usd": st.sampled_from([0, 1_000_000, 1e-300]),
        "scores": st.fixed_dictionaries({"quality": st.sampled_from([-1e9, 1e9, 0.0, 5e-324])}),
    }
)


def _valid_extremes() -> None:
    @settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck), database=None)
    @given(st.lists(EXTREME, min_size=1, max_size=40), st.sampled_from([HOUR, None]), st.integers(1, MAX_DEPTH))
    def check(events: list[dict], skew: int | None, depth: int) -> None:
        lines = [dumps({"event_id": f"v{i}", **e, "extra2": nested(depth)["extra"]}) for i, e in enumerate(events)]
        replay_both(lines, skew)  # identical records and refusals, no exception, memory capped

    check()


def test_valid_but_extreme_events_give_the_same_records_in_both_engines():
    in_child("extremes")


if __name__ == "__main__":
    _child(sys.argv[1])
