"""The `alertmanager` notify target against a REAL Alertmanager (built from its Go module by
scripts/go-tools, started here on a free port with a config file): alerts appear, are grouped
by their labels, a silence silences them, the resolution ends them, re-sends keep them firing."""

from __future__ import annotations

import asyncio
import json
import time
import urllib.request
from datetime import UTC, datetime, timedelta

import pytest
from corekit import run as run_rules
from firebreak.adapters.alertmanager import AlertResends, alerts, label_name, labels, resend_open_alerts
from firebreak.adapters.notify import Deliverer, NotifyConfigError, load_notify_config, notify_records
from firebreak.core import parse_ts
from firebreak.dsl import load_rules
from go_tools import running_alertmanager
from test_core_properties import BASE

RULES = """
rule spike:
  rate(hallucination) > 3x baseline over 5m by model -> sev3 contain fallback notify "am"
rule leak:
  count(pii) >= 2 over 1m by tenant -> sev2 contain disable_feature notify "am"
"""


def _get(url: str) -> object:
    with urllib.request.urlopen(url, timeout=5) as response:  # noqa: S310 - 127.0.0.1
        return json.loads(response.read())


def _post(url: str, body: object) -> object:
    request = urllib.request.Request(url, json.dumps(body).encode(), {"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=5) as response:  # noqa: S310 - 127.0.0.1
        return json.loads(response.read() or b"null")


@pytest.fixture(scope="module")
def alertmanager(tmp_path_factory):
    """A real Alertmanager on 127.0.0.1:<free port>; its base URL."""
    with running_alertmanager(tmp_path_factory.mktemp("alertmanager")) as url:
        yield url


@pytest.fixture(scope="module")
def records(rule_engine_kind: str) -> list[dict]:
    """The rules' records over BASE, on the engine under test: what notify delivers."""
    rules, problems = load_rules({"n.rules": RULES})
    assert not problems
    out = run_rules(rules, BASE, engine=rule_engine_kind)
    assert {r["rule"] for r in out if r["type"] == "incident.opened"} == {"spike", "leak"}
    return out


def _config(tmp_path, url: str, extra: str = ""):
    path = tmp_path / "notify.toml"
    path.write_text(f'[targets.am]\nkind = "alertmanager"\nurl = "{url}"\nretries = 1\nbackoff_s = 0.1\n{extra}')
    return load_notify_config(str(path), env={})


def _ours(url: str, incident_ids: set[str], query: str = "") -> list[dict]:
    return [a for a in _get(f"{url}/api/v2/alerts{query}") if a["labels"].get("incident_id") in incident_ids]


def _until(check, timeout_s: float = 10.0):
    deadline = time.monotonic() + timeout_s
    while True:
        value = check()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(0.2)


def test_payload_labels_annotations_and_times(records):
    opened = next(r for r in records if r["type"] == "incident.opened" and r["rule"] == "leak")
    now = time.time()
    [alert] = alerts({**opened, "case_id": "case-7"}, "firebreak investigate --rules rules/", 60, now=now)
    assert alert["labels"] == {
        "alertname": "leak",
        "severity": "error",
        "firebreak_severity": "sev2",
        "category": opened["category"],
        "incident_id": opened["incident_id"],
        "case_id": "case-7",
        "tenant": opened["group"]["tenant"],
    }
    assert alert["annotations"]["value"] == f"{opened['value']} against limit {opened['threshold']}"
    assert alert["annotations"]["investigate"].startswith("firebreak investigate --rules rules/ --since ")
    assert alert["annotations"]["investigate"].endswith(f"--incident {opened['incident_id']}")
    assert alert["annotations"]["description"] == opened["why"]
    assert alert["startsAt"] == opened["onset"]
    assert parse_ts(alert["endsAt"]) / 1000 == pytest.approx(now + 240, abs=1)  # open: 4 resends ahead
    resolved = next(
        r for r in records if r["type"] == "incident.resolved" and r["incident_id"] == opened["incident_id"]
    )
    [ended] = alerts(resolved, "x", 60, now=now)
    assert ended["endsAt"] == resolved["ts"] and ended["labels"]["incident_id"] == opened["incident_id"]


def test_escalation_ends_the_alert_at_the_old_severity(records):
    opened = next(r for r in records if r["type"] == "incident.opened")
    escalated = {
        **opened,
        "type": "incident.escalated",
        "severity": "sev1",
        "previous_severity": opened["severity"],
        "ts": opened["ts"],
    }
    old, new = alerts(escalated, "x", 60, now=time.time())
    assert old["labels"]["firebreak_severity"] == opened["severity"] and old["endsAt"] == escalated["ts"]
    assert new["labels"]["firebreak_severity"] == "sev1" and new["labels"]["severity"] == "critical"
    assert parse_ts(new["endsAt"]) > time.time() * 1000


def test_group_dimensions_become_label_names():
    assert label_name("prompt.template") == "prompt_template"
    assert label_name("9x") == "_9x"
    assert label_name("severity") == "group_severity"  # a dimension cannot overwrite the alert's own labels
    record = {"rule": "r", "severity": "sev3", "incident_id": "i", "group": {"severity": "high", "model": "m"}}
    assert labels(record)["severity"] == "warning" and labels(record)["group_severity"] == "high"


def test_config_checks_alertmanager_targets(tmp_path):
    path = tmp_path / "n.toml"
    path.write_text('[targets.am]\nkind = "alertmanager"\nurl = "http://am:9093/"\nresend_s = 30\n')
    target = load_notify_config(str(path), env={}).targets["am"]
    assert target.url.value == "http://am:9093/api/v2/alerts" and target.resend_s == 30
    path.write_text('[targets.am]\nkind = "alertmanager"\nurl = "http://am:9093"\nresend_s = 0\n')
    with pytest.raises(NotifyConfigError, match="resend_s"):
        load_notify_config(str(path), env={})
    path.write_text('[targets.s]\nkind = "slack"\nurl = "http://hook"\nresend_s = 5\n')
    with pytest.raises(NotifyConfigError, match="resend_s is for alertmanager"):
        load_notify_config(str(path), env={})


def test_alerts_appear_group_silence_and_resolve_in_a_real_alertmanager(tmp_path, alertmanager, records):
    config = _config(tmp_path, alertmanager)
    incident_ids = {r["incident_id"] for r in records if r["type"] == "incident.opened"}
    assert len(incident_ids) >= 2
    still_open = [r for r in records if r["type"] != "incident.resolved"]
    stats = asyncio.run(notify_records(config, still_open))
    firing = ("incident.opened", "incident.reopened", "incident.escalated")  # reopened: flapping, docs/response.md
    assert stats.failed == 0 and stats.delivered["am"] == sum(1 for r in still_open if r["type"] in firing)

    # they appear, firing, with their labels and annotations
    active = _until(
        lambda: len(_ours(alertmanager, incident_ids)) == len(incident_ids) and _ours(alertmanager, incident_ids)
    )
    assert active, _get(f"{alertmanager}/api/v2/alerts")
    by_id = {a["labels"]["incident_id"]: a for a in active}
    assert set(by_id) == incident_ids
    for alert in active:
        assert alert["status"]["state"] == "active"
        assert alert["labels"]["alertname"] in ("spike", "leak")
        assert "investigate" in alert["annotations"] and "against limit" in alert["annotations"]["value"]
        assert datetime.fromisoformat(alert["endsAt"]) > datetime.now(UTC)

    # grouped by the route's group_by labels: one group per (alertname, category)
    def groups():
        out = {}
        for group in _get(f"{alertmanager}/api/v2/alerts/groups"):
            ours = [a for a in group["alerts"] if a["labels"].get("incident_id") in incident_ids]
            if ours:
                out[(group["labels"]["alertname"], group["labels"]["category"])] = {
                    a["labels"]["incident_id"] for a in ours
                }
        return out

    expected = {}
    for alert in active:
        expected.setdefault((alert["labels"]["alertname"], alert["labels"]["category"]), set()).add(
            alert["labels"]["incident_id"]
        )
    assert _until(lambda: groups() == expected), (groups(), expected)

    # an Alertmanager silence on alertname="spike" silences the spike alerts, not the others
    now = datetime.now(UTC)
    silence = _post(
        f"{alertmanager}/api/v2/silences",
        {
            "matchers": [{"name": "alertname", "value": "spike", "isRegex": False, "isEqual": True}],
            "startsAt": now.isoformat(),
            "endsAt": (now + timedelta(hours=1)).isoformat(),
            "createdBy": "test",
            "comment": "known: a model rollout",
        },
    )
    silence_id = silence["silenceID"]

    def silenced():
        alerts_now = _ours(alertmanager, incident_ids)
        spikes = [a for a in alerts_now if a["labels"]["alertname"] == "spike"]
        others = [a for a in alerts_now if a["labels"]["alertname"] != "spike"]
        return (
            spikes
            and others
            and all(a["status"]["state"] == "suppressed" and silence_id in a["status"]["silencedBy"] for a in spikes)
            and all(a["status"]["state"] == "active" for a in others)
        )

    assert _until(silenced), _ours(alertmanager, incident_ids)
    unsilenced = {a["labels"]["alertname"] for a in _ours(alertmanager, incident_ids, "?silenced=false")}
    assert unsilenced == {"leak"}

    # the resolution ends them: no longer among the alerts; the incidents still open stay
    resolved = [r for r in records if r["type"] == "incident.resolved"]
    ended = {r["incident_id"] for r in resolved}
    assert ended and ended <= incident_ids
    stats = asyncio.run(notify_records(config, resolved))
    assert stats.failed == 0 and stats.delivered["am"] == len(resolved)
    assert _until(lambda: not _ours(alertmanager, ended)), _ours(alertmanager, ended)
    assert {a["labels"]["incident_id"] for a in _ours(alertmanager, incident_ids)} == incident_ids - ended


def test_resends_keep_an_open_alert_firing_and_it_lapses_without_them(tmp_path, alertmanager, records):
    opened = [r for r in records if r["type"] == "incident.opened"][:2]
    kept, dropped = (
        {**r, "incident_id": r["incident_id"] + suffix} for r, suffix in zip(opened, ("-kept", "-gone"), strict=True)
    )
    config = _config(tmp_path, alertmanager, "resend_s = 0.5\n")  # an open alert ends 2 s ahead unless re-sent

    async def main():
        resends = AlertResends()
        async with Deliverer(config) as deliverer:
            for record in (kept, dropped):
                assert await deliverer.handle(record)
                resends.track(record, time.time(), 0.5)
            resends.open.pop(dropped["incident_id"])  # as if its notify had stopped: never re-sent
            first = _ours(alertmanager, {kept["incident_id"]})[0]["endsAt"]
            stop = time.monotonic() + 3.5
            while time.monotonic() < stop:
                await asyncio.sleep(0.25)
                await resend_open_alerts(deliverer, resends, time.time())
            return first, deliverer.stats

    first, stats = asyncio.run(main())
    assert stats.delivered["am"] >= 2 + 4  # two alerts, then re-sends of the one kept
    now_ids = {a["labels"]["incident_id"] for a in _ours(alertmanager, {kept["incident_id"], dropped["incident_id"]})}
    assert now_ids == {kept["incident_id"]}  # the one not re-sent lapsed at its endsAt
    last = _ours(alertmanager, {kept["incident_id"]})[0]["endsAt"]
    assert datetime.fromisoformat(last) > datetime.fromisoformat(first)
