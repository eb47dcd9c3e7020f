"""firebreak notify following the incidents topic to a REAL Alertmanager: an open incident's
alert is re-sent while notify runs (its endsAt moves on), the resolution ends it."""

from __future__ import annotations

import asyncio
import json
import sys
import urllib.request
from datetime import datetime

import orjson
import pytest
from go_tools import running_alertmanager
from test_notify_topic import publish

pytestmark = pytest.mark.kafka


def alert_of(url: str, incident: str) -> dict | None:
    with urllib.request.urlopen(f"{url}/api/v2/alerts", timeout=5) as response:  # noqa: S310 - 127.0.0.1
        alerts = json.loads(response.read())
    return next((a for a in alerts if a["labels"].get("incident_id") == incident), None)


def incident(kind: str, ts: str, **extra) -> dict:
    return {
        "type": kind,
        "incident_id": "inc_am_topic",
        "rule": "leak",
        "category": "data_leakage",
        "severity": "sev2",
        "group": {"tenant": "acme"},
        "ts": ts,
        "onset": "2026-12-01T10:00:00Z",
        "window": "1m",
        "value": 3,
        "threshold": 2,
        "why": "3 pii events in 1m",
        "notify": ["am"],
        **extra,
    }


async def run_notify(bootstrap: str, config: str, incidents: str, idle_s: int) -> tuple[int, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "firebreak.cli",
        "notify",
        "--config",
        config,
        "--topic",
        incidents,
        "--containment-topic",
        incidents + "-cmd",
        "--bootstrap",
        bootstrap,
        "--group",
        f"{incidents}-notify",
        "--idle",
        str(idle_s),
        stderr=asyncio.subprocess.PIPE,
    )
    _, err = await asyncio.wait_for(proc.communicate(), 120)
    return proc.returncode, err.decode()


def test_open_incidents_are_resent_and_the_resolution_ends_them(kafka_bootstrap, unique_topic, tmp_path):
    incidents = unique_topic("inc-am")
    with running_alertmanager(tmp_path) as url:
        config = tmp_path / "notify.toml"
        config.write_text(f'[targets.am]\nkind = "alertmanager"\nurl = "{url}"\nresend_s = 1\n')
        asyncio.run(
            publish(
                kafka_bootstrap, incidents, incidents + "-cmd", [incident("incident.opened", "2026-12-01T10:01:00Z")]
            )
        )
        code, err = asyncio.run(run_notify(kafka_bootstrap, str(config), incidents, 5))
        assert code == 0, err
        alert = alert_of(url, "inc_am_topic")
        assert alert is not None and alert["status"]["state"] == "active", err
        delivered = int(err.split(" deliveries")[0].rsplit(" ", 1)[1])
        assert delivered >= 3, err  # the opening, then re-sends every second while it waited
        # the endsAt is about 4 re-send intervals past the last re-send: later than the first would give
        assert datetime.fromisoformat(alert["endsAt"]) > datetime.fromisoformat(alert["startsAt"])

        resolved = incident("incident.resolved", "2026-12-01T10:05:00Z", duration_s=240)
        asyncio.run(publish(kafka_bootstrap, incidents, incidents + "-cmd", [resolved]))
        code, err = asyncio.run(run_notify(kafka_bootstrap, str(config), incidents, 3))
        assert code == 0, err
        assert alert_of(url, "inc_am_topic") is None, orjson.dumps(alert_of(url, "inc_am_topic"))
