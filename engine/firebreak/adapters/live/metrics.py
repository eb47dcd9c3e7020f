"""Worker metrics for Prometheus (served at /metrics by the Faust web server).

The worker keeps its own counters here (`Metrics`) and, at each scrape, hands a small
snapshot of what its stages and shards know (`WorkerView`); the collector turns both into
metric families and prometheus_client writes the text format. Nothing here reads the worker's
internals: the worker decides what it shows (`LiveWorker.view`).
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from hdrh.histogram import HdrHistogram
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from firebreak.records import SEVERITY_NAMES

QUANTILES = (50.0, 90.0, 99.0, 99.9)
# what a shard retries when the broker does not answer: reading its checkpoint, starting its
# producer (which fences an earlier owner)
CHECKPOINT_OPERATIONS = ("read", "producer")
CONTENT_TYPE = "text/plain; version=0.0.4"


@dataclass(frozen=True)
class ShardView:
    """What one shard shows at a scrape."""

    shard: int
    stats: Mapping[str, int]  # late, duplicates, redelivered, ...
    open_by_severity: Mapping[str, int]  # "sev1" -> open incidents
    watermark_ms: int | None
    event_time_ms: Mapping[int, int]  # input partition -> the largest event time heard of
    idle: frozenset[int]  # input partitions treated as idle
    input_partitions: int
    checkpoint_pending_s: float = 0.0  # since its last full checkpoint, while routed messages wait for one


@dataclass(frozen=True)
class WorkerView:
    """What the worker shows at a scrape: its stages' counts, its shards, its consumer lag."""

    dead_lettered: int = 0
    shards: list[ShardView] = field(default_factory=list)
    lags: list[tuple[str, int, int]] = field(default_factory=list)  # (topic, partition, messages not yet taken)
    checkpoint_interval_s: float = 0.0  # --checkpoint-interval
    cases: Mapping[str, int] | None = None  # the case stage's counts, where it runs (case_runner.py)


class Metrics:
    """The worker's own counters and the evaluation-time histogram (hdrhistogram)."""

    def __init__(self) -> None:
        self.events_in = 0
        self.records: Counter[str] = Counter()
        self.reloads = 0
        self.reload_failures = 0
        self.fenced = 0
        # the local hand-off (shard_host.py): routed messages taken in process ("taken"), left to the
        # fetched copy ("fetched": out of order or a full queue; "unsent": the send failed), and
        # fetched copies skipped before Faust's agent ("skipped")
        self.local: Counter[str] = Counter()
        self.checkpoints: Counter[str] = Counter()  # committed, by kind: "full" (snapshot) or "head"
        self.checkpoint_failures: Counter[str] = Counter()  # tries that failed and were retried, by operation
        self.evaluation = HdrHistogram(1, 60_000_000, 2)  # microseconds, 1 µs .. 60 s
        self.evaluation_sum_s = 0.0
        self._rate_mark = (time.monotonic(), 0)
        self.events_per_second = 0.0

    def observe_evaluation(self, seconds: float) -> None:
        self.evaluation.record_value(max(1, min(int(seconds * 1e6), 60_000_000)))
        self.evaluation_sum_s += seconds

    def count_records(self, records: list[dict[str, Any]]) -> None:
        for record in records:
            self.records[record["type"]] += 1

    def render(self, view: WorkerView) -> str:
        """The Prometheus text format of these counters and ``view``."""
        now = time.monotonic()
        then, count = self._rate_mark
        if now - then >= 1.0:
            self.events_per_second = (self.events_in - count) / (now - then)
            self._rate_mark = (now, self.events_in)
        registry = CollectorRegistry(auto_describe=False)
        registry.register(_Collector(self, view))
        return generate_latest(registry).decode()


