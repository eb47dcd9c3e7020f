"""The real Go tools some tests run (Alertmanager, promtool): built once by scripts/go-tools
from their Go modules and cached under .cache/go-tools. A missing binary is a test failure that
says how to get it, never a skip."""

from __future__ import annotations

import os
import subprocess
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
        pytest.fail(f"no {name} binary: `scripts/go-tools build {name}` failed (it builds {name} from its Go module "
                    f"with Go 1.26+; install Go or set FIREBREAK_{name.upper()}=/path/to/{name}):\n"
                    f"{done.stderr[-3000:]}", pytrace=False)  # fmt: skip
    path = done.stdout.strip().splitlines()[-1]
    if not os.access(path, os.X_OK):
        pytest.fail(f"scripts/go-tools build {name} printed {path}, which is not an executable", pytrace=False)
    return path
