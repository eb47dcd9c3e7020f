"""Fixtures shared by every test suite.

Tests that need Kafka talk to a real broker, never a mock: `kafka_bootstrap`
finds it (KAFKA_BOOTSTRAP, default 127.0.0.1:9092, as started by
`scripts/kafka-local start` or `scripts/test`). If nothing answers there, those
tests fail with a one-line message -- they never skip and never hang.

The engine under test: every test that evaluates rules (replay, `firebreak test`, scenarios,
investigate, the builders in corekit) takes the `rule_engine` fixture, which runs it on the
engine FIREBREAK_TEST_ENGINE names (`native`, the default, or `python`, the core). CI runs the
unit suite once per engine; the second pass selects these tests by the `engine` marker that the
fixture gives them (`-m engine`). A unit test that evaluates rules without the fixture fails: it
finds FIREBREAK_ENGINE set to a name no engine has. Known gaps are marked
`@pytest.mark.engine_gap("python", reason=...)`: on that engine the test must fail (a strict
xfail, counted in the summary), so a gap that closes is noticed. A module's world built once
takes `rule_engine_kind` (the engine's name, session-scoped): its tests are marked `engine` too.
Tests that compare both engines (differential) name them and say so in their docstrings.
"""

from __future__ import annotations

import asyncio
import os
import re
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest

DEFAULT_BOOTSTRAP = "127.0.0.1:9092"
PROBE_TIMEOUT_S = 5.0
TEST_ENGINES = ("native", "python")
UNIT_TESTS = Path(__file__).resolve().parent / "unit"
# What FIREBREAK_ENGINE holds in a test without the rule_engine fixture: an engine no Driver knows.
NO_ENGINE = "none: this test evaluates rules without the rule_engine fixture (tests/conftest.py)"


def test_engine() -> str:
    """The engine this run tests rules on: FIREBREAK_TEST_ENGINE, default native."""
    return os.environ.get("FIREBREAK_TEST_ENGINE", "").strip() or "native"


test_engine.__test__ = False  # a helper, not a test


def pytest_configure(config: pytest.Config) -> None:
    if test_engine() not in TEST_ENGINES:
        raise pytest.UsageError(f"FIREBREAK_TEST_ENGINE={test_engine()!r}: one of {', '.join(TEST_ENGINES)}")
    config.addinivalue_line("markers", "engine: evaluates rules on the engine under test (the rule_engine fixture)")
    config.addinivalue_line(
        "markers",
        "engine_gap(engine, reason): a known gap of that engine: there the test must fail (strict xfail)",
    )


@pytest.fixture
def rule_engine(monkeypatch: pytest.MonkeyPatch) -> str:
    """The engine under test (FIREBREAK_TEST_ENGINE), also as FIREBREAK_ENGINE for every Driver,
    command and subprocess of the test that does not name one."""
    kind = test_engine()
    monkeypatch.setenv("FIREBREAK_ENGINE", kind)
    return kind


@pytest.fixture(scope="session")
def rule_engine_kind() -> str:
    """The engine under test's name, for a fixture wider than one test (a module's world built
    once) that evaluates rules on it: it names the engine itself (FIREBREAK_ENGINE is set per
    test). A test that takes it, directly or through such a fixture, is marked `engine`."""
    return test_engine()


@pytest.fixture(autouse=True)
def _no_engine_without_rule_engine(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    # A test that evaluates rules must say so (the rule_engine fixture), or it would run on the
    # default engine in every pass and the second pass would miss it: without the fixture, a
    # Driver (or firebreak command) that is not told its engine fails on this name.
    # The unit tests only: the broker tests (tests/integration) run the worker, which has one
    # engine, and commands on the default one.
    if "rule_engine" not in request.fixturenames and UNIT_TESTS in request.node.path.parents:
        monkeypatch.setenv("FIREBREAK_ENGINE", NO_ENGINE)


def bootstrap_address() -> str:
    return os.environ.get("KAFKA_BOOTSTRAP", "").strip() or DEFAULT_BOOTSTRAP


async def _list_topics(bootstrap: str, timeout_s: float) -> list[str]:
    from aiokafka.admin import AIOKafkaAdminClient

    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=int(timeout_s * 1000))
    try:
        async with asyncio.timeout(timeout_s):
            await admin.start()
            return await admin.list_topics()
    finally:
        try:
            await admin.close()
        except Exception:  # noqa: BLE001 - closing a half-started client must not mask the real error
            pass


