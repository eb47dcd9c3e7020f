"""`engine/firebreak/_native.pyi` describes the built extension: mypy's stubtest compares every
name and signature of the stub with the module (names missing on either side, parameters,
defaults, static methods, properties), and the return shapes the stub declares are checked
here on a small run, since a compiled function carries no return annotation."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from firebreak import _native
from firebreak.dsl import load_rules
from firebreak.native import _Host
from firebreak.native.plan import plans_json

STUB = Path(__file__).resolve().parents[3] / "engine" / "firebreak" / "_native.pyi"


def stubtest(env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    import os

    return subprocess.run(
        [sys.executable, "-m", "mypy.stubtest", "firebreak._native"],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, **(env or {})},
    )


def test_the_stub_matches_the_extension():
    done = stubtest()
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
    assert "Success" in done.stdout


def test_stubtest_fails_on_a_stub_that_does_not_match(tmp_path):
    """The check above can fail: the same stub with one parameter too many is refused."""
    (tmp_path / "firebreak").mkdir()
    (tmp_path / "firebreak" / "__init__.pyi").write_text("")
    text = STUB.read_text()
    assert "def memory(self)" in text
    (tmp_path / "firebreak" / "_native.pyi").write_text(text.replace("def memory(self)", "def memory(self, n: int)"))
    done = stubtest({"MYPYPATH": str(tmp_path)})
    assert done.returncode != 0
    assert 'firebreak._native.Core.memory is inconsistent, runtime does not have parameter "n"' in done.stdout


def test_return_shapes_are_those_the_stub_declares():
    rules, _ = load_rules({"t.rules": "rule r: count() > 3 over 1m by model -> sev3"})
    core = _native.Core(plans_json(rules), 0, _Host(rules))
    lines = [
        b'{"event_id": "e%d", "ts": %d, "type": "inference", "model": "m"}' % (i, 1_700_000_000_000 + i * 1000)
        for i in range(30)
    ]
    fed = core.feed(lines, 0)
    assert isinstance(fed, _native.FedLines)
    assert fed.stop is None and isinstance(fed.records, list) and fed.late == [] and fed.events == 30
    assert all(isinstance(r, dict) for r in fed.records) and fed.records
    taken = core.take_routed(b"", {3: 7}, False, None)
    assert isinstance(taken, _native.TakenRouted)
    assert (taken.next, taken.taken, taken.late, taken.duplicates, taken.records) == ({3: 7}, 0, 0, 0, [])
    one = core.feed_one(b'{"event_id": "x", "ts": 1700000031000, "type": "inference", "model": "m"}', 1_700_000_031_000)
    assert isinstance(one, _native.FedOne) and isinstance(one.records, list) and one.late is None
    late = core.feed_one(
        b'{"event_id": "y", "ts": 1600000000000, "type": "inference", "model": "m"}', 1_600_000_000_000
    )
    assert late.records == [] and late.late is not None and late.late[0] == 1_600_000_000_000
    assert isinstance(core.finish(), list)
    taken = core.snapshot()
    assert isinstance(taken, _native.Snapshot) and isinstance(taken.json, bytes) and isinstance(taken.lives, list)
    memory = core.memory()
    assert isinstance(memory, _native.Memory)
    assert [type(n) for n in (memory.groups, memory.buckets, memory.bytes)] == [int, int, int]
    assert all(isinstance(live, _native.Life) for live in core.lives())
    assert all(type(n) is int for n in core.key_counts())
    assert isinstance(core.opened, dict) and core.watermark is not None and core.threads in (1, 2)
    assert _native.Core.check_plan(plans_json(rules)) is None
    assert isinstance(_native.NativeRouter.shard_of("r", b'["m"]', 4), int)
    columns = _native.Columns([[0, 1, 0]], [2], [True, False, True], [1.0, 1.0, 1.0])
    assert len(columns) == 3 and all(isinstance(x, float) for x in columns.tally([(0, 0)]))
