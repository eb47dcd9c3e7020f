"""A test's own Kafka broker, by scripts/kafka-local with its own state directory and ports.

For tests that restart a broker or need one with TLS, SASL and ACLs (KAFKA_LOCAL_SECURE=1),
without disturbing the broker the rest of the suite shares.
"""

from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

from worker_harness import free_port

KAFKA_LOCAL = Path(__file__).resolve().parents[2] / "scripts" / "kafka-local"


@dataclass
class LocalBroker:
    state: Path
    env: dict
    port: int
    sasl_ssl_port: int = 0
    ssl_port: int = 0

    @property
    def bootstrap(self) -> str:
        """The PLAINTEXT listener (a super user on a secured broker)."""
        return f"127.0.0.1:{self.port}"

    @property
    def sasl_ssl(self) -> str:
        return f"127.0.0.1:{self.sasl_ssl_port}"

    @property
    def mtls(self) -> str:
        return f"127.0.0.1:{self.ssl_port}"

    @property
    def tls(self) -> Path:
        return self.state / "tls"

    def ctl(self, *command: str) -> str:
        done = subprocess.run([str(KAFKA_LOCAL), *command], env=self.env, capture_output=True, text=True, timeout=180)
        assert done.returncode == 0, f"kafka-local {' '.join(command)} failed:\n{done.stderr}\n{done.stdout}"
        return done.stdout

    def allow(self, principal: str, operations: list[str], *resource: str) -> None:
        """Add ACLs (Kafka's AclCommand): allow ``principal`` the operations on the resource."""
        ops = [arg for op in operations for arg in ("--operation", op)]
        self.ctl("acls", "--add", "--allow-principal", principal, *ops, *resource)


def start_local_broker(state: Path, secure: bool = False, users: str = "admin:admin-secret") -> LocalBroker:
    port, controller = free_port(), free_port()
    env = {
        **os.environ,
        "KAFKA_STATE_DIR": str(state),
        "KAFKA_LOCAL_PORT": str(port),
        "KAFKA_LOCAL_CONTROLLER_PORT": str(controller),
        "KAFKA_HEAP": "-Xms128m -Xmx384m",
    }
    broker = LocalBroker(state, env, port)
    if secure:
        broker.sasl_ssl_port, broker.ssl_port = free_port(), free_port()
        env.update(
            {
                "KAFKA_LOCAL_SECURE": "1",
                "KAFKA_LOCAL_SASL_SSL_PORT": str(broker.sasl_ssl_port),
                "KAFKA_LOCAL_SSL_PORT": str(broker.ssl_port),
                "KAFKA_LOCAL_SCRAM_USERS": users,
            }
        )
    broker.ctl("start")
    return broker
