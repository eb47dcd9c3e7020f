"""The worker's log formats and metric values, without Kafka."""

from __future__ import annotations

import io
import logging

import orjson
import pytest
from firebreak.adapters.live.logs import clean, configure


@pytest.fixture
def restore_logging():
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


def test_json_lines_carry_the_fields_and_no_control_characters(restore_logging):
    stream = io.StringIO()
    configure("info", "json", stream)
    log = logging.getLogger("firebreak.worker")
    log.info("input partition %d idle\r\x1b[32m", 3, extra={"fields": {"event": "partition_idle", "partition": 3}})
    log.debug("not shown at info")
    logging.getLogger("aiokafka").info("third-party chatter is held to warnings")
    [line] = stream.getvalue().splitlines()
    record = orjson.loads(line)
    assert record["message"] == "input partition 3 idle"
    assert record["event"] == "partition_idle" and record["partition"] == 3
    assert record["level"] == "info" and record["logger"] == "firebreak.worker"
    assert record["ts"].endswith("Z") and "T" in record["ts"]


def test_text_lines_are_plain(restore_logging):
    stream = io.StringIO()
    configure("debug", "text", stream)
    logging.getLogger("firebreak.worker").debug("shard %d starts fresh", 2)
    [line] = stream.getvalue().splitlines()
    assert line.endswith(" DEBUG firebreak.worker: shard 2 starts fresh")
    assert logging.getLogger("aiokafka").level == logging.DEBUG  # debug opens the third-party logs too


def test_bad_level_or_format_is_refused():
    with pytest.raises(ValueError, match="log level"):
        configure("loud", "text", io.StringIO())
    with pytest.raises(ValueError, match="log format"):
        configure("info", "xml", io.StringIO())


def test_clean_keeps_newlines_and_text():
    assert clean("a\x1b[1;31mb\x07c\nd\te") == "abc\nd\te"
