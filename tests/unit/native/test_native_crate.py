"""The native crate's own unit tests (`cargo test`): the decoder's byte scan, the RFC 3339
parser, the bucket's size, Python's float division, the engine and its snapshots through a
host of the test's own... — run here so that CI runs them. Built without the bindings
(`--no-default-features`: no pyo3), which also checks that the engine needs no Python."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]


def test_cargo_unit_tests_pass():
    cargo = shutil.which("cargo")
    assert cargo, "cargo is needed to build the native core (README, Requirements)"
    done = subprocess.run(
        [cargo, "test", "--release", "--lib", "--no-default-features", "--quiet"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]
    assert "test result: ok" in done.stdout
