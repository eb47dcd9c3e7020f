"""`firebreak worker`: arguments → settings → LiveWorker. Imported lazily by the CLI."""

from __future__ import annotations

import argparse
import asyncio
import sys

from firebreak.adapters.live.logs import FORMATS, LEVELS
from firebreak.adapters.live.settings import WorkerSettings
from firebreak.adapters.rule_files import (
    RuleFileError,
    collect_companion_paths,
    collect_rule_paths,
    read_companion_sources,
    read_rule_sources,
)
from firebreak.dsl import load_rules
from firebreak.dsl.diagnostics import render_all
from firebreak.durations import format_duration
from firebreak.kafka_config import KafkaConfig, KafkaConfigError, load_kafka_config

DEFAULTS = WorkerSettings(rules=())


def add_arguments(parser: argparse.ArgumentParser, duration: type) -> None:
    parser.add_argument(
        "--rules",
        action="append",
        required=True,
        metavar="PATH",
        help="rule file or directory (repeatable); reloaded on SIGHUP or change",
    )
    parser.add_argument(
        "--bootstrap",
        metavar="HOST:PORT",
        help="Kafka brokers (default: bootstrap.servers of --kafka-config, else 127.0.0.1:9092)",
    )
    parser.add_argument(
        "--kafka-config",
        metavar="FILE",
        help="Kafka client properties: TLS, SASL (docs/kafka-security.md); also FIREBREAK_KAFKA_*",
    )
    d = DEFAULTS  # every default is WorkerSettings' own (one place)
    parser.add_argument("--app-id", default=d.app_id, help="consumer group and internal topic prefix")
    parser.add_argument("--input-topic", default=d.input_topic)
    parser.add_argument("--incidents-topic", default=d.incidents_topic)
    parser.add_argument("--containment-topic", default=d.containment_topic)
    parser.add_argument("--dead-letter-topic", default=d.dead_letter_topic)
    parser.add_argument(
        "--input-partitions", type=int, default=d.input_partitions, help="when the worker creates the input topic"
    )
    parser.add_argument("--shards", type=int, default=d.shards, help="partitions of the internal routed topic")
    parser.add_argument(
        "--lateness",
        type=duration,
        default=d.lateness_ms,
        metavar="DURATION",
        help=f"allowed lateness of out-of-order events (default {format_duration(d.lateness_ms)})",
    )
    parser.add_argument(
        "--max-skew",
        type=lambda text: None if text.strip().lower() == "off" else duration(text),
        default=d.max_skew_ms,
        metavar="DURATION",
        help="stage 1 dead-letters (`ahead: ...`) an event more than this after its input partition's "
        "latest event time, until 8 in a row agree; `off`: no bound (default "
        f"{format_duration(d.max_skew_ms or 0)})",
    )
    parser.add_argument(
        "--idle-timeout",
        type=duration,
        default=d.idle_timeout_ms,
        metavar="DURATION",
        help="a caught-up input partition this quiet stops holding time back",
    )
    parser.add_argument(
        "--checkpoint-interval",
        type=duration,
        default=d.checkpoint_interval_ms,
        metavar="DURATION",
        help="between full snapshots of shard state: the most work redone after a crash",
    )
    parser.add_argument("--web-port", type=int, default=d.web_port, help="Prometheus metrics at /metrics")
    parser.add_argument(
        "--session-timeout",
        type=duration,
        default=d.session_timeout_ms,
        metavar="DURATION",
        help="Kafka group session timeout: how soon a dead worker's partitions move",
    )
    parser.add_argument(
        "--commit-timeout",
        type=duration,
        default=d.commit_timeout_ms,
        metavar="DURATION",
        help="a transaction of records not committed within this stops the worker (exit 3; a "
        "restart resumes from the last checkpoint)",
    )
    parser.add_argument(
        "--traffic-check",
        action=argparse.BooleanOptionalAction,
        default=d.traffic_check,
        help="warn of rules that never fire over the first hour of traffic after each rule load "
        "(every event routed, counted by the native router)",
    )
    parser.add_argument(
        "--cases",
        action=argparse.BooleanOptionalAction,
        default=d.cases,
        help="run the case stage when this worker is elected for it: incidents grouped into cases, "
        "case.* records on the incidents topic (docs/response.md#cases-in-the-worker)",
    )
    parser.add_argument(
        "--local-handoff",
        action=argparse.BooleanOptionalAction,
        default=d.local_handoff,
        help="hand a routed message for a shard of this worker to it in process once the broker has "
        "acknowledged it (the fetched copy is skipped); off by default: every shard fetches its "
        "routed messages back, which measured as fast (docs/live.md#the-local-hand-off)",
    )
    parser.add_argument(
        "--faust-stream-input", dest="input_batches", action="store_false", help=argparse.SUPPRESS
    )  # the input through Faust's streams (take_events): to compare
    parser.add_argument(
        "--log-level",
        choices=LEVELS,
        default="info",
        help="firebreak's own log level (Kafka and Faust log warnings and errors, all with debug)",
    )
    parser.add_argument(
        "--log-format",
        choices=FORMATS,
        default="text",
        help="text lines, or JSON lines for log pipelines (stderr either way)",
    )


