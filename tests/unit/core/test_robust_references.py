"""Robust and seasonal references (docs/detection.md#robust-and-seasonal-references):
`baseline(S, median)`, `baseline(S, trimmed P%)` and `baseline(S, seasonal D)` read the
reference from window-length slices of the span — a burst in the past does not raise a
median, and the same hour yesterday knows the day's curve. Every scenario runs on both
engines and their records must be equal."""

from __future__ import annotations

import pytest
from corekit import HOUR, MIN, event, of_type, offset, rules, run
from firebreak.core.engine import robust_mean


def _both(rule: str, events: list) -> list[dict]:
    python, native = run(rule, events, engine="python"), run(rule, events, engine="native")
    assert python == native
    return python


def _steady(per_window: dict[int, int], window: int = 10 * MIN, **fields) -> list:
    """``per_window[i]`` events spread over the i-th window (0 where not given)."""
    out = []
    for w in range(max(per_window) + 1):
        n = per_window.get(w, 0)
        for i in range(n):
            at = w * window + i * window // n
            out.append(event(f"w{w}-{i}", at, user=f"u{i % 7}", **fields))
    return out


def test_robust_mean_cuts_each_end_and_is_the_median_at_half():
    assert robust_mean([5.0, 1.0, 100.0], 0.5) == 5.0
    assert robust_mean([4.0, 1.0, 100.0, 2.0], 0.5) == 3.0
    assert robust_mean([1.0, 2.0, 3.0, 4.0, 1000.0], 0.2) == 3.0  # one cut from each end
    assert robust_mean([1.0, 2.0, 3.0, 4.0, 1000.0], 0.0) == 202.0
    assert robust_mean([1.0, 2.0], 0.25) == 1.5  # nothing cut from two values
    assert robust_mean([7.0], 0.5) == 7.0


# 20 calls per 10m, a burst of 400 at 1h40m (before the 6h span is complete: it opens
# nothing), then from 6h40m 60 a window (3x) while the burst is still in the span
BURST = {**{w: 20 for w in range(0, 40)}, 10: 400, **{w: 60 for w in range(40, 43)}}


def test_a_burst_in_the_span_does_not_raise_a_median():
    pooled = "rule calls: count() > 2x baseline(6h) over 10m -> sev3"
    median = "rule calls: count() > 2x baseline(6h, median) over 10m -> sev3"
    events = _steady(BURST)
    # pooled: the burst lifts the span's mean to ~30 a window: 60 is not above 2x of it
    assert of_type(_both(pooled, events), "incident.opened") == []
    opened = of_type(_both(median, events), "incident.opened")
    assert len(opened) == 1
    assert opened[0]["baseline"] == 20  # the median window of the span, the burst left out
    assert offset(opened[0]) > 40 * 10 * MIN


def test_a_trimmed_mean_cuts_the_burst_too():
    # 10% of 36 slices: three from each end — the burst straddles two slices at the onset's step
    rule = "rule calls: count() > 2x baseline(6h, trimmed 10%) over 10m -> sev3"
    opened = of_type(_both(rule, _steady(BURST)), "incident.opened")
    assert len(opened) == 1 and opened[0]["baseline"] == 20


