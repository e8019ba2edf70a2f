"""The chart's alerts and dashboard, end to end: a real Prometheus scrapes the real operator.

The operator runs against the local control plane; Prometheus (hack/build-prometheus.sh) runs
on 127.0.0.1 with a tmp dir of its own, loads the rules the chart renders (short `for:` through
the chart's values, 1 s scrape and evaluation intervals), and is stopped afterwards.
"""

from __future__ import annotations

import os
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

import pki as pkim
import tls_servers
from alerts import prom_support as ps
from chart.helm_support import find_helm
from e2e.cluster_backends import E2ECluster
from e2e.operator_support import Api, cobrowse_tls, condition, operator, secret, wait_for
from e2e.test_restarts import Workloads

# Every `for:` short, the thresholds at their defaults (30 and 7 days).
FAST: dict[str, Any] = {
    "prometheusRule": {
        "for": {
            "caExpiring": "2s",
            "caExpired": "0s",
            "notReady": "3s",
            "rolloutStalled": "2s",
            "windowsTrustNotSynced": "2s",
            "operatorDown": "5s",
            "notReconciling": "5s",
        },
        "notReconcilingWindow": "30s",
    }
}
# Grafana's variables, as Grafana would substitute them for these tests.
GRAFANA_VARS = {"$__rate_interval": "15s", "$__range": "1m", "$__interval": "1s"}


def ca_with_days_left(days: float) -> pkim.CertKey:
    now = datetime.now(UTC)
    return pkim.make_cert(
        f"Genesys CA {days}d",
        not_before=now - timedelta(days=1),
        not_after=now + timedelta(days=days),
    )


def pem_spec(source: str, **extra: Any) -> dict[str, Any]:
    return {
        "provider": "PEM",
        "application": {"type": "Cluster", "name": "CB_Cluster"},
        "trustedCA": {"sources": [{"secret": {"name": source, "key": "ca.crt"}}]},
        **extra,
    }


def ours(prom: ps.Prometheus, namespace: str) -> dict[tuple[str, str, str], dict[str, Any]]:
    """Alerts about CRs of ``namespace``, by (alertname, severity, CR name), any state."""
    return {
        (a["labels"]["alertname"], a["labels"]["severity"], a["labels"]["name"]): a
        for a in prom.alerts()
        if a["labels"].get("namespace") == namespace
    }


def firing(prom: ps.Prometheus, namespace: str) -> set[tuple[str, str, str]]:
    return {k for k, a in ours(prom, namespace).items() if a["state"] == "firing"}


def grafana_expr(expr: str, namespace: str) -> str:
    out = expr.replace("$job", ps.JOB).replace("$namespace", namespace)
    for var, value in GRAFANA_VARS.items():
        out = out.replace(var, value)
    assert "$" not in out, f"a Grafana variable left in {out}"
    return out


def check_dashboard(prom: ps.Prometheus, namespace: str) -> None:
    """Every query of the dashboard parses, runs and returns data; so do its variables."""
    dash = ps.dashboard()
    empty = []
    for title, target in ps.dashboard_targets(dash):
        expr = grafana_expr(target["expr"], namespace)
        if target.get("instant"):
            data = prom.api("query", query=expr)
        else:
            end = datetime.now(UTC).timestamp()
            data = prom.api("query_range", query=expr, start=str(end - 60), end=str(end), step="5")
        if not data["result"]:
            empty.append(f"{title}: {expr}")
    assert not empty, "dashboard queries without data:\n" + "\n".join(empty)
    for var in dash["templating"]["list"]:
        if var["type"] != "query":
            continue
        m = re.fullmatch(r"label_values\((.+), *(\w+)\)", var["query"]["query"])
        assert m, var["query"]
        values = prom.api(
            f"label/{m.group(2)}/values", **{"match[]": grafana_expr(m.group(1), namespace)}
        )
        wanted = {"job": ps.JOB, "namespace": namespace}[var["name"]]
        assert wanted in values, (var["name"], values)


