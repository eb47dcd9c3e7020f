"""Put hand-made containment records on the commands topic, as Firebreak would — to try the gateway.

    python examples/gateway/send.py fallback gpt-4o gpt-4o-mini --ttl 60   # prints the command_id
    python examples/gateway/send.py renew cmd_... gpt-4o --ttl 300
    python examples/gateway/send.py release cmd_... gpt-4o

Records follow docs/schemas/record.schema.json; they are keyed by command_id, so one
command's records stay in order on one partition.
"""

from __future__ import annotations

import argparse
import asyncio
import secrets
import sys
import time

import orjson
from aiokafka import AIOKafkaProducer

from firebreak.core import format_ts
from firebreak.sdk import DEFAULT_COMMANDS_TOPIC


def record(args: argparse.Namespace) -> dict:
    now = int(time.time() * 1000)
    common = {"incident_id": f"inc_{secrets.token_hex(8)}", "rule": "manual_test", "action": "fallback",
              "target": {"model": args.model}, "ts": format_ts(now)}  # fmt: skip
    expires = format_ts(now + int(args.ttl * 1000))
    if args.kind == "fallback":
        return {"type": "containment.command", "command_id": f"cmd_{secrets.token_hex(8)}", **common,
                "params": {"model": args.to}, "expires_at": expires, "hold": False}  # fmt: skip
    if args.kind == "renew":
        return {"type": "containment.renewed", "command_id": args.command_id, **common, "expires_at": expires}
    return {"type": "containment.release", "command_id": args.command_id, **common}


async def send(bootstrap: str, topic: str, rec: dict) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", enable_idempotence=True)
    await producer.start()
    try:
        await producer.send_and_wait(topic, orjson.dumps(rec), key=rec["command_id"].encode())
    finally:
        await producer.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Send a fallback / renewal / release by hand.")
    parser.add_argument("--bootstrap", default="127.0.0.1:9092")
    parser.add_argument("--topic", default=DEFAULT_COMMANDS_TOPIC)
    sub = parser.add_subparsers(dest="kind", required=True)
    fallback = sub.add_parser("fallback", help="route MODEL to TO")
    fallback.add_argument("model")
    fallback.add_argument("to")
    fallback.add_argument("--ttl", type=float, default=3600, help="seconds until it expires (default 1 h)")
    renew = sub.add_parser("renew", help="extend a command")
    renew.add_argument("command_id")
    renew.add_argument("model")
    renew.add_argument("--ttl", type=float, default=3600)
    release = sub.add_parser("release", help="end a command")
    release.add_argument("command_id")
    release.add_argument("model")
    release.set_defaults(ttl=0)
    args = parser.parse_args(argv)
    rec = record(args)
    asyncio.run(send(args.bootstrap, args.topic, rec))
    print(orjson.dumps(rec).decode())
    return 0


if __name__ == "__main__":
    sys.exit(main())
