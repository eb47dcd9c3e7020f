"""`firebreak notify`: arguments → config → delivery (engine/firebreak/adapters/notify.py). Imported by the CLI."""

from __future__ import annotations

import argparse
import asyncio
import sys

import orjson

EXIT_FAILED = 4  # some deliveries were refused (4xx) or given up (5xx / timeouts past the retries)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", required=True, metavar="FILE", help="notify.toml: notify targets -> destinations")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--records", metavar="FILE", help="a records file (JSON lines, as replay writes)")
    source.add_argument("--topic", metavar="TOPIC", help="follow the incidents topic (e.g. ai.incidents)")
    parser.add_argument(
        "--containment-topic",
        default="ai.containment.commands",
        help="with --topic: read too, so messages name the containment (default %(default)s)",
    )
    parser.add_argument("--group", default="firebreak-notify", help="with --topic: consumer group (offsets kept)")
    parser.add_argument("--bootstrap", metavar="HOST:PORT", help="with --topic: Kafka brokers")
    parser.add_argument("--kafka-config", metavar="FILE", help="with --topic: Kafka client properties (TLS, SASL)")
    parser.add_argument(
        "--idle",
        type=float,
        metavar="SECONDS",
        help="with --topic: stop once nothing new arrived for this long (default: run until stopped)",
    )
    parser.add_argument(
        "--no-reminders",
        dest="reminders",
        action="store_false",
        help="with --topic: no status-update reminders while incidents stay open "
        "(default: at the response policy's update_every)",
    )
    parser.add_argument(
        "--silences",
        metavar="FILE",
        help="with --records: silences and acknowledgements (`firebreak silence add --file FILE`)",
    )
    parser.add_argument(
        "--control-topic",
        metavar="TOPIC",
        help="with --topic: the compacted topic of silences and acknowledgements "
        "(`firebreak silence add`, `firebreak ack`; e.g. ai.firebreak.control)",
    )
    parser.add_argument(
        "--per-case",
        action="store_true",
        help="with --topic: PagerDuty hears of cases only, from the first record on (a worker's case "
        "stage writes them after the incidents; default: once a case record was seen)",
    )
    parser.add_argument(
        "--rules",
        metavar="PATH",
        action="append",
        help="the rules' directory: its policy.toml's [[maintenance]] windows hold pages too",
    )
    parser.add_argument("--verbose", "-v", action="store_true", help="log every delivery attempt")


def run(args: argparse.Namespace) -> int:
    from firebreak.adapters.notify import NotifyConfigError, load_notify_config, notify_records, notify_topics
    from firebreak.kafka_config import KafkaConfigError, load_kafka_config

    try:
        config = load_notify_config(args.config)
    except NotifyConfigError as error:
        print(f"firebreak notify: {error}", file=sys.stderr)
        return 1
    windows: tuple = ()
    if args.rules:
        from firebreak.adapters.rule_files import load_rules_or_report

        rules = load_rules_or_report(args.rules, "notify")
        if rules is None:
            return 1
        windows = rules[0].grouping.maintenance if rules else ()
    if args.records is not None:
        control: list = []
        if args.silences:
            from firebreak.adapters.silence_command import read_control_file
            from firebreak.core.silences import ControlError

            try:
                control = read_control_file(args.silences)
            except ControlError as error:
                print(f"firebreak notify: {error}", file=sys.stderr)
                return 1
        try:
            with open(args.records, "rb") as file:
                records = [orjson.loads(line) for line in file if line.strip()]
        except OSError as error:
            print(f"firebreak notify: {args.records}: {error.strerror}", file=sys.stderr)
            return 1
        except orjson.JSONDecodeError as error:
            print(f"firebreak notify: {args.records}: not JSON lines ({error})", file=sys.stderr)
            return 1
        stats = asyncio.run(notify_records(config, records, control, windows))
    else:
        try:
            kafka = load_kafka_config(args.kafka_config, args.bootstrap)
        except KafkaConfigError as error:
            print(f"firebreak notify: {error}", file=sys.stderr)
            return 1
        try:
            stats = asyncio.run(
                notify_topics(
                    config,
                    kafka,
                    args.topic,
                    args.containment_topic,
                    args.group,
                    args.idle,
                    args.reminders,
                    control_topic=args.control_topic,
                    windows=windows,
                    per_case=args.per_case,
                )
            )
        except Exception as error:  # noqa: BLE001 - a broker problem is one line, not a traceback
            from firebreak.sdk._kafka import diagnose

            why = asyncio.run(diagnose(kafka, 3.0))
            print(
                f"firebreak notify: {type(error).__name__} reading {args.topic} from {kafka.bootstrap}: {why}",
                file=sys.stderr,
            )
            return 1
    print(stats.summary(), file=sys.stderr)
    return EXIT_FAILED if stats.failed else 0
