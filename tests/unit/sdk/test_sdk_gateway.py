"""The example gateway's ModelRouter as a plain object (the Kafka path is in tests/integration/test_sdk.py)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

GATEWAY = Path(__file__).resolve().parents[3] / "examples" / "gateway" / "gateway.py"


def load_gateway():
    if "fb_example_gateway" not in sys.modules:
        spec = importlib.util.spec_from_file_location("fb_example_gateway", GATEWAY)
        module = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = module
        spec.loader.exec_module(module)
    return sys.modules["fb_example_gateway"]


def fallback(command_id: str, model: str, to: str) -> dict:
    return {
        "command_id": command_id,
        "incident_id": "inc_0000000000000001",
        "action": "fallback",
        "target": {"model": model},
        "params": {"model": to},
    }


def test_fallback_and_revert():
    lines: list[str] = []
    router = load_gateway().ModelRouter({"claude": "claude-2"}, on_change=lines.append)
    assert router.route("gpt-4o") == "gpt-4o" and router.route("claude") == "claude-2"
    router.apply(fallback("cmd_1", "gpt-4o", "gpt-4o-mini"))
    assert router.route("gpt-4o") == "gpt-4o-mini"
    router.apply(fallback("cmd_2", "claude", "claude-haiku"))
    assert router.routes == {"gpt-4o": "gpt-4o-mini", "claude": "claude-haiku"}
    router.revert(fallback("cmd_1", "gpt-4o", "gpt-4o-mini"))
    router.revert(fallback("cmd_2", "claude", "claude-haiku"))
    assert router.routes == {"claude": "claude-2"}, "back to the configured routes"
    assert lines[0] == "route gpt-4o: gpt-4o -> gpt-4o-mini  [fallback cmd_1 (incident inc_0000000000000001)]"
    assert lines[-1] == "route claude: claude-haiku -> claude-2  [revert cmd_2]"


def test_overlapping_fallbacks_on_one_model():
    router = load_gateway().ModelRouter(on_change=None)
    router.apply(fallback("cmd_1", "gpt-4o", "gpt-4o-mini"))
    router.apply(fallback("cmd_2", "gpt-4o", "llama-3"))
    assert router.route("gpt-4o") == "llama-3"
    router.revert(fallback("cmd_2", "gpt-4o", "llama-3"))
    assert router.route("gpt-4o") == "gpt-4o-mini", "the other incident's fallback still holds"
    router.revert(fallback("cmd_1", "gpt-4o", "gpt-4o-mini"))
    router.revert(fallback("cmd_1", "gpt-4o", "gpt-4o-mini"))  # idempotent
    assert router.route("gpt-4o") == "gpt-4o"


def test_a_release_record_reverts_too():
    """After a restart the listener may pass a release record (no params) to revert."""
    router = load_gateway().ModelRouter(on_change=None)
    router.apply(fallback("cmd_1", "gpt-4o", "gpt-4o-mini"))
    router.revert(
        {"type": "containment.release", "command_id": "cmd_1", "action": "fallback", "target": {"model": "gpt-4o"}}
    )
    assert router.route("gpt-4o") == "gpt-4o"


def test_commands_without_a_model_are_refused():
    router = load_gateway().ModelRouter(on_change=None)
    with pytest.raises(ValueError, match="target.model"):
        router.apply({"command_id": "cmd_1", "target": {"tenant": "acme"}, "params": {"model": "x"}})
    with pytest.raises(ValueError, match="params.model"):
        router.apply({"command_id": "cmd_1", "target": {"model": "gpt-4o"}, "params": {}})
