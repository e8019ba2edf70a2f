"""The chart's alerts, checked and unit-tested by the real promtool; the chart's dashboard."""

from __future__ import annotations

import json
import shutil
from collections import defaultdict
from pathlib import Path
from typing import Any

import pytest
import yaml

from alerts import prom_support as ps
from chart.helm_support import CHART, KUBE_VERSION, by_kind, find_helm, one, run_helm, template

UNIT_TESTS = Path(__file__).parent / "rules_test.yaml"
ALERTS = {
    "CobrowseTLSCAExpiringSoon",
    "CobrowseTLSCAExpired",
    "CobrowseTLSNotReady",
    "CobrowseTLSRolloutStalled",
    "CobrowseTLSWindowsTrustNotSynced",
    "CobrowseTLSOperatorDown",
    "CobrowseTLSOperatorNotReconciling",
}
# Every threshold and duration a value, each set to something other than its default.
CUSTOM: dict[str, Any] = {
    "prometheusRule": {
        "labels": {"release": "prom"},
        "alertLabels": {"team": "genesys"},
        "job": "cobrowse-tls",
        "runbookUrl": "https://wiki.example.com/cobrowse/runbook.md",
        "interval": "30s",
        "caExpiryWarningDays": "14.5",
        "caExpiryCriticalDays": 3,
        "for": {
            "caExpiring": "2h",
            "caExpired": "1m",
            "notReady": "45m",
            "rolloutStalled": "10m",
            "windowsTrustNotSynced": "1h",
            "operatorDown": "3m",
            "notReconciling": "20m",
        },
        "notReconcilingWindow": "30m",
    }
}


@pytest.fixture(scope="module")
def helm() -> str:
    return find_helm()


def test_off_by_default(helm: str) -> None:
    objs = template(helm)
    assert not by_kind(objs, "PrometheusRule")
    assert not by_kind(objs, "ConfigMap")


@pytest.mark.parametrize("values", [{}, CUSTOM], ids=["default", "custom"])
def test_promtool_check_rules(helm: str, tmp_path: Path, values: dict[str, Any]) -> None:
    rule = ps.prometheus_rule(helm, tmp_path, values)
    path = ps.write_rules(rule, tmp_path / "rules.yaml")
    result = ps.promtool("check", "rules", "--lint=all", "--lint-fatal", str(path))
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(ps.alerts_of(rule))} rules found" in result.stdout
    assert {a["alert"] for a in ps.alerts_of(rule)} == ALERTS


