"""scripts/kafka-local pieces that need no broker."""

from __future__ import annotations

import subprocess
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[3] / "scripts" / "kafka-local"


def test_cluster_ids_never_begin_with_a_dash():
    """StorageTool takes `-t -abc...` for an option: with plain random ids 1 start in 64 failed."""
    body = SCRIPT.read_text()
    start = body.index("new_cluster_id() {")
    end = body.index("\n}\n", start) + 3
    program = body[start:end] + "for i in $(seq 3000); do new_cluster_id; done\n"
    ids = subprocess.run(["bash", "-c", program], capture_output=True, text=True, check=True).stdout.split()
    assert len(ids) == 3000
    assert all(len(i) == 22 and not i.startswith("-") for i in ids)
    assert len(set(ids)) == 3000
    assert any("-" in i for i in ids), "ids still use the URL-safe alphabet, dashes inside included"


def test_usage_names_restart():
    done = subprocess.run(["bash", str(SCRIPT)], capture_output=True, text=True)
    assert done.returncode == 2
    assert "start|stop|restart|status|fetch" in done.stderr