def probe_broker(bootstrap: str, timeout_s: float = PROBE_TIMEOUT_S) -> str | None:
    """Return None if a broker at `bootstrap` lists its topics within `timeout_s`, else why not."""
    loop = asyncio.new_event_loop()
    try:
        loop.run_until_complete(_list_topics(bootstrap, timeout_s))
    except TimeoutError:
        return f"no answer within {timeout_s:g}s"
    except Exception as exc:  # noqa: BLE001 - any failure means "no usable broker"
        text, name = str(exc), type(exc).__name__
        if not text.startswith(name):
            text = f"{name}: {text}" if text else name
        return text.splitlines()[0][:200]
    finally:
        loop.close()
    return None


@pytest.fixture(scope="session")
def kafka_bootstrap() -> str:
    """Bootstrap address of a live Kafka broker; fails (never skips) when there is none."""
    bootstrap = bootstrap_address()
    why = probe_broker(bootstrap)
    if why is not None:
        pytest.fail(
            f"no Kafka broker at {bootstrap} — start one with scripts/kafka-local start or set KAFKA_BOOTSTRAP ({why})",
            pytrace=False,
        )
    return bootstrap


@pytest.fixture
def unique_topic(request: pytest.FixtureRequest) -> Callable[[str], str]:
    """Factory of fresh topic names, unique per call: unique_topic("in") -> "fbt-test-x-in-3f9a0c1b2d".

    Only [A-Za-z0-9-] is used: Kafka warns when names mix '.' and '_'.
    """
    base = re.sub(r"[^A-Za-z0-9-]+", "-", request.node.name).strip("-")[:60]

    def make(suffix: str = "t") -> str:
        suffix = re.sub(r"[^A-Za-z0-9-]+", "-", suffix)
        return f"fbt-{base}-{suffix}-{uuid.uuid4().hex[:10]}"

    return make


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    # Anything that uses the broker is a kafka test, marked or not, so that
    # `-m "not kafka"` (scripts/test --no-kafka) reliably leaves it out.
    # tryfirst: this must run before pytest deselects by marker.
    engine = test_engine()
    for item in items:
        fixtures = getattr(item, "fixturenames", ())
        if "kafka_bootstrap" in fixtures and item.get_closest_marker("kafka") is None:
            item.add_marker(pytest.mark.kafka)
        if "rule_engine" in fixtures or "rule_engine_kind" in fixtures:
            item.add_marker(pytest.mark.engine)
        for gap in item.iter_markers("engine_gap"):
            (gap_engine,) = gap.args
            if gap_engine not in TEST_ENGINES or not gap.kwargs.get("reason"):
                raise pytest.UsageError(
                    f"{item.nodeid}: engine_gap(engine, reason=...) with engine one of {TEST_ENGINES}"
                )
            if gap_engine == engine:
                item.add_marker(
                    pytest.mark.xfail(reason=f"known gap of the {engine} engine: {gap.kwargs['reason']}", strict=True)
                )


def pytest_report_header(config: pytest.Config) -> str:
    return f"engine under test: {test_engine()} (FIREBREAK_TEST_ENGINE; tests with the rule_engine fixture)"


def pytest_terminal_summary(terminalreporter, exitstatus: int, config: pytest.Config) -> None:  # noqa: ANN001
    reports = [r for kind in terminalreporter.stats.values() for r in kind if isinstance(r, pytest.TestReport)]
    ran = {r.nodeid for r in reports if r.when == "call" and "engine" in r.keywords}
    gaps = {r.nodeid for r in reports if r.nodeid in ran and hasattr(r, "wasxfail")}
    terminalreporter.write_line(
        f"engine {test_engine()}: {len(ran)} tests evaluated rules on it (rule_engine), {len(gaps)} of them known gaps"
    )
