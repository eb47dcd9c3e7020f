"""`firebreak otlp`: the OTLP/HTTP receiver (engine/firebreak/adapters/otlp.py). Imported by the CLI."""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--listen",
        default="127.0.0.1:4318",
        metavar="HOST:PORT",
        help="where to receive OTLP/HTTP (POST /v1/traces; default %(default)s, OTLP's port)",
    )
    parser.add_argument(
        "--mapping",
        metavar="FILE",
        help="otlp.toml: which attributes give tenant, user, feature, "
        "template...; defaults (docs/integrations.md#otlp-in)",
    )
    out = parser.add_mutually_exclusive_group(required=True)
    out.add_argument("--out", metavar="FILE", help="append the events as JSON lines to FILE")
    out.add_argument("--topic", metavar="TOPIC", help="publish the events to TOPIC (e.g. ai.inference.events)")
    parser.add_argument("--bootstrap", metavar="HOST:PORT", help="with --topic: Kafka brokers")
    parser.add_argument("--kafka-config", metavar="FILE", help="with --topic: Kafka client properties (TLS, SASL)")
    parser.add_argument(
        "--dead-letter",
        metavar="FILE|TOPIC",
        help="unmappable GenAI spans, with the reason: a file with --out, a topic with --topic",
    )
    parser.add_argument(
        "--duration",
        type=float,
        metavar="SECONDS",
        help="stop after this long (default: until stopped with Ctrl-C or SIGTERM)",
    )


def run(args: argparse.Namespace) -> int:
    from firebreak.adapters.otlp import JsonLinesSink, KafkaSink, MappingError, Receiver, load_mapping, serve

    try:
        mapping = load_mapping(args.mapping)
    except MappingError as error:
        print(f"firebreak otlp: {error}", file=sys.stderr)
        return 1
    host, _, port = args.listen.rpartition(":")
    if not host or not port.isdigit():
        print(f"firebreak otlp: --listen wants HOST:PORT, not {args.listen!r}", file=sys.stderr)
        return 1
    if args.out is not None:
        try:
            sink = JsonLinesSink(args.out, args.dead_letter)
        except OSError as error:
            print(f"firebreak otlp: {error.filename}: {error.strerror}", file=sys.stderr)
            return 1
    else:
        from firebreak.kafka_config import KafkaConfigError, load_kafka_config
        from firebreak.sdk.publisher import AsyncPublisher

        try:
            kafka = load_kafka_config(args.kafka_config, args.bootstrap)
        except KafkaConfigError as error:
            print(f"firebreak otlp: {error}", file=sys.stderr)
            return 1
        sink = KafkaSink(AsyncPublisher(kafka.bootstrap, args.topic, kafka_config=kafka), args.dead_letter)
    receiver = Receiver(sink, mapping)

    async def main() -> None:
        runner, bound = await serve(receiver, host, int(port))
        print(f"firebreak otlp: receiving OTLP/HTTP on http://{host}:{bound}/v1/traces", file=sys.stderr)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        try:
            await asyncio.wait_for(stop.wait(), args.duration)
        except TimeoutError:
            pass
        finally:
            await runner.cleanup()
            await sink.close()

    asyncio.run(main())
    print(receiver.stats.summary(), file=sys.stderr)
    return 0
