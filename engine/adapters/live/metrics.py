"""Worker metrics in the Prometheus text format (served at /metrics by the Faust web server)."""

from __future__ import annotations

import time
from collections import Counter
from typing import TYPE_CHECKING, Any

from hdrh.histogram import HdrHistogram

if TYPE_CHECKING:
    from engine.adapters.live.app import LiveWorker

QUANTILES = (50.0, 90.0, 99.0, 99.9)


def number(value: float) -> str:
    """A sample value in full: `%g` would print 1772328597.928 (a watermark) or 1234567 (a
    counter) with six significant digits."""
    if isinstance(value, int) or float(value).is_integer():
        return str(int(value))
    return repr(float(value))


class Metrics:
    def __init__(self) -> None:
        self.events_in = 0
        self.records: Counter[str] = Counter()
        self.reloads = 0
        self.reload_failures = 0
        self.fenced = 0
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

    def render(self, worker: LiveWorker) -> str:
        now = time.monotonic()
        then, count = self._rate_mark
        if now - then >= 1.0:
            self.events_per_second = (self.events_in - count) / (now - then)
            self._rate_mark = (now, self.events_in)
        lines: list[str] = []

        def metric(name: str, kind: str, help_text: str, samples: list[tuple[str, float]]) -> None:
            lines.append(f"# HELP {name} {help_text}")
            lines.append(f"# TYPE {name} {kind}")
            lines.extend(f"{name}{labels} {number(value)}" for labels, value in samples)

        route_stats = worker.route_stage.stats
        shard_stats: Counter[str] = Counter()
        open_by_severity: Counter[str] = Counter()
        for shard in worker.shards.values():
            shard_stats.update(shard.state.stats)
            for incident in shard.state.engine.open_incidents():
                open_by_severity[incident["severity"]] += 1
        metric("firebreak_events_total", "counter", "Input messages taken by this worker.", [("", self.events_in)])
        metric("firebreak_events_per_second", "gauge", "Input messages per second, between scrapes.",
               [("", self.events_per_second)])  # fmt: skip
        metric("firebreak_dead_lettered_total", "counter", "Input messages sent to the dead-letter topic.",
               [("", route_stats["dead_lettered"])])  # fmt: skip
        metric("firebreak_late_events_total", "counter", "Events older than the watermark, not aggregated.",
               [("", shard_stats["late"])])  # fmt: skip
        metric("firebreak_duplicates_dropped_total", "counter", "Re-delivered events dropped by the shards.",
               [("", shard_stats["duplicates"] + shard_stats["redelivered"])])  # fmt: skip
        metric("firebreak_open_incidents", "gauge", "Open incidents in this worker's shards, by severity.",
               [(f'{{severity="sev{n}"}}', open_by_severity[f"sev{n}"]) for n in range(1, 5)])  # fmt: skip
        metric("firebreak_records_total", "counter", "Records committed, by type.",
               [(f'{{type="{kind}"}}', n) for kind, n in sorted(self.records.items())])  # fmt: skip
        metric("firebreak_consumer_lag", "gauge", "Messages not yet taken, per assigned partition.",
               [(f'{{topic="{topic}",partition="{p}"}}', lag) for topic, p, lag in worker.lags()])  # fmt: skip
        shards = sorted(worker.shards.items())
        metric("firebreak_watermark_seconds", "gauge",
               "Event time (Unix seconds) up to which a shard has decided; a flat line while events arrive is a stall.",
               [(f'{{shard="{n}"}}', shard.state.engine.watermark / 1000) for n, shard in shards
                if shard.state.engine.watermark is not None])  # fmt: skip
        metric("firebreak_input_event_time_seconds", "gauge",
               "Largest event time (Unix seconds) a shard has heard of, per input partition.",
               [(f'{{shard="{n}",partition="{p}"}}', ts / 1000) for n, shard in shards
                for p, ts in sorted(shard.state.max_ts.items())])  # fmt: skip
        metric("firebreak_idle_input_partitions", "gauge",
               "Input partitions a shard treats as idle (caught up and quiet: they do not hold time back).",
               [(f'{{shard="{n}"}}', len(shard.state.idle)) for n, shard in shards])  # fmt: skip
        metric("firebreak_input_partition_idle", "gauge", "1 while a shard treats the input partition as idle.",
               [(f'{{shard="{n}",partition="{p}"}}', int(p in shard.state.idle)) for n, shard in shards
                for p in range(shard.state.input_partitions)])  # fmt: skip
        metric("firebreak_shards_fenced_total", "counter",
               "Shards dropped because another worker took them over while this one was paused.",
               [("", self.fenced)])  # fmt: skip
        metric("firebreak_rule_reloads_total", "counter", "Rule reloads applied.", [("", self.reloads)])
        metric("firebreak_rule_reload_failures_total", "counter", "Rule reloads refused (bad rules).",
               [("", self.reload_failures)])  # fmt: skip
        h = self.evaluation
        quantiles = [(f'{{quantile="{q / 100:g}"}}', h.get_value_at_percentile(q) / 1e6) for q in QUANTILES]
        metric("firebreak_evaluation_seconds", "summary", "Time to take one routed message and evaluate.",
               quantiles)  # fmt: skip
        lines.append(f"firebreak_evaluation_seconds_count {h.get_total_count()}")
        lines.append(f"firebreak_evaluation_seconds_sum {number(self.evaluation_sum_s)}")
        return "\n".join(lines) + "\n"
