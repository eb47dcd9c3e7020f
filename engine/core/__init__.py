"""The pure detection core: no Kafka, no Faust, no clock, no I/O.

Time arrives with events; effects are returned as records. The same code runs in
the Faust worker, in replays and in tests.
"""

from engine.core.engine import DEFAULT_LATENESS_MS, Engine, run_events
from engine.core.events import Event, InvalidEvent, format_ts, parse_ts, validate_event

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
