"""An example model gateway that obeys Firebreak's `fallback` containment.

`ModelRouter` maps the model a request asks for to the model that serves it. When
Firebreak sends ``containment.command`` with ``action: fallback``, ``target: {"model": X}``
and ``params: {"model": Y}``, requests for X go to Y; when the command is released or
expires, X goes back to its configured route (X itself unless ``--route`` said otherwise).

    python examples/gateway/gateway.py --bootstrap 127.0.0.1:9092

prints every route change. See README.md next to this file and docs/sdk.md.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import socket
import sys
from collections.abc import Callable, Mapping
from typing import Any

from firebreak.sdk import DEFAULT_COMMANDS_TOPIC, ContainmentListener


class ModelRouter:
    """Routes models; the `fallback` handler for a ContainmentListener (``apply``/``revert``).

    Several fallbacks may hold the same model at once (two incidents): the most recent
    one wins, and reverting one leaves the others in force.
    """

    def __init__(self, routes: Mapping[str, str] | None = None, on_change: Callable[[str], None] | None = print):
        self.base: dict[str, str] = dict(routes or {})
        self._overrides: dict[str, dict[str, str]] = {}  # model → {command_id: fallback model}
        self.on_change = on_change

    def route(self, model: str) -> str:
        """The model that serves a request for `model`."""
        overrides = self._overrides.get(model)
        if overrides:
            return next(reversed(overrides.values()))
        return self.base.get(model, model)

    @property
    def routes(self) -> dict[str, str]:
        """Every model with a configured or overridden route → where it goes now."""
        return {model: self.route(model) for model in {*self.base, *self._overrides}}

    # -- the containment handler -------------------------------------------------------

    def apply(self, command: dict[str, Any]) -> None:
        model, fallback = self._model(command, "target"), self._model(command, "params")
        before = self.route(model)
        self._overrides.setdefault(model, {})[command["command_id"]] = fallback
        self._changed(model, before, f"fallback {command['command_id']} (incident {command.get('incident_id')})")

    def revert(self, command: dict[str, Any]) -> None:
        model = self._model(command, "target")
        before = self.route(model)
        overrides = self._overrides.get(model, {})
        overrides.pop(command["command_id"], None)
        if not overrides:
            self._overrides.pop(model, None)
        self._changed(model, before, f"revert {command['command_id']}")

    @staticmethod
    def _model(command: dict[str, Any], where: str) -> str:
        model = (command.get(where) or {}).get("model")
        if not isinstance(model, str) or not model:
            raise ValueError(f"a fallback command needs {where}.model, got {command.get(where)!r}")
        return model

    def _changed(self, model: str, before: str, why: str) -> None:
        after = self.route(model)
        if self.on_change is not None:
            if after != before:
                self.on_change(f"route {model}: {before} -> {after}  [{why}]")
            else:
                self.on_change(f"route {model}: stays {after}  [{why}]")


def _parse_routes(pairs: list[str]) -> dict[str, str]:
    routes = {}
    for pair in pairs:
        model, sep, target = pair.partition("=")
        if not sep or not model or not target:
            raise argparse.ArgumentTypeError(f"--route takes MODEL=TARGET, got {pair!r}")
        routes[model] = target
    return routes


async def serve(args: argparse.Namespace) -> int:
    router = ModelRouter(_parse_routes(args.route), on_change=lambda line: print(line, flush=True))
    listener = ContainmentListener(args.bootstrap, args.group, args.topic, handlers={"fallback": router})
    await listener.start()
    print(f"gateway: listening on {args.topic} at {args.bootstrap} as group {args.group}", flush=True)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, lambda: asyncio.ensure_future(listener.stop()))
    try:
        await listener.run()
    finally:
        await listener.stop()
        print(f"gateway: stopped; {listener.stats}", flush=True)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Example model gateway obeying Firebreak fallback commands.")
    parser.add_argument("--bootstrap", default="127.0.0.1:9092", help="Kafka bootstrap servers")
    parser.add_argument("--topic", default=DEFAULT_COMMANDS_TOPIC, help="containment commands topic")
    parser.add_argument(
        "--group",
        default=f"gateway-{socket.gethostname()}-{os.getpid()}",
        help="consumer group, one per gateway instance (default: host and pid)",
    )
    parser.add_argument("--route", action="append", default=[], metavar="MODEL=TARGET", help="a configured route")
    parser.add_argument("-v", "--verbose", action="store_true", help="log every decision")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.WARNING, format="%(levelname)s %(message)s")
    logging.getLogger("aiokafka").setLevel(logging.WARNING)
    try:
        return asyncio.run(serve(args))
    except Exception as error:  # noqa: BLE001 - one line, not a traceback, for a CLI
        print(f"gateway: {error}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
