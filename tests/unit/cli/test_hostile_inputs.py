"""Issue 31, the rules half: `firebreak test` checks its events as replay does and caps them per
file; a lifecycle error in the native engine is one EngineError, never an event fed twice; and
the commands print one line for each of these, never a traceback."""

from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path

import firebreak.core.engine as python_core
import firebreak.native as native_module
import orjson
import pytest
from firebreak import _native
from firebreak.adapters.rule_tests import MAX_EVENTS_PER_TEST, generate_events, run_test_file
from firebreak.cli import main
from firebreak.core import validate_event
from firebreak.dsl import load_rules
from firebreak.errors import EngineError
from firebreak.native import NativeEngine

RULES = "rule spike: count() > 5 over 10m -> sev2\n"
HEAD = 'rules = ["r.rules"]\nstart = "2026-01-01T00:00:00Z"\n'
BLOCK = '[[input]]\nfrom = "0m"\nuntil = "10m"\nevery = "10s"\n'

# (name, what follows BLOCK, the one error line after "<file>: ")
BAD_EVENTS = [
    ("model", "event = { model = 5 }", "input 1: event 1-0 is not a valid event: `model` must be a string"),
    (
        "latency",
        'event = { latency_ms = "slow" }',
        "input 1: event 1-0 is not a valid event: `latency_ms` must be a number",
    ),
    (
        "flags",
        'event = { flags = "x" }',
        "input 1: event 1-0 is not a valid event: `flags` must be an object of booleans",
    ),
    (
        "change",
        'type = "change"',
        "input 1: event 1-0 is not a valid event: a change event needs `kind`, one of "
        "model_update, prompt_change, config_change, deploy, data_pipeline",
    ),
    (
        "report",
        'type = "report"',
        "input 1: event 1-0 is not a valid event: a report event needs `labels`, "
        'a list of one or more labels such as ["wrong"]',
    ),
    (
        "bigint",
        "event = { latency_ms = 99999999999999999999 }",
        "input 1: event 1-0 cannot be written as JSON: Integer exceeds 64-bit range",
    ),
    (
        "deep_event",
        "event = { a = " + "{ b = " * 300 + "1" + " }" * 301,
        "input 1: event 1-0 cannot be written as JSON: Recursion limit reached",
    ),
    (
        "after_9999",
        'event = {}\n[[input]]\nat = "3000000000d"',
        "input 2: event 2-0 is not a valid event: `ts` 259201767225600000 is after year 9999 as epoch milliseconds "
        "(microseconds or nanoseconds?); send epoch milliseconds or an RFC 3339 time",
    ),
]


def write_test(folder: Path, name: str, body: str) -> Path:
    (folder / "r.rules").write_text(RULES)
    path = folder / f"{name}.test.toml"
    path.write_text(HEAD + body + "\n")
    return path


@pytest.mark.parametrize(("name", "block", "line"), BAD_EVENTS, ids=[b[0] for b in BAD_EVENTS])
def test_a_bad_test_event_is_one_line_naming_file_and_block(
    tmp_path: Path, rule_engine: str, name: str, block: str, line: str
) -> None:
    path = write_test(tmp_path, name, BLOCK + block)
    outcome = run_test_file(path, rule_engine)
    assert outcome.error == f"{path}: {line}"
    assert outcome.records == []


def test_every_bad_block_of_a_file_is_told(tmp_path: Path) -> None:
    body = "\n".join(BLOCK + block for block in ("event = { model = 5 }", "event = {}", 'type = "change"'))
    path = write_test(tmp_path, "several", body)
    error = run_test_file(path).error or ""
    assert [line.split(": ", 2)[1] for line in error.splitlines()] == ["input 1", "input 3"]


def test_the_event_cap_is_per_file(tmp_path: Path, rule_engine: str) -> None:
    third = MAX_EVENTS_PER_TEST // 3 + 1  # each block under the cap, the three of them over it
    block = f'[[input]]\nfrom = "0s"\nuntil = "{third}s"\nevery = "1s"\n'
    path = write_test(tmp_path, "cap", block * 3)
    outcome = run_test_file(path, rule_engine)
    assert outcome.error == (
        f"{path}: {3 * third} events is too many for a rule test (max {MAX_EVENTS_PER_TEST} per file; "
        f"input 1: {third}, input 2: {third}, input 3: {third})"
    )


def test_deeply_nested_toml_is_reported_not_raised(tmp_path: Path, rule_engine: str) -> None:
    path = write_test(tmp_path, "deep", "x = " + "[" * 5000 + "]" * 5000)
    outcome = run_test_file(path, rule_engine)
    assert outcome.error == f"{path}: not readable TOML: tables or arrays nested too deeply"


def test_toml_dates_reach_the_engines_as_replay_would_read_them() -> None:
    spec = tomllib.loads('[[input]]\nat = "1m"\nevent = { model = 2026-01-01, at = 2026-01-01T10:00:00Z }\n')
    (event,) = generate_events(spec, 1_767_225_600_000)
    assert (event.data["model"], event.data["at"]) == ("2026-01-01", "2026-01-01T10:00:00+00:00")


# ---- the native engine: decoder refusals apart from lifecycle errors --------------------------
# (the native engine's own: its decoder and its core, in every pass)


def test_the_native_decoder_refusal_is_its_own_value_error() -> None:
    assert issubclass(_native.EventRefused, ValueError)
    rules, _ = load_rules({"r.rules": RULES})
    engine = NativeEngine(rules)
    with pytest.raises(_native.EventRefused):
        engine.core.feed_one(b"not json", 0)


class CountingCore:
    """The native core, keeping the events fed to it one by one."""

    def __init__(self, core) -> None:
        self.core, self.fed = core, []

    def feed_one(self, raw: bytes, ts: int):
        self.fed.append(raw)
        return self.core.feed_one(raw, ts)

    def __getattr__(self, name: str):
        return getattr(self.core, name)


