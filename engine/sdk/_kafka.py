"""Small helpers shared by the SDK clients: bootstrap parsing and "why is there no broker" diagnostics."""

from __future__ import annotations

import asyncio
import logging
import os
import socket
from typing import Any

log = logging.getLogger("firebreak.sdk")

DEFAULT_EVENTS_TOPIC = "ai.inference.events"
DEFAULT_COMMANDS_TOPIC = "ai.containment.commands"


def bootstrap_text(bootstrap: str | list[str]) -> str:
    return bootstrap if isinstance(bootstrap, str) else ",".join(bootstrap)


def _host_port(server: str) -> tuple[str, int]:
    server = server.strip()
    if server.startswith("["):  # [::1]:9092
        host, _, port = server[1:].partition("]:")
    else:
        host, _, port = server.rpartition(":")
        if not host:
            host, port = server, "9092"
    return host, int(port or 9092)


async def diagnose(bootstrap: str | list[str], timeout_s: float = 1.0) -> str:
    """One line saying why the first bootstrap server did not answer (refused, unresolvable, silent...).

    aiokafka only says "Unable to bootstrap from [...]"; the OS error is what a user needs.
    """
    first = bootstrap_text(bootstrap).split(",")[0]
    try:
        host, port = _host_port(first)
    except ValueError:
        return f"{first!r} is not host:port"
    try:
        async with asyncio.timeout(timeout_s):
            _, writer = await asyncio.open_connection(host, port)
    except TimeoutError:
        return f"connecting to {host}:{port} timed out after {timeout_s:g}s"
    except socket.gaierror as error:
        return f"cannot resolve {host!r} ({error.strerror})"
    except OSError as error:
        if error.errno:  # "Connection refused", not asyncio's "Connect call failed ('127.0.0.1', 1)"
            return os.strerror(error.errno).lower()
        return str(error) or type(error).__name__
    writer.close()
    try:
        await writer.wait_closed()
    except OSError:
        pass
    return f"{host}:{port} accepts connections but did not answer as a Kafka broker"


async def close_quietly(client: Any, timeout_s: float = 10.0) -> None:
    """`await client.stop()` for an aiokafka producer or consumer, bounded, never raising.

    aiokafka's `stop()` can raise CancelledError that is not ours: the consumer's fetcher
    cancels and awaits its own tasks without suppressing it (aio-libs/aiokafka#647; seen
    here when the broker is down). Then the client's connections are still open: close them.
    """
    try:
        async with asyncio.timeout(timeout_s):
            await client.stop()
    except asyncio.CancelledError:
        task = asyncio.current_task()
        if task is not None and task.cancelling():
            raise  # we are being cancelled: let it through
        log.debug("aiokafka's stop() raised CancelledError; closing its connections directly")
        inner = getattr(client, "_client", None)  # AIOKafkaClient
        if inner is not None:
            try:
                async with asyncio.timeout(timeout_s):
                    await inner.close()
            except (Exception, asyncio.CancelledError) as error:  # noqa: BLE001
                log.debug("closing aiokafka's connections: %r", error)
    except Exception as error:  # noqa: BLE001 - closing must not mask anything else
        log.debug("stopping %s: %r", type(client).__name__, error)
