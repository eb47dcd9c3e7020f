"""Small helpers shared by the SDK clients: bootstrap parsing and "why is there no broker" diagnostics."""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import ssl
from typing import Any

from firebreak.kafka_config import KafkaConfig

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


async def diagnose(target: str | list[str] | KafkaConfig, timeout_s: float = 1.0) -> str:
    """One line saying why the first bootstrap server did not answer (refused, unresolvable, silent,
    a failed login, an untrusted certificate, TLS on one side only...).

    aiokafka only says "Unable to bootstrap from [...]"; the OS, TLS or SASL error is what a user needs.
    Never contains a secret.
    """
    config = target if isinstance(target, KafkaConfig) else KafkaConfig(bootstrap=bootstrap_text(target))
    first = config.bootstrap.split(",")[0]
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
    return await _handshake(config, host, port, timeout_s)


async def _handshake(config: KafkaConfig, host: str, port: int, timeout_s: float) -> str:
    """The port accepts connections: say what goes wrong when a Kafka client speaks to it."""
    from aiokafka.conn import create_conn
    from aiokafka.errors import (
        AuthenticationFailedError,
        KafkaError,
        SaslAuthenticationFailed,
        UnsupportedSaslMechanismError,
    )

    where = f"{host}:{port}"
    try:
        async with asyncio.timeout(timeout_s):
            conn = await create_conn(host, port, request_timeout_ms=int(timeout_s * 1000), **config.client_options())
        conn.close()
    except ssl.SSLCertVerificationError as error:
        return (
            f"the TLS certificate of {where} is not trusted ({error.verify_message}); set ssl.ca.location "
            f"to the CA that signed it"
        )
    except ssl.SSLError as error:
        if "WRONG_VERSION_NUMBER" in str(error) or "wrong version number" in str(error):
            protocol = config.security_protocol
            return f"{where} does not speak TLS (a plaintext listener?): security.protocol is {protocol}"
        return f"TLS with {where} failed: {error.reason or error}"
    except (AuthenticationFailedError, SaslAuthenticationFailed):
        who = f"{config.sasl_username!r} ({config.sasl_mechanism})"
        return f"{where} refused the login of {who}: wrong user or password"
    except UnsupportedSaslMechanismError:
        return f"{where} does not accept sasl.mechanism {config.sasl_mechanism}"
    except TimeoutError:
        return f"{where} accepts connections but did not answer as a Kafka broker within {timeout_s:g}s"
    except (KafkaError, OSError) as error:
        tls = await _speaks_tls(host, port, timeout_s)
        if config.uses_ssl and not tls:
            protocol = config.security_protocol
            return f"{where} does not speak TLS (a plaintext listener?): security.protocol is {protocol}"
        if config.uses_ssl and not config.ssl_certificate_location:
            return (
                f"{where} closed the TLS connection: it may require a client certificate (mutual TLS: "
                f"ssl.certificate.location and ssl.key.location)"
            )
        if tls and not config.uses_ssl:
            return (
                f"{where} speaks TLS but security.protocol is {config.security_protocol}: set it to SSL or "
                f"SASL_SSL (and ssl.ca.location)"
            )
        return f"{where} accepts connections but did not answer as a Kafka broker ({type(error).__name__})"
    return f"{where} answers as a Kafka broker with these settings ({config.describe()})"


async def _speaks_tls(host: str, port: int, timeout_s: float) -> bool:
    context = ssl.create_default_context()
    context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
    try:
        async with asyncio.timeout(timeout_s):
            _, writer = await asyncio.open_connection(host, port, ssl=context)
        writer.close()
        return True
    except (TimeoutError, OSError, ssl.SSLError):
        return False


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