def test_alerts_fire_and_clear_and_the_dashboard_has_data(
    cluster: E2ECluster,
    api: Api,
    namespace: str,
    pki: pkim.PKI,
    tmp_path: Path,
) -> None:
    if os.environ.get("E2E_OPERATOR") == "external":
        pytest.skip("runs its own operator process, with metrics on 127.0.0.1")
    helm = find_helm()
    rules = ps.write_rules(ps.prometheus_rule(helm, tmp_path, FAST), tmp_path / "rules.yaml")
    metrics_port, prom_port = tls_servers.free_port(), tls_servers.free_port()
    config = {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "rule_files": [str(rules)],
        "scrape_configs": [
            {
                # What the chart's ServiceMonitor gives: the Service's name, honorLabels.
                "job_name": ps.JOB,
                "honor_labels": True,
                "static_configs": [{"targets": [f"127.0.0.1:{metrics_port}"]}],
            }
        ],
    }
    workloads = Workloads(cluster, namespace)
    workloads.create("Deployment", "cobrowse-node", replicas=1)
    # One CR whose CA expires in 3 days (inside both windows), one whose source is missing.
    api.apply(secret(namespace, "expiring-ca", {"ca.crt": pkim.pem(ca_with_days_left(3))}))
    api.apply(
        cobrowse_tls(
            namespace,
            "expiring",
            pem_spec("expiring-ca", workloads=[{"kind": "Deployment", "name": "cobrowse-node"}]),
        )
    )
    api.apply(cobrowse_tls(namespace, "missing", pem_spec("not-there")))
    op_args = (
        "--namespace", namespace, "--metrics-port", str(metrics_port),
        "--metrics-address", "127.0.0.1", "--resync", "2", "--restart-window", "0",
    )  # fmt: skip
    with (
        operator(cluster.kubeconfig, tmp_path / "operator.log", *op_args),
        ps.running(tmp_path / "prometheus", config, prom_port) as prom,
    ):
        expected = {
            ("CobrowseTLSCAExpiringSoon", "warning", "expiring"),
            ("CobrowseTLSCAExpiringSoon", "critical", "expiring"),
            # The operator's own expiry window (30 days) makes it not Ready (ExpiringSoon).
            ("CobrowseTLSNotReady", "warning", "expiring"),
            ("CobrowseTLSNotReady", "warning", "missing"),
        }
        wait_for(
            "the four alerts firing",
            lambda: firing(prom, namespace) == expected or None,
            timeout=90,
            interval=0.5,
        )
        alerts = ours(prom, namespace)
        assert set(alerts) == expected  # nothing else, not even pending
        missing = alerts[("CobrowseTLSNotReady", "warning", "missing")]["annotations"]
        assert missing["description"].startswith(
            f"CobrowseTLS missing in namespace {namespace} has not been Ready for 3s"
            " (Ready False, reason SourceNotFound)."
        )
        assert missing["runbook_url"].endswith("/docs/runbook.md#cobrowsetlsnotready")
        expiring = alerts[("CobrowseTLSCAExpiringSoon", "critical", "expiring")]["annotations"]
        assert (
            f"CobrowseTLS expiring in namespace {namespace} expires in 2d 23h"
            in (expiring["description"])
        )
        # The operator is up and reconciling: its own alerts stay quiet.
        assert not [a for a in prom.alerts() if "namespace" not in a["labels"]]
        # Restarts happened (the Deployment restarted for the material): the panel has data.
        wait_for(
            "a restart counted",
            lambda: prom.api(
                "query",
                query=f'cobrowse_tls_workload_restarts_total{{namespace="{namespace}"}} > 0',
            )["result"],
        )
        check_dashboard(prom, namespace)

        # Fixed: a CA valid for a year, and the missing source created.
        api.apply(secret(namespace, "expiring-ca", {"ca.crt": pkim.pem(pki.root)}))
        api.apply(secret(namespace, "not-there", {"ca.crt": pkim.pem(pki.root)}))
        wait_for(
            "both CRs Ready",
            lambda: all(
                (condition(api.get("CobrowseTLS", namespace, n), "Ready") or {}).get("status")
                == "True"
                for n in ("expiring", "missing")
            ),
            timeout=60,
        )
        wait_for(
            "every alert cleared",
            lambda: not ours(prom, namespace),
            timeout=60,
            interval=0.5,
        )
        assert not prom.alerts()
        # Deleting a CR removes its series from the operator, hence from Prometheus.
        api.delete("CobrowseTLS", namespace, "missing")
        wait_for(
            "the deleted CR's series gone",
            lambda: (
                not prom.api(
                    "query",
                    query=f'cobrowse_tls_condition{{namespace="{namespace}", name="missing"}}',
                )["result"]
            ),
            timeout=30,
        )
