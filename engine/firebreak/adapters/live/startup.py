"""Before the worker runs: the topics it uses, created if missing, and its start-up log line."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import ClusterAuthorizationFailedError, TopicAlreadyExistsError, TopicAuthorizationFailedError

from firebreak.adapters.live.checkpoints import MAX_CHECKPOINT_BYTES
from firebreak.adapters.live.settings import WorkerSettings
from firebreak.core.sharding import rules_version
from firebreak.dsl import CompiledRule

log = logging.getLogger("firebreak.worker")


async def create_topics(s: WorkerSettings) -> tuple[int | None, int | None]:
    """Create every topic the worker uses, if missing (partition counts from settings); the
    partitions the input and the routed topic have on the broker (None: not known)."""
    wanted = [
        NewTopic(s.input_topic, s.input_partitions, 1),
        NewTopic(
            s.routed_topic,
            s.shards,
            1,
            topic_configs={"retention.ms": str(24 * 3_600_000), "max.message.bytes": str(8 * 1024 * 1024)},
        ),
        NewTopic(s.incidents_topic, s.output_partitions, 1),
        NewTopic(s.containment_topic, s.output_partitions, 1),
        NewTopic(s.dead_letter_topic, s.output_partitions, 1),
        NewTopic(
            s.cases_topic,
            1,
            1,
            topic_configs={"cleanup.policy": "compact", "max.message.bytes": str(MAX_CHECKPOINT_BYTES)},
        ),
        NewTopic(
            s.checkpoint_topic,
            s.shards,
            1,
            topic_configs={
                "cleanup.policy": "compact",
                "max.message.bytes": str(MAX_CHECKPOINT_BYTES),
                "segment.ms": str(600_000),
            },
        ),
    ]
    admin = AIOKafkaAdminClient(**s.client_options(), request_timeout_ms=10_000)
    await admin.start()
    try:
        for topic in wanted:
            try:
                await admin.create_topics([topic])
            except TopicAlreadyExistsError:
                pass
            except (TopicAuthorizationFailedError, ClusterAuthorizationFailedError):
                log.info(
                    "not allowed to create topic %s: it must exist already (the permission check says)", topic.name
                )
        described = {d.get("topic"): d for d in await admin.describe_topics([s.input_topic, s.routed_topic])}
        return tuple(
            len(described.get(topic, {}).get("partitions") or ()) or None for topic in (s.input_topic, s.routed_topic)
        )
    finally:
        await admin.close()


def start_summary(
    s: WorkerSettings, rules: Sequence[CompiledRule], input_partitions: int
) -> tuple[str, dict[str, Any]]:
    """What a worker does, for the start-up log line: the text and its fields."""
    version = rules_version(rules)
    fields = {
        "event": "starting",
        "app_id": s.app_id,
        "bootstrap": s.bootstrap,
        "input_topic": s.input_topic,
        "input_partitions": input_partitions,
        "routed_topic": s.routed_topic,
        "shards": s.shards,
        "incidents_topic": s.incidents_topic,
        "containment_topic": s.containment_topic,
        "dead_letter_topic": s.dead_letter_topic,
        "checkpoint_topic": s.checkpoint_topic,
        "rules": len(rules),
        "rules_version": version,
        "rule_paths": list(s.rules),
        "lateness_ms": s.lateness_ms,
        "idle_timeout_ms": s.idle_timeout_ms,
        "checkpoint_interval_ms": s.checkpoint_interval_ms,
        "metrics_url": f"http://{s.web_host}:{s.web_port}/metrics",
        "engine": "native",
    }
    text = (
        f"firebreak worker starting: group {s.app_id} on {s.bootstrap}; {s.input_topic} "
        f"({input_partitions} partitions) -> {s.routed_topic} ({s.shards} shards) -> "
        f"{s.incidents_topic}, {s.containment_topic}; bad input -> {s.dead_letter_topic}; "
        f"{len(rules)} rules (version {version}) from {', '.join(s.rules)}; lateness "
        f"{s.lateness_ms / 1000:g} s, idle after {s.idle_timeout_ms / 1000:g} s, full checkpoint every "
        f"{s.checkpoint_interval_ms / 1000:g} s; native engine; "
        f"metrics at {fields['metrics_url']}"
    )
    return text, fields
