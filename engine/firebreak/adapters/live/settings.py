"""Worker settings: topic names, partition counts, time settings."""

from __future__ import annotations

from dataclasses import dataclass, field

from firebreak.core import DEFAULT_LATENESS_MS
from firebreak.core.engine import DEFAULT_MAX_SKEW_MS
from firebreak.kafka_config import KafkaConfig


@dataclass(frozen=True)
class WorkerSettings:
    rules: tuple[str, ...]
    bootstrap: str = "127.0.0.1:9092"
    app_id: str = "firebreak"
    input_topic: str = "ai.inference.events"
    incidents_topic: str = "ai.incidents"
    containment_topic: str = "ai.containment.commands"
    dead_letter_topic: str = "ai.inference.deadletter"
    input_partitions: int = 4  # used when the worker creates the input topic
    shards: int = 4  # partitions of the internal routed topic: the units of evaluation
    output_partitions: int = 4
    lateness_ms: int = DEFAULT_LATENESS_MS
    # stage 1 refuses an event more than this after its input partition's largest event time (None: no bound)
    max_skew_ms: int | None = DEFAULT_MAX_SKEW_MS
    idle_timeout_ms: int = 10_000  # wall clock: an input partition this quiet stops holding time back
    route_batch: int = 1_000  # input messages routed together (one routed message per shard: routed.py)
    route_batch_ms: int = 50  # ... or whatever arrived within this time
    checkpoint_interval_ms: int = 60_000  # wall clock between full snapshots: the most work redone after a crash
    max_event_bytes: int = 262_144  # larger messages are dead-lettered
    commit_timeout_ms: int = 60_000  # a transaction of records that does not end within this stops the worker
    session_timeout_ms: int = 30_000  # Kafka group session: how soon a dead worker's partitions move
    web_port: int = 6066  # Prometheus metrics at http://127.0.0.1:PORT/metrics
    web_host: str = "127.0.0.1"
    traffic_check: bool = True  # warn of rules that never fire, over the first hour after each rule load
    cases: bool = True  # run the case stage (case_runner.py) when this worker is assigned it
    input_batches: bool = True  # the input topic a fetch at a time (batches.py), not through Faust's streams
    # a routed message for a shard of this worker is also handed to it in process once the broker
    # acknowledged it at its offset; the fetched copy is then skipped (docs/live.md, "The local hand-off").
    # Off by default: measured, it saves no CPU and detects no sooner (benchmarks/README.md, Thirteenth pass)
    local_handoff: bool = False
    extra: dict = field(default_factory=dict)
    kafka: KafkaConfig = field(default_factory=KafkaConfig)  # security settings (docs/kafka-security.md)

    def client_options(self) -> dict:
        """bootstrap_servers and the security settings, for any aiokafka client of the worker."""
        return {"bootstrap_servers": self.bootstrap, **self.kafka.client_options()}

    @property
    def routed_topic(self) -> str:
        return f"{self.app_id}.routed"

    @property
    def cases_topic(self) -> str:
        """The case stage's leadership and checkpoint (compacted, one partition)."""
        return f"{self.app_id}.cases"

    @property
    def checkpoint_topic(self) -> str:
        return f"{self.app_id}.checkpoints"
