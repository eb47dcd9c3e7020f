"""The real Go tools some tests run (Alertmanager, promtool): built once by scripts/go-tools
from their Go modules and cached under .cache/go-tools. A missing binary is a test failure that
says how to get it, never a skip."""

from __future__ import annotations

import os
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "go-tools"


def go_tool(name: str) -> str:
    """The path of ``name`` (alertmanager, promtool), building it if needed (scripts/go-tools build)."""
    override = os.environ.get(f"FIREBREAK_{name.upper()}")
    if override:
        if not os.access(override, os.X_OK):
            pytest.fail(f"FIREBREAK_{name.upper()}={override} is not an executable")
        return override
    done = subprocess.run([str(SCRIPT), "build", name], capture_output=True, text=True, timeout=1800)
    if done.returncode != 0:
        pytest.fail(
            f"no {name} binary: `scripts/go-tools build {name}` failed (it builds {name} from its Go module "
            f"with Go 1.26+; install Go or set FIREBREAK_{name.upper()}=/path/to/{name}):\n"
            f"{done.stderr[-3000:]}",
            pytrace=False,
        )
    path = done.stdout.strip().splitlines()[-1]
    if not os.access(path, os.X_OK):
        pytest.fail(f"scripts/go-tools build {name} printed {path}, which is not an executable", pytrace=False)
    return path


AM_CONFIG = """
route:
  receiver: "null"
  group_by: ["alertname", "category"]
  group_wait: 1s
  group_interval: 1s
  repeat_interval: 1h
receivers:
  - name: "null"
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def running_alertmanager(folder: Path, config: str = AM_CONFIG) -> Iterator[str]:
    """A real Alertmanager on 127.0.0.1:<free port> with ``config`` (grouping by alertname and
    category, a receiver that sends nothing); its base URL. Stopped on exit."""
    binary = go_tool("alertmanager")
    (folder / "alertmanager.yml").write_text(config)
    port = free_port()
    with open(folder / "alertmanager.log", "wb") as log:
        process = subprocess.Popen(
            [
                binary,
                f"--config.file={folder / 'alertmanager.yml'}",
                f"--storage.path={folder / 'data'}",
                f"--web.listen-address=127.0.0.1:{port}",
                "--cluster.listen-address=",
                "--log.level=warn",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        url = f"http://127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + 30
            while True:
                try:
                    urllib.request.urlopen(f"{url}/-/ready", timeout=1).close()  # noqa: S310 - 127.0.0.1
                    break
                except (urllib.error.URLError, OSError):
                    if process.poll() is not None or time.monotonic() > deadline:
                        pytest.fail(f"alertmanager did not start: {(folder / 'alertmanager.log').read_text()[-2000:]}")
                    time.sleep(0.1)
            yield url
        finally:
            process.terminate()
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(10)
