"""The synthetic traffic generator: deterministic, valid, realistic in shape."""

from __future__ import annotations

from collections import Counter

import pytest
from firebreak.core import InvalidEvent, parse_ts, validate_event
from firebreak.synthetic import CATEGORIES, HOUR, MINUTE, Injection, Traffic

T0 = 1_767_225_600_000  # 2026-01-01T00:00:00Z


def every_category(seed: int = 3, rate: float = 2.0) -> Traffic:
    injections = [Injection(c, (30 + 20 * i) * MINUTE, 15 * MINUTE) for i, c in enumerate(CATEGORIES)]
    return Traffic(seed, T0, 3 * HOUR, rate, injections)


def test_same_seed_same_events_other_seed_other_events() -> None:
    first = list(every_category().events())
    assert first == list(every_category().events())
    assert first != list(every_category(seed=4).events())
    assert every_category().truths == every_category().truths


def test_every_event_is_valid_and_within_the_span() -> None:
    traffic = every_category()
    for obj in traffic.events():
        try:
            event = validate_event(obj)
        except InvalidEvent as error:  # pragma: no cover - the message is the point
            pytest.fail(f"{obj['event_id']}: {error}")
        assert T0 <= event.ts < T0 + 3 * HOUR


def test_mostly_in_order_and_never_later_than_a_few_seconds() -> None:
    stamps = [parse_ts(e["ts"]) for e in Traffic(5, T0, HOUR, 20.0).events()]
    back, newest, worst = 0, 0, 0
    for ts in stamps:
        back += ts < newest
        worst = max(worst, newest - ts)
        newest = max(newest, ts)
    assert 0.003 < back / len(stamps) < 0.02
    assert worst <= 5_000  # far inside the default 30 s lateness


def test_shape_of_normal_traffic() -> None:
    events = [e for e in Traffic(6, T0, HOUR, 20.0).events() if e["type"] == "inference"]
    assert 60_000 < len(events) < 80_000
    assert len({e["tenant"] for e in events}) == 10
    assert len({(e["model"], e["model_version"]) for e in events}) == 5
    assert len({e["user"] for e in events}) > 3_000
    hallucination = sum(e["flags"]["hallucination"] for e in events) / len(events)
    assert 0.008 < hallucination < 0.02
    quality = sum(e["scores"]["quality"] for e in events) / len(events)
    assert 0.8 < quality < 0.87
    heavy = Counter(e["user"] for e in events).most_common(1)[0][1]
    assert heavy > 20  # some users are much busier than others


def test_ground_truth_names_the_cause_change() -> None:
    traffic = every_category()
    changes = {e["event_id"]: e for e in traffic.events() if e["type"] == "change"}
    for truth in traffic.truths:
        assert truth.end_ts - truth.onset_ts == 15 * MINUTE
        if truth.category == "adversarial":
            assert truth.cause_event_id is None and len(truth.users) == 5
            continue
        cause = changes[truth.cause_event_id]
        assert cause[truth.dimension] == truth.value
        assert parse_ts(cause["ts"]) == truth.cause_ts < truth.onset_ts


def test_decoy_changes_stay_away_from_injected_targets() -> None:
    traffic = every_category()
    causes = {t.cause_event_id for t in traffic.truths}
    targets = {t.value for t in traffic.truths}
    decoys = [
        c
        for c in traffic.changes
        if c["event_id"] not in causes and c["kind"] in {"deploy", "config_change"} and "revert" not in c["description"]
    ]
    assert decoys
    assert all(c["service"] not in targets for c in decoys)


def test_unknown_category_or_target_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown category"):
        Injection("typo", 0)
    with pytest.raises(ValueError, match="unknown model"):
        Traffic(1, T0, HOUR, 1.0, [Injection("hallucination", 0, target="gpt-9")])