def run(args: argparse.Namespace) -> int:
    from firebreak.adapters.live.settings import WorkerSettings

    def load() -> tuple[object, str]:
        try:
            sources = read_rule_sources(args.rules)
            vocabularies = read_companion_sources(args.rules)  # every name a rule reads is checked
        except RuleFileError as error:
            return None, str(error)
        rules, problems = load_rules(sources, vocabularies)
        if not rules:
            return None, render_all(problems, sources | vocabularies) or "no rules"
        return rules, ""

    def mtime() -> float:
        try:
            paths = collect_rule_paths(args.rules) + collect_companion_paths(args.rules)
            return max((p.stat().st_mtime for p in paths), default=0.0) + len(paths)
        except (OSError, RuleFileError):
            return -1.0

    try:
        kafka = load_kafka_config(args.kafka_config, args.bootstrap)
    except KafkaConfigError as error:
        print(f"firebreak worker: {error}", file=sys.stderr)
        return 1
    rules, message = load()
    if rules is None:
        print(message, file=sys.stderr)
        return 1
    settings = WorkerSettings(
        rules=tuple(args.rules),
        bootstrap=kafka.bootstrap,
        kafka=kafka,
        app_id=args.app_id,
        input_topic=args.input_topic,
        incidents_topic=args.incidents_topic,
        containment_topic=args.containment_topic,
        dead_letter_topic=args.dead_letter_topic,
        input_partitions=args.input_partitions,
        shards=args.shards,
        lateness_ms=args.lateness,
        idle_timeout_ms=args.idle_timeout,
        checkpoint_interval_ms=args.checkpoint_interval,
        max_skew_ms=args.max_skew,
        web_port=args.web_port,
        session_timeout_ms=args.session_timeout,
        commit_timeout_ms=args.commit_timeout,
        traffic_check=args.traffic_check,
        input_batches=args.input_batches,
        local_handoff=args.local_handoff,
        cases=args.cases,
    )
    reason = asyncio.run(_probe(settings.kafka))
    if reason:
        print(f"firebreak worker: no Kafka broker at {settings.bootstrap} — {reason}", file=sys.stderr)
        return 1
    from firebreak.adapters.live.app import LiveWorker
    from firebreak.adapters.live.routing import not_native

    why = not_native(rules)
    if why is not None:  # the worker runs on the native engine only (docs/live.md)
        print(f"firebreak worker: cannot run these rules live: {why}", file=sys.stderr)
        return 1
    return LiveWorker(settings, rules, load, mtime).run()


async def _probe(kafka: KafkaConfig) -> str | None:
    """None if the broker answers with these settings, else one line saying why not (no secret in it)."""
    import logging

    from aiokafka.admin import AIOKafkaAdminClient

    from firebreak.sdk._kafka import diagnose

    quiet = logging.getLogger("aiokafka")
    level = quiet.level
    quiet.setLevel(logging.CRITICAL)  # the reason is printed once, by the caller
    admin = AIOKafkaAdminClient(bootstrap_servers=kafka.bootstrap, **kafka.client_options(), request_timeout_ms=5_000)
    try:
        try:
            await asyncio.wait_for(admin.start(), 8)
        except Exception:  # noqa: BLE001 - aiokafka says only "Unable to bootstrap": find out why
            return await diagnose(kafka, 3.0)
        try:
            await asyncio.wait_for(admin.list_topics(), 8)
        except Exception as error:  # noqa: BLE001 - any failure means "no usable broker"; say which
            text = str(error)
            return text if text.startswith(type(error).__name__) else f"{type(error).__name__}: {text}".rstrip(": ")
    finally:
        quiet.setLevel(level)
        try:
            await admin.close()
        except Exception:  # noqa: BLE001
            pass
    return None
