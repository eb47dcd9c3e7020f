"""engine/firebreak/durations.py: the one parser and the one formatter of spans of time."""

from __future__ import annotations

import pytest
from firebreak.durations import DurationError, format_duration, parse_duration
from hypothesis import given
from hypothesis import strategies as st


@pytest.mark.parametrize(
    "text, ms",
    [
        ("90s", 90_000),
        ("10m", 600_000),
        ("1h30m", 5_400_000),
        ("250ms", 250),
        ("0m", 0),
        ("2d", 172_800_000),
        ("1h0m30s", 3_630_000),
    ],
)
def test_parse(text: str, ms: int):
    assert parse_duration(text) == ms


@pytest.mark.parametrize(
    "text, message",
    [
        ("90", "`90` needs a unit (ms, s, m, h, d)"),
        ("1.5m", "`1.5m` is not a duration"),
        ("-5m", "is not a duration"),
        ("5 m", "is not a duration"),
        ("", 'expected a duration like "1h30m"'),
        ("10x", "is not a duration"),
    ],
)
def test_parse_says_what_is_wrong(text: str, message: str):
    with pytest.raises(DurationError, match=message.replace("(", r"\(").replace(")", r"\)")):
        parse_duration(text)


@pytest.mark.parametrize(
    "ms, text",
    [
        (0, "0s"),
        (250, "250ms"),
        (1_500, "1.5s"),
        (45_000, "45s"),
        (90_000, "1m30s"),
        (299_999, "4m59s"),
        (3_900_000, "1h5m"),
        (86_400_000, "24h"),
        (-90_000, "-1m30s"),
    ],
)
def test_format(ms: int, text: str):
    assert format_duration(ms) == text


@given(st.integers(min_value=0, max_value=10**10))
def test_what_it_prints_it_reads_back_to_the_second(ms: int):
    text = format_duration(ms)
    if ms < 1000 or "." not in text:  # tenths of a second are rounded for people
        assert abs(parse_duration(text) - ms) < 1000
