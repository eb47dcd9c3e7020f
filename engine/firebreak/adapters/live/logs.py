"""The worker's log: one line per thing an operator needs to know, as text or JSON lines.

Faust's own console output (its progress spinner, the start-up banner) is switched off:
it writes terminal control characters into files and log pipelines. Our records carry
structured fields (``extra={"fields": {...}}``) that the JSON format emits as keys.
"""

from __future__ import annotations

import logging
import re
import sys
import time
from typing import IO, Any

import orjson

LEVELS = ("debug", "info", "warning", "error")
FORMATS = ("text", "json")
THIRD_PARTY = ("aiokafka", "faust", "mode", "kafka")  # their per-message debug logs cost more than our work
_CONTROL = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]|[\x00-\x08\x0b-\x1f\x7f]")


def clean(text: str) -> str:
    """No terminal control characters (colour codes, carriage returns, spinner frames)."""
    return _CONTROL.sub("", text)


def _utc(created: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(created)) + f".{int(created % 1 * 1000):03d}Z"


class TextFormatter(logging.Formatter):
    """``2026-11-28T22:40:01.123Z INFO firebreak.worker: message``, tracebacks indented below."""

    def format(self, record: logging.LogRecord) -> str:
        line = f"{_utc(record.created)} {record.levelname} {record.name}: {clean(record.getMessage())}"
        if record.exc_info:
            line += "\n" + clean(self.formatException(record.exc_info))
        return line


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ts, level, logger, message, and the record's fields."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": _utc(record.created),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": clean(record.getMessage()),
        }
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict):
            out.update({k: v for k, v in fields.items() if k not in out})
        if record.exc_info:
            out["exception"] = clean(self.formatException(record.exc_info))
        return orjson.dumps(out, default=str).decode()


class _Transient(logging.Filter):
    """aiokafka logs a group coordinator that is still loading (it retries at once) as an ERROR;
    at start-up that is every time. Not an error an operator can act on."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "CoordinatorNotAvailable" not in record.getMessage()


def configure(level: str = "info", fmt: str = "text", stream: IO[str] | None = None) -> None:
    """Root logging for a worker process: our loggers at ``level``, third-party ones at warning
    (or debug with ``level`` debug), one handler on ``stream`` (stderr)."""
    if level not in LEVELS:
        raise ValueError(f"log level must be one of {', '.join(LEVELS)}")
    if fmt not in FORMATS:
        raise ValueError(f"log format must be one of {', '.join(FORMATS)}")
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for name in THIRD_PARTY:
        logging.getLogger(name).setLevel(logging.DEBUG if level == "debug" else logging.WARNING)
    coordinator = logging.getLogger("aiokafka.consumer.group_coordinator")
    coordinator.filters[:] = [] if level == "debug" else [_Transient()]
