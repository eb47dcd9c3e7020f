"""The worker's /metrics: a collector over the snapshot the worker hands it; prometheus_client
writes the text format (issue 16)."""

from __future__ import annotations

from firebreak.adapters.live.metrics import Metrics, ShardView, WorkerView
from prometheus_client.parser import text_string_to_metric_families


def parse(text: str) -> dict[tuple[str, tuple], float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def test_the_view_and_the_counters_become_metric_families():
    metrics = Metrics()
    metrics.events_in = 1_234_567
    metrics.count_records([{"type": "incident.opened"}, {"type": "containment.command"}, {"type": "incident.opened"}])
    metrics.observe_evaluation(0.002)
    view = WorkerView(
        dead_lettered=3,
        shards=[
            ShardView(
                1,
                {"late": 2, "duplicates": 1, "redelivered": 4},
                {"sev1": 1},
                1_772_328_597_928,
                {0: 1_772_328_627_928, 1: 1_772_328_600_000},
                frozenset({1}),
                2,
            ),
            ShardView(0, {"late": 5}, {"sev1": 1, "sev3": 2}, None, {}, frozenset(), 2),
        ],
        lags=[("ai.inference.events", 0, 7)],
    )
    got = parse(metrics.render(view))
    assert got[("firebreak_events_total", ())] == 1_234_567  # in full, not 1.23457e+06
    assert got[("firebreak_dead_lettered_total", ())] == 3
    assert got[("firebreak_late_events_total", ())] == 7
    assert got[("firebreak_duplicates_dropped_total", ())] == 5
    assert got[("firebreak_open_incidents", (("severity", "sev1"),))] == 2
    assert got[("firebreak_open_incidents", (("severity", "sev3"),))] == 2
    assert got[("firebreak_records_total", (("type", "incident.opened"),))] == 2
    assert got[("firebreak_consumer_lag", (("partition", "0"), ("topic", "ai.inference.events")))] == 7
    assert got[("firebreak_watermark_seconds", (("shard", "1"),))] == 1_772_328_597.928  # exact
    assert ("firebreak_watermark_seconds", (("shard", "0"),)) not in got  # no watermark yet: no sample
    assert got[("firebreak_input_partition_idle", (("partition", "1"), ("shard", "1")))] == 1
    assert got[("firebreak_idle_input_partitions", (("shard", "0"),))] == 0
    assert got[("firebreak_evaluation_seconds_count", ())] == 1
    assert 0.0019 < got[("firebreak_evaluation_seconds", (("quantile", "0.99"),))] < 0.0021


def test_checkpoints_committed_failed_and_pending():
    metrics = Metrics()
    metrics.checkpoints.update({"head": 41, "full": 3})
    metrics.checkpoint_failures["read"] += 2
    view = WorkerView(
        shards=[
            ShardView(0, {}, {}, None, {}, frozenset(), 2, checkpoint_pending_s=95.5),
            ShardView(1, {}, {}, None, {}, frozenset(), 2),
        ],
        checkpoint_interval_s=60.0,
    )
    got = parse(metrics.render(view))
    assert got[("firebreak_checkpoints_total", (("kind", "full"),))] == 3
    assert got[("firebreak_checkpoints_total", (("kind", "head"),))] == 41
    assert got[("firebreak_checkpoint_failures_total", (("operation", "read"),))] == 2
    # every operation has its series from the start, so increase() sees the first failure
    assert got[("firebreak_checkpoint_failures_total", (("operation", "producer"),))] == 0
    assert got[("firebreak_checkpoint_pending_seconds", (("shard", "0"),))] == 95.5
    assert got[("firebreak_checkpoint_pending_seconds", (("shard", "1"),))] == 0
    assert got[("firebreak_checkpoint_interval_seconds", ())] == 60


def test_the_case_stage_shows_what_it_grouped_paged_and_held_back_where_it_runs():
    counts = {"cases": 5, "pages": 5, "grouped": 16, "inhibited": 2, "updates": 3, "held": 4}
    got = parse(Metrics().render(WorkerView(cases=counts)))
    assert got[("firebreak_cases_total", ())] == 5 and got[("firebreak_case_pages_total", ())] == 5
    assert got[("firebreak_pages_suppressed_total", (("reason", "grouping"),))] == 16
    assert got[("firebreak_pages_suppressed_total", (("reason", "inhibition"),))] == 2
    assert got[("firebreak_pages_suppressed_total", (("reason", "update"),))] == 3
    assert got[("firebreak_case_stage_held", ())] == 4
    assert not [k for k in parse(Metrics().render(WorkerView())) if "case" in k[0]]  # led by another worker