def failing_once(monkeypatch: pytest.MonkeyPatch, error: Exception, module=native_module) -> None:
    """The lifecycle step (of ``module``'s engine) raises ``error`` the first time it is called."""
    real, calls = module.evaluate_group, []

    def evaluate_group(*args):
        calls.append(1)
        if len(calls) == 1:
            raise error
        return real(*args)

    monkeypatch.setattr(module, "evaluate_group", evaluate_group)


def events(n: int) -> list:
    return [validate_event({"event_id": f"e{i}", "ts": 1_767_225_600_000 + i * 10_000}) for i in range(n)]


@pytest.mark.parametrize("error", [ValueError("record writer"), TypeError("bad value"), KeyError("x")])
def test_a_lifecycle_error_propagates_once_and_the_event_is_not_fed_again(
    monkeypatch: pytest.MonkeyPatch, error: Exception
) -> None:
    rules, _ = load_rules({"r.rules": "rule spike: count() > 0 over 10s -> sev2\n"})
    engine = NativeEngine(rules)
    counting = CountingCore(engine.core)
    engine.core = counting
    failing_once(monkeypatch, error)
    with pytest.raises(EngineError, match=f"rule spike: the lifecycle step at .* failed: {type(error).__name__}"):
        engine.feed_events(events(20))
    assert counting.fed, "the events reached the native core"
    assert len(set(counting.fed)) == len(counting.fed), "an event was fed twice"
    assert len(counting.fed) < 20, "the engine went on after the error"


# per engine: the module whose lifecycle step fails, and what the one line says of it
ENGINE_ERRORS = {
    "native": (native_module, "rule spike: the lifecycle step at 2026-01-01T00:00:01Z failed"),
    "python": (python_core, "the Python core failed"),
}


def test_an_engine_error_is_one_line_from_the_cli(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str], rule_engine: str
) -> None:
    module, where = ENGINE_ERRORS[rule_engine]
    (tmp_path / "r.rules").write_text("rule spike: count() > 0 over 10s -> sev2\n")
    lines = [orjson.dumps({"event_id": f"e{i}", "ts": 1_767_225_600_000 + i * 10_000}) for i in range(20)]
    (tmp_path / "events.jsonl").write_bytes(b"\n".join(lines) + b"\n")
    failing_once(monkeypatch, ValueError("cannot write the record"), module)
    code = main(
        ["replay", "--engine", rule_engine, "--rules", str(tmp_path / "r.rules"), str(tmp_path / "events.jsonl")]
    )
    err = capsys.readouterr().err
    assert code == 1
    assert err.splitlines() == [f"firebreak replay: engine error: {where}: ValueError: cannot write the record"]


# ---- the commands, in a subprocess: exit status, one line, no traceback --------------------------


def firebreak(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", "import sys; from firebreak.cli import main; sys.exit(main())", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=300,
    )


CHECKED = {
    "ttl.rules": ("rate(pii) > 0.1 over 10m -> sev2 contain rate_limit(rps=1) for 3000000d", "1:64"),
    "rps.rules": ("rate(pii) > 0.1 over 10m -> sev2 contain rate_limit(rps=99999999999999999999999)", "1:53"),
    "window.rules": ("count() > 5 over 99999999999d -> sev2", "1:18"),
    "baseline.rules": ("count() > 3x baseline(99999999999d) over 10m -> sev2", "1:23"),
    "min.rules": ("rate(pii) > 0.1 over 10m min 99999999999999999999 events -> sev2", "1:30"),
    "chain.rules": (
        "rate(pii) > 0.1 over 10m where " + " and ".join(f"f{i} == 1" for i in range(490)) + " -> sev2",
        "1:",
    ),
    "digits.rules": (f"count() > {'9' * 401} over 10m -> sev2", "1:11"),
    "parens.rules": (f"count() > 5 over 10m where {'(' * 10_000}a{')' * 10_000} -> sev2", "1:108"),
}


@pytest.mark.parametrize("name", sorted(CHECKED))
def test_check_and_replay_refuse_in_one_located_line(tmp_path: Path, name: str) -> None:
    text, where = CHECKED[name]
    (tmp_path / name).write_text(text + "\n")
    (tmp_path / "events.jsonl").write_text('{"event_id": "e1", "ts": 1767225600000}\n')
    for args in (["check", name], ["replay", "--rules", name, "events.jsonl"]):
        done = firebreak(*args, cwd=tmp_path)
        assert done.returncode == 1, done.stderr
        assert "Traceback" not in done.stderr
        errors = [line for line in done.stderr.splitlines() if ": error: " in line]
        assert len(errors) == 1 and errors[0].startswith(f"{name}:{where}"), done.stderr


def test_test_reports_bad_inputs_in_one_line_each(tmp_path: Path, rule_engine: str) -> None:
    for name, block, _line in BAD_EVENTS:
        write_test(tmp_path, name, BLOCK + block)
    write_test(tmp_path, "deep", "x = " + "[" * 5000 + "]" * 5000)
    done = firebreak("test", "--engine", rule_engine, ".", cwd=tmp_path)
    assert done.returncode == 1
    assert "Traceback" not in done.stdout + done.stderr
    errors = [line for line in done.stdout.splitlines() if line.startswith("  error: ")]
    assert len(errors) == len(BAD_EVENTS) + 1, done.stdout
    for name, _block, line in BAD_EVENTS:
        assert f"  error: {name}.test.toml: {line}" in errors
    assert done.stdout.splitlines()[-1] == f"0 passed, {len(BAD_EVENTS) + 1} failed (0 expectations in 9 files)"
