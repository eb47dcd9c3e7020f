"""The pure detection core: no Kafka, no Faust, no clock, no I/O.

Time arrives with events; effects are returned as records. The same code runs in
the Faust worker, in replays and in tests, and it is the specification the native engine
(firebreak.native) is tested against, record for record.

It owns: the event contract (events.py), per-step buckets and windows (window.py) with
their sketches (sketch.py), the engine that schedules evaluations by event time and keeps
bounded, snapshottable state (engine.py), the incident lifecycle and the records it writes
(incidents.py), the significance tests (significance.py) and which shard owns a
(rule, group) (sharding.py). What a metric measures is the rule's `MetricKind`
(engine/firebreak/dsl/metrics.py); the record types are firebreak.records.
"""

from firebreak.core.engine import DEFAULT_LATENESS_MS, Engine, run_events
from firebreak.core.events import Event, InvalidEvent, format_ts, parse_ts, validate_event

__all__ = [
    "DEFAULT_LATENESS_MS",
    "Engine",
    "Event",
    "InvalidEvent",
    "format_ts",
    "parse_ts",
    "run_events",
    "validate_event",
]
