"""`firebreak silence add|list|expire` and `firebreak ack`: control events (core/silences.py).

Written to a compacted Kafka topic (``--topic``, default ai.firebreak.control) that every
`firebreak notify --control-topic` reads, or appended to a JSON-lines file (``--file``) that
`firebreak notify --records ... --silences FILE` reads (replays, the demo). Time is the wall
clock here (an operator's command), or ``--at`` for a replay's past.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson

from firebreak.core.events import parse_ts
from firebreak.core.silences import (
    ControlError,
    SilenceBook,
    ack_event,
    control_key,
    expire_event,
    parse_matchers,
    silence_event,
)

DEFAULT_TOPIC = "ai.firebreak.control"


def _where(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--file", metavar="FILE", help="a JSON-lines file of control events (replays, the demo)")
    parser.add_argument("--topic", default=DEFAULT_TOPIC, help="the compacted control topic (default %(default)s)")
    parser.add_argument("--bootstrap", metavar="HOST:PORT", help="Kafka brokers")
    parser.add_argument("--kafka-config", metavar="FILE", help="Kafka client properties (TLS, SASL)")
    parser.add_argument("--at", metavar="TIME", help="the time of the command (RFC 3339; default: now)")


def add_silence_arguments(parser: argparse.ArgumentParser, duration: Callable[[str], int]) -> None:
    sub = parser.add_subparsers(dest="silence_command", required=True)
    add = sub.add_parser("add", help="hold the pages of matching incidents and cases for a while")
    add.add_argument(
        "--match",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        required=True,
        help="tenant=acme, category=cost, rule=..., severity=sev2, case_id=... (repeatable: all must match)",
    )
    add.add_argument("--for", dest="for_ms", type=duration, required=True, metavar="DURATION", help="e.g. 2h")
    add.add_argument("--reason", required=True, metavar="TEXT")
    add.add_argument("--by", required=True, metavar="NAME")
    _where(add)
    listing = sub.add_parser("list", help="the silences, active first")
    _where(listing)
    expire = sub.add_parser("expire", help="end a silence now: what it held and is still open is paged")
    expire.add_argument("silence_id")
    expire.add_argument("--by", required=True, metavar="NAME")
    _where(expire)


def add_ack_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("case_id", metavar="CASE")
    parser.add_argument("--by", required=True, metavar="NAME")
    _where(parser)


def run_silence(args: argparse.Namespace) -> int:
    try:
        now = _now(args)
        if args.silence_command == "add":
            event = silence_event(parse_matchers(args.match), now, now + args.for_ms, args.reason, args.by)
            _write(args, event)
            print(f"{event['silence_id']}: {' '.join(args.match)} until {event['ends']} ({args.reason}, by {args.by})")
            return 0
        book = SilenceBook()
        for event in _read(args):
            try:
                book.apply(event)
            except ControlError as error:
                print(f"firebreak silence: skipped a control event: {error}", file=sys.stderr)
        if args.silence_command == "expire":
            if args.silence_id not in book.silences:
                known = ", ".join(sorted(book.silences)) or "none"
                print(f"firebreak silence: no silence {args.silence_id!r} (known: {known})", file=sys.stderr)
                return 1
            _write(args, expire_event(args.silence_id, args.by, now))
            print(f"{args.silence_id}: expired by {args.by}")
            return 0
        for s in book.listing(now):
            matchers = " ".join(f"{k}={v}" for k, v in s["matchers"].items())
            print(
                f"{s['silence_id']}  {s['state']:<7}  {matchers}  {s['starts']} .. {s['ends']}  "
                f"by {s['by']}: {s['reason']}"
            )
        return 0
    except (ControlError, OSError) as error:
        print(f"firebreak silence: {error}", file=sys.stderr)
        return 1


def run_ack(args: argparse.Namespace) -> int:
    try:
        event = ack_event(args.case_id, args.by, _now(args))
        _write(args, event)
    except (ControlError, OSError) as error:
        print(f"firebreak ack: {error}", file=sys.stderr)
        return 1
    print(f"{args.case_id}: acknowledged by {args.by} (reminders stop; the case still resolves by itself)")
    return 0


def read_control_file(path: str) -> list[dict[str, Any]]:
    """The control events of a file (missing: none); ControlError on a line that is not JSON."""
    if not Path(path).exists():
        return []
    out = []
    for number, line in enumerate(Path(path).read_bytes().splitlines(), start=1):
        if not line.strip():
            continue
        try:
            out.append(orjson.loads(line))
        except orjson.JSONDecodeError:
            raise ControlError(f"{path}:{number}: not a JSON object") from None
    return out


def _now(args: argparse.Namespace) -> int:
    if args.at:
        try:
            return parse_ts(args.at)
        except ValueError:
            raise ControlError(f"--at {args.at!r}: expected a time such as 2026-03-02T10:00:00Z") from None
    return int(time.time() * 1000)


def _write(args: argparse.Namespace, event: dict[str, Any]) -> None:
    if args.file:
        with open(args.file, "ab") as file:
            file.write(orjson.dumps(event) + b"\n")
        return
    asyncio.run(_send(args, event))


def _read(args: argparse.Namespace) -> list[dict[str, Any]]:
    if args.file:
        return read_control_file(args.file)
    return asyncio.run(_fetch(args))


async def _send(args: argparse.Namespace, event: dict[str, Any]) -> None:
    from aiokafka import AIOKafkaProducer

    from firebreak.kafka_config import load_kafka_config

    kafka = load_kafka_config(args.kafka_config, args.bootstrap)
    await _create_topic(kafka, args.topic)
    producer = AIOKafkaProducer(bootstrap_servers=kafka.bootstrap, **kafka.client_options(), acks="all")
    await producer.start()
    try:
        await producer.send_and_wait(args.topic, orjson.dumps(event), key=control_key(event))
    finally:
        await producer.stop()


async def _create_topic(kafka: Any, topic: str) -> None:
    """The control topic, compacted (a silence or acknowledgement per key), if it is missing."""
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic
    from aiokafka.errors import KafkaError, TopicAlreadyExistsError

    admin = AIOKafkaAdminClient(bootstrap_servers=kafka.bootstrap, **kafka.client_options())
    await admin.start()
    try:
        await admin.create_topics([NewTopic(topic, 1, 1, topic_configs={"cleanup.policy": "compact"})])
    except TopicAlreadyExistsError:
        pass
    except KafkaError:
        pass  # not allowed to create topics: it must exist already (the send says if not)
    finally:
        await admin.close()


async def _fetch(args: argparse.Namespace) -> list[dict[str, Any]]:
    from aiokafka import AIOKafkaConsumer, TopicPartition

    from firebreak.kafka_config import load_kafka_config

    kafka = load_kafka_config(args.kafka_config, args.bootstrap)
    reader = AIOKafkaConsumer(bootstrap_servers=kafka.bootstrap, **kafka.client_options(), enable_auto_commit=False)
    await reader.start()
    try:
        await reader._client.force_metadata_update()  # noqa: SLF001 - the topic's partitions
        tps = [TopicPartition(args.topic, p) for p in sorted(reader.partitions_for_topic(args.topic) or ())]
        if not tps:
            return []
        reader.assign(tps)
        ends = await reader.end_offsets(tps)
        await reader.seek_to_beginning(*tps)
        out = []
        while any([await reader.position(tp) < ends[tp] for tp in tps]):
            for messages in (await reader.getmany(timeout_ms=500)).values():
                out += [orjson.loads(m.value) for m in messages]
        return out
    finally:
        await reader.stop()