def test_promtool_unit_tests_of_every_alert(helm: str, tmp_path: Path) -> None:
    rule = ps.prometheus_rule(helm, tmp_path)
    ps.write_rules(rule, tmp_path / "rules.yaml")
    shutil.copy(UNIT_TESTS, tmp_path / "rules_test.yaml")
    result = ps.promtool("test", "rules", "rules_test.yaml", cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_unit_tests_cover_every_alert_firing_and_not_firing(helm: str, tmp_path: Path) -> None:
    rule = ps.prometheus_rule(helm, tmp_path)
    firing: dict[str, set[str]] = defaultdict(set)  # alert -> severities seen firing
    quiet: set[str] = set()
    for case in yaml.safe_load(UNIT_TESTS.read_text())["tests"]:
        for check in case["alert_rule_test"]:
            if check["exp_alerts"]:
                firing[check["alertname"]] |= {
                    a["exp_labels"]["severity"] for a in check["exp_alerts"]
                }
            else:
                quiet.add(check["alertname"])
    expected: dict[str, set[str]] = defaultdict(set)
    for alert in ps.alerts_of(rule):
        expected[alert["alert"]].add(alert["labels"]["severity"])
    assert dict(firing) == dict(expected)
    assert quiet == set(expected)


def test_every_value_reaches_the_rules(helm: str, tmp_path: Path) -> None:
    rule = ps.prometheus_rule(helm, tmp_path, CUSTOM)
    assert rule["metadata"]["labels"]["release"] == "prom"
    (group,) = rule["spec"]["groups"]
    assert group["interval"] == "30s"
    alerts = {(a["alert"], a["labels"]["severity"]): a for a in ps.alerts_of(rule)}
    fors = {k: a["for"] for k, a in alerts.items()}
    assert fors == {
        ("CobrowseTLSCAExpiringSoon", "warning"): "2h",
        ("CobrowseTLSCAExpiringSoon", "critical"): "2h",
        ("CobrowseTLSCAExpired", "critical"): "1m",
        ("CobrowseTLSNotReady", "warning"): "45m",
        ("CobrowseTLSRolloutStalled", "warning"): "10m",
        ("CobrowseTLSWindowsTrustNotSynced", "warning"): "1h",
        ("CobrowseTLSOperatorDown", "critical"): "3m",
        ("CobrowseTLSOperatorNotReconciling", "critical"): "20m",
    }
    assert "< 14.5 * 86400" in alerts[("CobrowseTLSCAExpiringSoon", "warning")]["expr"]
    assert "< 3 * 86400" in alerts[("CobrowseTLSCAExpiringSoon", "critical")]["expr"]
    assert "[30m]" in alerts[("CobrowseTLSOperatorNotReconciling", "critical")]["expr"]
    for alert in alerts.values():
        assert alert["labels"]["team"] == "genesys"
        assert 'job="cobrowse-tls"' in alert["expr"]
        assert alert["annotations"]["runbook_url"].startswith(
            "https://wiki.example.com/cobrowse/runbook.md#"
        )


def test_every_alert_says_what_and_where_and_links_its_runbook_section(
    helm: str, tmp_path: Path
) -> None:
    anchors = ps.runbook_anchors()
    for alert in ps.alerts_of(ps.prometheus_rule(helm, tmp_path)):
        notes = alert["annotations"]
        assert set(notes) == {"summary", "description", "runbook_url"}, alert["alert"]
        if alert["alert"].startswith("CobrowseTLSOperator"):
            # Operator-wide: names the operator's namespace and job.
            assert f"namespace {ps.RELEASE_NAMESPACE}" in notes["description"]
            assert f"job {ps.JOB}" in notes["description"]
        else:
            assert (
                "CobrowseTLS {{ $labels.name }} in namespace {{ $labels.namespace }}"
                in (notes["description"])
            ), alert["alert"]
            assert "by (namespace, name)" in alert["expr"]
        base, _, anchor = notes["runbook_url"].partition("#")
        assert base.endswith("/docs/runbook.md")
        assert anchor == alert["alert"].lower()
        assert anchor in anchors, f"docs/runbook.md has no section {alert['alert']}"


def test_alerts_need_metrics(helm: str) -> None:
    result = run_helm(
        helm,
        "template",
        "x",
        str(CHART),
        "--kube-version",
        KUBE_VERSION,
        "--set",
        "prometheusRule.enabled=true",
        "--set",
        "metrics.enabled=false",
        check=False,
    )
    assert result.returncode != 0
    assert "prometheusRule.enabled needs metrics.enabled" in result.stderr


BAD_VALUES = [
    (["--set", "prometheusRule.for.notReady=soon"], "notReady"),
    (["--set", "prometheusRule.caExpiryWarningDays=-1"], "caExpiryWarningDays"),
    (["--set", "prometheusRule.caExpiryCriticalDays=0"], "caExpiryCriticalDays"),
    (["--set", "prometheusRule.runbookUrl=docs/runbook.md"], "runbookUrl"),
    (["--set", "prometheusRule.notReconcilingWindow="], "notReconcilingWindow"),
    (["--set", "prometheusRule.alertLabels.team[0]=x"], "team"),
    (["--set", "grafanaDashboard.namespace=Monitoring"], "namespace"),
    (["--set", "grafanaDashboard.enabled=yes"], "enabled"),
]


@pytest.mark.parametrize(("args", "field"), BAD_VALUES, ids=lambda a: str(a))
def test_schema_rejects_bad_values(helm: str, args: list[str], field: str) -> None:
    result = run_helm(
        helm, "template", "x", str(CHART), "--kube-version", KUBE_VERSION, *args, check=False
    )
    assert result.returncode != 0, f"{args} was accepted"
    assert "values don't meet the specifications of the schema" in result.stderr
    assert field in result.stderr


# -- the dashboard --------------------------------------------------------------------------------


def test_dashboard_config_map(helm: str, tmp_path: Path) -> None:
    objs = template(
        helm,
        values={
            "grafanaDashboard": {
                "enabled": True,
                "namespace": "monitoring",
                "annotations": {"grafana_folder": "Genesys"},
            }
        },
        tmp=tmp_path,
    )
    cm = one(objs, "ConfigMap")
    assert cm["metadata"]["namespace"] == "monitoring"
    assert cm["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert cm["metadata"]["annotations"] == {"grafana_folder": "Genesys"}
    assert list(cm["data"]) == ["cobrowse-tls-operator.json"]
    assert json.loads(cm["data"]["cobrowse-tls-operator.json"]) == ps.dashboard()


def test_dashboard_shows_what_the_issue_asks_for() -> None:
    dash = ps.dashboard()
    assert dash["uid"] == "cobrowse-tls-operator"
    exprs = " ".join(t["expr"] for _, t in ps.dashboard_targets(dash))
    for metric in (
        "cobrowse_tls_condition",
        "cobrowse_tls_certificate_expiry_timestamp_seconds",
        "cobrowse_tls_reconcile_duration_seconds_bucket",
        "cobrowse_tls_workload_restarts_total",
        "cobrowse_tls_api_writes_total",
        "cobrowse_tls_work_queue_depth",
    ):
        assert metric in exprs
    (expiries,) = [p for p in dash["panels"] if p["title"].startswith("Earliest CA expiry")]
    assert expiries["type"] == "table"
    sort = [t for t in expiries["transformations"] if t["id"] == "sortBy"]
    assert sort == [{"id": "sortBy", "options": {"sort": [{"field": "time left", "desc": False}]}}]
    for panel in dash["panels"]:
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
        assert panel["targets"], panel["title"]
    ids = [p["id"] for p in dash["panels"]]
    assert len(ids) == len(set(ids))


def test_service_monitor_keeps_the_cr_namespace_label(helm: str) -> None:
    """Without honorLabels, the target's namespace would rename ours to exported_namespace and
    every per-CR alert would name the operator's namespace instead of the CR's."""
    monitor = one(template(helm, "--set", "metrics.serviceMonitor.enabled=true"), "ServiceMonitor")
    (endpoint,) = monitor["spec"]["endpoints"]
    assert endpoint["honorLabels"] is True
    assert monitor["spec"]["selector"]["matchLabels"]["app.kubernetes.io/instance"] == "cbtls"