def _day(busy: int, quiet: int, days: int, spike: tuple[int, int, int] | None = None) -> list:
    """An hour-window a call count: ``busy`` calls an hour 9:00–17:00, ``quiet`` otherwise;
    ``spike`` = (day, hour, calls) replaces one hour."""
    out = []
    for d in range(days):
        for h in range(24):
            n = busy if 9 <= h < 17 else quiet
            if spike is not None and (d, h) == spike[:2]:
                n = spike[2]
            for i in range(n):
                out.append(event(f"d{d}h{h}-{i}", d * 24 * HOUR + h * HOUR + i * HOUR // n, user=f"u{i % 5}"))
    return out


def test_the_same_hour_yesterday_knows_the_days_curve():
    # `min 5 events`: the one season of a quiet hour holds 8 (the default asks for 20)
    pooled = "rule calls: count() > 2x baseline(1d) over 1h min 5 events -> sev3"
    seasonal = "rule calls: count() > 2x baseline(1d, seasonal 1d) over 1h min 5 events -> sev3"
    ordinary = _day(busy=60, quiet=8, days=3)
    # the morning rise is 60 against a day's mean of ~25: a pooled reference opens each morning
    assert len(of_type(_both(pooled, ordinary), "incident.opened")) == 2
    assert of_type(_both(seasonal, ordinary), "incident.opened") == []
    # a night of 30 calls is 2x the same hour the night before (8)
    spiked = _day(busy=60, quiet=8, days=3, spike=(2, 3, 30))
    opened = of_type(_both(seasonal, spiked), "incident.opened")
    assert len(opened) == 1
    assert opened[0]["baseline"] == 8
    assert 2 * 24 * HOUR + 3 * HOUR < offset(opened[0]) <= 2 * 24 * HOUR + 4 * HOUR + 5 * MIN


def test_a_week_of_seasons_takes_their_median():
    # four days; day 1 had a burst of 200 at 3:00. On day 3 at 3:00 (30 calls against 8 the
    # other nights) the three seasons are 8, 200 and 8: their median is 8, their mean 72
    rule = "rule calls: count() > 2x baseline(3d, seasonal 1d, median) over 1h min 5 events -> sev3"
    events = [e for e in _day(busy=60, quiet=8, days=4, spike=(1, 3, 200)) if not e.event_id.startswith("d3h3-")]
    events += [event(f"x{i}", 3 * 24 * HOUR + 3 * HOUR + i * HOUR // 30, user="u0") for i in range(30)]
    events.sort(key=lambda e: (e.ts, e.event_id))
    opened = of_type(_both(rule, events), "incident.opened")
    assert len(opened) == 1 and opened[0]["baseline"] == 8
    # the seasons' mean is lifted by the burst: nothing opens
    assert of_type(_both(rule.replace(", median", ""), events), "incident.opened") == []


def test_a_warm_up_reads_the_slices_it_has():
    # `warmup 1h` with a median: from 1h10m the reference is the median of the first hour's
    # six 10-minute slices (one of them a burst), not their mean
    rule = "rule calls: count() > 2x baseline(6h, median, warmup 1h) over 10m -> sev3"
    events = _steady({0: 20, 1: 20, 2: 300, 3: 20, 4: 20, 5: 20, 6: 20, 7: 70})
    opened = of_type(_both(rule, events), "incident.opened")
    assert len(opened) == 1 and opened[0]["baseline"] == 20
    assert "significance" not in opened[0]


def test_a_past_incidents_slices_are_left_out():
    # an incident at 6h10m (80 calls, 4x); then 20 again; at 8h a second rise to 60 is judged
    # against the median of the slices the first incident does not reach into
    rule = "rule calls: count() > 2x baseline(6h, median) over 10m -> sev3"
    windows = {w: 20 for w in range(0, 50)}
    windows.update({37: 80, 38: 80, 48: 60, 49: 60})
    opened = of_type(_both(rule, _steady(windows)), "incident.opened")
    assert len(opened) == 2
    assert [r["baseline"] for r in opened] == [20, 20]


@pytest.mark.parametrize(
    ("text", "every", "trim"),
    [
        ("baseline(6h, median)", 10 * MIN, 0.5),
        ("baseline(6h, trimmed 10%)", 10 * MIN, 0.1),
        ("baseline(7d, seasonal 1d)", 24 * HOUR, 0.0),
        ("baseline(7d, seasonal 1d, median)", 24 * HOUR, 0.5),
    ],
)
def test_the_options_compile_and_print_back(text, every, trim):
    (rule,) = rules(f"rule r: count() > 2x {text} over 10m -> sev3")
    assert (rule.slices_every_ms, rule.trim) == (every, trim)
    assert text in rule.text
    (again,) = rules(rule.text)
    assert again.text == rule.text