class _Collector:
    """One scrape's metric families (a prometheus_client custom collector)."""

    def __init__(self, metrics: Metrics, view: WorkerView) -> None:
        self.m, self.view = metrics, view

    def collect(self) -> Iterator[Metric]:
        m, view = self.m, self.view
        shard_stats: Counter[str] = Counter()
        open_by_severity: Counter[str] = Counter()
        for shard in view.shards:
            shard_stats.update(shard.stats)
            open_by_severity.update(shard.open_by_severity)
        yield CounterMetricFamily("firebreak_events", "Input messages taken by this worker.", value=m.events_in)
        yield GaugeMetricFamily(
            "firebreak_events_per_second", "Input messages per second, between scrapes.", value=m.events_per_second
        )
        yield CounterMetricFamily(
            "firebreak_dead_lettered", "Input messages sent to the dead-letter topic.", value=view.dead_lettered
        )
        yield CounterMetricFamily(
            "firebreak_late_events", "Events older than the watermark, not aggregated.", value=shard_stats["late"]
        )
        yield CounterMetricFamily(
            "firebreak_duplicates_dropped",
            "Re-delivered events dropped by the shards.",
            value=shard_stats["duplicates"] + shard_stats["redelivered"],
        )
        family = GaugeMetricFamily(
            "firebreak_open_incidents", "Open incidents in this worker's shards, by severity.", labels=["severity"]
        )
        for severity in SEVERITY_NAMES:
            family.add_metric([severity], open_by_severity[severity])
        yield family
        family = CounterMetricFamily("firebreak_records", "Records committed, by type.", labels=["type"])
        for kind, n in sorted(m.records.items()):
            family.add_metric([kind], n)
        yield family
        family = GaugeMetricFamily(
            "firebreak_consumer_lag", "Messages not yet taken, per assigned partition.", labels=["topic", "partition"]
        )
        for topic, partition, lag in view.lags:
            family.add_metric([topic, str(partition)], lag)
        yield family
        shards = sorted(view.shards, key=lambda s: s.shard)
        family = GaugeMetricFamily(
            "firebreak_watermark_seconds",
            "Event time (Unix seconds) up to which a shard has decided; a flat line while events arrive is a stall.",
            labels=["shard"],
        )
        for s in shards:
            if s.watermark_ms is not None:
                family.add_metric([str(s.shard)], s.watermark_ms / 1000)
        yield family
        family = GaugeMetricFamily(
            "firebreak_input_event_time_seconds",
            "Largest event time (Unix seconds) a shard has heard of, per input partition.",
            labels=["shard", "partition"],
        )
        for s in shards:
            for p, ts in sorted(s.event_time_ms.items()):
                family.add_metric([str(s.shard), str(p)], ts / 1000)
        yield family
        family = GaugeMetricFamily(
            "firebreak_idle_input_partitions",
            "Input partitions a shard treats as idle (caught up and quiet: they do not hold time back).",
            labels=["shard"],
        )
        for s in shards:
            family.add_metric([str(s.shard)], len(s.idle))
        yield family
        family = GaugeMetricFamily(
            "firebreak_input_partition_idle",
            "1 while a shard treats the input partition as idle.",
            labels=["shard", "partition"],
        )
        for s in shards:
            for p in range(s.input_partitions):
                family.add_metric([str(s.shard), str(p)], int(p in s.idle))
        yield family
        yield CounterMetricFamily(
            "firebreak_shards_fenced",
            "Shards dropped because another worker took them over while this one was paused.",
            value=m.fenced,
        )
        family = CounterMetricFamily(
            "firebreak_local_handoff",
            "Routed messages of this worker's own shards by how they reached them: taken as handed in "
            "process, left to the fetched copy, not sent; and fetched copies skipped (taken already).",
            labels=["outcome"],
        )
        for outcome in ("taken", "fetched", "unsent", "skipped"):
            family.add_metric([outcome], m.local[outcome])
        yield family
        family = CounterMetricFamily(
            "firebreak_checkpoints",
            "Shard checkpoints committed (with the records they count), by kind: full snapshot or head.",
            labels=["kind"],
        )
        for kind in ("full", "head"):
            family.add_metric([kind], m.checkpoints[kind])
        yield family
        family = CounterMetricFamily(
            "firebreak_checkpoint_failures",
            "Tries to restore a shard that failed: read "
            "its checkpoint, start its transactional producer (retried until "
            "--commit-timeout, then the worker stops), by operation.",
            labels=["operation"],
        )
        for operation in CHECKPOINT_OPERATIONS:
            family.add_metric([operation], m.checkpoint_failures[operation])
        yield family
        family = GaugeMetricFamily(
            "firebreak_checkpoint_pending_seconds",
            "Seconds since a shard's last full "
            "checkpoint while routed messages wait for one (0 when none wait); it should "
            "stay under the checkpoint interval.",
            labels=["shard"],
        )
        for s in shards:
            family.add_metric([str(s.shard)], s.checkpoint_pending_s)
        yield family
        yield GaugeMetricFamily(
            "firebreak_checkpoint_interval_seconds",
            "The worker's --checkpoint-interval.",
            value=view.checkpoint_interval_s,
        )
        if view.cases is not None:  # the case stage leads here: what it grouped, paged and held back
            yield CounterMetricFamily("firebreak_cases", "Cases opened by the case stage.", value=view.cases["cases"])
            yield CounterMetricFamily("firebreak_case_pages", "Case records that page.", value=view.cases["pages"])
            family = CounterMetricFamily(
                "firebreak_pages_suppressed",
                "Pages not sent, by reason (grouping: "
                "an incident joined a case; inhibition: muted by a sev1 case on its "
                "scope; update: a severity rise within `wait`).",
                labels=["reason"],
            )
            for reason, key in (("grouping", "grouped"), ("inhibition", "inhibited"), ("update", "updates")):
                family.add_metric([reason], view.cases[key])
            yield family
            yield GaugeMetricFamily(
                "firebreak_case_stage_held",
                "Incident records the case stage holds until every shard is past their time.",
                value=view.cases["held"],
            )
        yield CounterMetricFamily("firebreak_rule_reloads", "Rule reloads applied.", value=m.reloads)
        yield CounterMetricFamily(
            "firebreak_rule_reload_failures", "Rule reloads refused (bad rules).", value=m.reload_failures
        )
        h = m.evaluation
        summary = Metric("firebreak_evaluation_seconds", "Time to take one routed message and evaluate.", "summary")
        for q in QUANTILES:
            summary.add_sample(
                "firebreak_evaluation_seconds", {"quantile": f"{q / 100:g}"}, h.get_value_at_percentile(q) / 1e6
            )
        summary.add_sample("firebreak_evaluation_seconds_count", {}, h.get_total_count())
        summary.add_sample("firebreak_evaluation_seconds_sum", {}, m.evaluation_sum_s)
        yield summary
