"""Errors of an engine itself, apart from problems in its input.

Bad events, bad rules and bad test files are the input's problems: they are reported as
data (dead letters, diagnostics, failed tests) and the run goes on. An `EngineError` is the
engine failing while it ran (a lifecycle step, writing a record): the command stops and says
so in one line (engine/firebreak/cli.py), never by feeding the event again.
"""

from __future__ import annotations


class EngineError(RuntimeError):
    """The engine failed while it ran; the message says where (rule, time) and what."""
