"""The worker watched like any service: the shipped Prometheus alerting rules are checked and
unit-tested with the REAL promtool (built from the Prometheus Go module by scripts/go-tools), and
every query of the rules and the Grafana dashboard names a metric the worker really exports."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from firebreak.adapters.live.metrics import Metrics, ShardView, WorkerView
from go_tools import go_tool
from prometheus_client.parser import text_string_to_metric_families

ROOT = Path(__file__).resolve().parents[3]
RULES = ROOT / "deploy" / "prometheus" / "firebreak-worker.rules.yml"
RULES_TEST = ROOT / "deploy" / "prometheus" / "firebreak-worker.rules.test.yml"
DASHBOARD = ROOT / "deploy" / "grafana" / "firebreak-worker.dashboard.json"
PROMETHEUS_OWN = {"up"}  # Prometheus's own series for every scrape target


@pytest.fixture(scope="module")
def exported() -> set[str]:
    """Every sample name the worker's /metrics writes, from a real render with a shard and a lag."""
    metrics = Metrics()
    metrics.events_in = 10
    metrics.records["incident.opened"] += 1
    metrics.observe_evaluation(0.001)
    shard = ShardView(0, {"late": 1}, {"sev2": 1}, 1_000, {0: 2_000}, frozenset({1}), 2)
    view = WorkerView(dead_lettered=1, lags=[("ai.inference.events", 0, 5)], shards=[shard])
    names = set()
    for family in text_string_to_metric_families(metrics.render(view)):
        names.update(sample.name for sample in family.samples)
    return names


@pytest.fixture(scope="module")
def promtool() -> str:
    return go_tool("promtool")


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression reads: firebreak_* tokens and Prometheus's own series,
    outside label values and durations."""
    bare = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)
    tokens = set(re.findall(r"\b[a-zA-Z_:][a-zA-Z0-9_:]*\b", bare))
    return {t for t in tokens if t.startswith("firebreak_") or t in PROMETHEUS_OWN}


def test_promtool_checks_the_rules(promtool):
    done = subprocess.run([promtool, "check", "rules", str(RULES)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS: 10 rules found" in done.stdout + done.stderr


def test_promtool_unit_tests_of_the_rules_pass(promtool):
    done = subprocess.run(
        [promtool, "test", "rules", RULES_TEST.name], capture_output=True, text=True, timeout=120, cwd=RULES_TEST.parent
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS" in done.stdout + done.stderr


def test_promtool_unit_tests_fail_on_a_broken_rule(promtool, tmp_path):
    """The promtool tests can fail: a stall alert that waits too long misses its expected firing."""
    shutil.copy(RULES_TEST, tmp_path / RULES_TEST.name)
    (tmp_path / RULES.name).write_text(RULES.read_text().replace("for: 5m", "for: 30m", 1))
    done = subprocess.run(
        [promtool, "test", "rules", RULES_TEST.name], capture_output=True, text=True, timeout=120, cwd=tmp_path
    )
    assert done.returncode != 0
    assert "FirebreakWatermarkStalled" in done.stdout + done.stderr


def test_every_alert_reads_metrics_the_worker_exports(exported):
    groups = yaml.safe_load(RULES.read_text())["groups"]
    alerts = [rule for group in groups for rule in group["rules"]]
    assert {a["alert"] for a in alerts} >= {
        "FirebreakWorkerDown",
        "FirebreakWatermarkStalled",
        "FirebreakConsumerLagGrowing",
        "FirebreakDeadLettersRising",
        "FirebreakShardFenced",
        "FirebreakWorkerRestarting",
        "FirebreakCheckpointOverdue",
        "FirebreakCheckpointRetrying",
    }
    for alert in alerts:
        names = metric_names(alert["expr"])
        assert names, alert["alert"]
        assert names <= exported | PROMETHEUS_OWN, (alert["alert"], names - exported)
        assert alert["labels"]["severity"] in ("critical", "warning")
        assert alert["annotations"]["summary"] and alert["annotations"]["description"]


def test_every_dashboard_panel_queries_metrics_the_worker_exports(exported):
    dashboard = json.loads(DASHBOARD.read_text())
    panels = [p for p in dashboard["panels"] if p["type"] != "row"]
    assert len(panels) >= 10
    assert len({p["id"] for p in dashboard["panels"]}) == len(dashboard["panels"])
    read = set()
    for panel in panels:
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            names = metric_names(target["expr"])
            assert names, (panel["title"], target["expr"])
            assert names <= exported | PROMETHEUS_OWN, (panel["title"], names - exported)
            read |= names
    # the dashboard shows the metrics that say whether the worker keeps up and decides
    assert {
        "firebreak_events_total",
        "firebreak_consumer_lag",
        "firebreak_watermark_seconds",
        "firebreak_dead_lettered_total",
        "firebreak_open_incidents",
        "firebreak_shards_fenced_total",
        "firebreak_checkpoint_pending_seconds",
        "firebreak_checkpoint_failures_total",
    } <= read


def test_metric_names_reads_names_not_label_values():
    assert metric_names('rate(firebreak_events_total{job="firebreak_x"}[5m]) / up') == {"firebreak_events_total", "up"}
    assert metric_names("sum by (shard) (firebreak_nope)") == {"firebreak_nope"}
