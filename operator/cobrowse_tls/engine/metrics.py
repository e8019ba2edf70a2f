"""Prometheus metrics of the operator.

Operator-wide: reconcile latency and results, API writes, the work queue, the build.

Per CobrowseTLS: derived in one place, `record`, from the status a reconcile computed (the
same status `kubectl get` shows), and dropped by `forget` when the CR goes, so the series of a
deleted CR disappear at the next scrape. Their only labels are the CR's namespace and name
(plus the condition's type, status and reason): never a certificate, a workload, a pod or a
node, so the number of series grows with the number of CRs and nothing else. docs/monitoring.md
lists every metric and counts the series.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
from collections.abc import Iterable, Mapping
from typing import Any

import prometheus_client
from prometheus_client import core as prom_core
from prometheus_client import registry as prom_registry

import cobrowse_tls
from cobrowse_tls.api import stamps
from cobrowse_tls.core import restart_plan

log = logging.getLogger("cobrowse_tls.engine.metrics")

REGISTRY = prometheus_client.CollectorRegistry()

RECONCILE_SECONDS = prometheus_client.Histogram(
    "cobrowse_tls_reconcile_duration_seconds",
    "Time of one reconcile of one CobrowseTLS.",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
    registry=REGISTRY,
)
RESULTS = ("ok", "invalid", "error")
RECONCILES = prometheus_client.Counter(
    "cobrowse_tls_reconciles",
    "Reconciles by result: ok, invalid (bad input reported in status) or error (retried).",
    ["result"],
    registry=REGISTRY,
)
for _result in RESULTS:
    # Present at 0 from the start: "no successful reconcile lately" needs a series to look at.
    RECONCILES.labels(_result)
API_WRITES = prometheus_client.Counter(
    "cobrowse_tls_api_writes",
    "Write requests the operator made to the API server (apply, status, events).",
    registry=REGISTRY,
)
QUEUE_DEPTH = prometheus_client.Gauge(
    "cobrowse_tls_work_queue_depth", "CobrowseTLS objects waiting to reconcile.", registry=REGISTRY
)
BUILD_INFO = prometheus_client.Info(
    "cobrowse_tls_build", "The operator's release.", registry=REGISTRY
)
BUILD_INFO.info({"version": cobrowse_tls.__version__})

CONDITION_STATUSES = ("True", "False", "Unknown")


@dataclasses.dataclass(frozen=True)
class Resource:
    """What the per-CR metrics show of one CobrowseTLS, read from its status."""

    conditions: tuple[tuple[str, str, str], ...]  # (type, status, reason), status order
    earliest_expiry: float | None  # Unix time; None: no CA in the store
    rollouts_stalled: int | None  # None: no workloads to restart
    windows: tuple[int, int] | None  # (synced, expected) nodes; None: not MSCAPI
    restarts: int = 0  # performed since the operator started (a counter)


def resource_from_status(status: Mapping[str, Any], restarts: int = 0) -> Resource:
    """The metrics' view of a CobrowseTLS status. Pure."""
    conds = tuple(
        (str(c.get("type")), str(c.get("status")), str(c.get("reason") or ""))
        for c in status.get("conditions") or ()
        if c.get("type")
    )
    expires = (status.get("trustStore") or {}).get("expires")
    restart = status.get("restart")
    stalled = None
    if restart is not None:
        stalled = sum(
            1 for w in restart.get("workloads") or () if w.get("state") == restart_plan.STALLED
        )
    windows = status.get("windows")
    return Resource(
        conditions=conds,
        earliest_expiry=stamps.parse_rfc3339(expires).timestamp() if expires else None,
        rollouts_stalled=stalled,
        windows=(
            (int(windows.get("ready", 0)), int(windows.get("desired", 0)))
            if windows is not None
            else None
        ),
        restarts=restarts,
    )


def restarts_started(before: Mapping[str, Any] | None, after: Mapping[str, Any]) -> int:
    """Workloads the reconcile that turned status ``before`` into ``after`` restarted. Pure.

    A restart stamps the workload's ``startedAt`` in ``status.restart`` with the time of that
    reconcile; a workload keeps its stamp until the next restart.
    """
    old = {
        (w.get("kind"), w.get("name")): w.get("startedAt")
        for w in ((before or {}).get("restart") or {}).get("workloads") or ()
    }
    return sum(
        1
        for w in (after.get("restart") or {}).get("workloads") or ()
        if w.get("startedAt") and w.get("startedAt") != old.get((w.get("kind"), w.get("name")))
    )


class _PerResource(prom_registry.Collector):
    """The per-CobrowseTLS series, built at scrape time from the last recorded statuses."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._resources: dict[tuple[str, str], Resource] = {}
        self._failing: set[tuple[str, str]] = set()

    def record(
        self, key: tuple[str, str], before: Mapping[str, Any] | None, after: Mapping[str, Any]
    ) -> None:
        with self._lock:
            previous = self._resources.get(key)
            restarts = (previous.restarts if previous else 0) + restarts_started(before, after)
            self._resources[key] = resource_from_status(after, restarts)
            self._failing.discard(key)

    def failed(self, key: tuple[str, str]) -> None:
        with self._lock:
            self._failing.add(key)

    def forget(self, key: tuple[str, str]) -> None:
        with self._lock:
            self._resources.pop(key, None)
            self._failing.discard(key)

    def snapshot(self) -> tuple[dict[tuple[str, str], Resource], int]:
        with self._lock:
            return dict(self._resources), len(self._failing)

    def collect(self) -> Iterable[prom_core.Metric]:
        resources, failing = self.snapshot()
        labels = ["namespace", "name"]
        condition = prom_core.GaugeMetricFamily(
            "cobrowse_tls_condition",
            "Status conditions of each CobrowseTLS: 1 for the condition's current status"
            " (True, False or Unknown) and 0 for the other two; reason is the current reason.",
            labels=[*labels, "type", "status", "reason"],
        )
        expiry = prom_core.GaugeMetricFamily(
            "cobrowse_tls_certificate_expiry_timestamp_seconds",
            "Earliest notAfter among the CA certificates in a CobrowseTLS trust store (Unix time).",
            labels=labels,
        )
        restarts = prom_core.CounterMetricFamily(
            "cobrowse_tls_workload_restarts",
            "Workload restarts (rolling restarts of a targeted Deployment, StatefulSet or"
            " DaemonSet) the operator started for a CobrowseTLS.",
            labels=labels,
        )
        stalled = prom_core.GaugeMetricFamily(
            "cobrowse_tls_rollouts_stalled",
            "Workloads of a CobrowseTLS whose restart did not roll out within the deadline.",
            labels=labels,
        )
        synced = prom_core.GaugeMetricFamily(
            "cobrowse_tls_windows_nodes_synced",
            "Windows nodes whose certificate store holds a CobrowseTLS's current CAs (MSCAPI).",
            labels=labels,
        )
        expected = prom_core.GaugeMetricFamily(
            "cobrowse_tls_windows_nodes_expected",
            "Windows nodes the MSCAPI agent of a CobrowseTLS runs on.",
            labels=labels,
        )
        for (namespace, name), r in sorted(resources.items()):
            cr = [namespace, name]
            for type_, status, reason in r.conditions:
                for value in CONDITION_STATUSES:
                    condition.add_metric([*cr, type_, value, reason], float(value == status))
            if r.earliest_expiry is not None:
                expiry.add_metric(cr, r.earliest_expiry)
            restarts.add_metric(cr, float(r.restarts))
            if r.rollouts_stalled is not None:
                stalled.add_metric(cr, float(r.rollouts_stalled))
            if r.windows is not None:
                synced.add_metric(cr, float(r.windows[0]))
                expected.add_metric(cr, float(r.windows[1]))
        retrying = prom_core.GaugeMetricFamily(
            "cobrowse_tls_work_queue_retry_depth",
            "CobrowseTLS objects whose last reconcile failed, waiting for a retry.",
            value=float(failing),
        )
        return [condition, expiry, restarts, stalled, synced, expected, retrying]


_PER_RESOURCE = _PerResource()
REGISTRY.register(_PER_RESOURCE)


def _split(key: str) -> tuple[str, str]:
    namespace, _, name = key.partition("/")
    return namespace, name


def record(key: str, before: Mapping[str, Any] | None, status: Mapping[str, Any]) -> None:
    """A reconcile of CR ``key`` (namespace/name) turned its status ``before`` into ``status``."""
    try:
        _PER_RESOURCE.record(_split(key), before, status)
    except (ValueError, TypeError, AttributeError) as exc:
        # A status part the operator did not write (edited by hand, kept from an older
        # release): its metrics stay as they were rather than the reconcile loop breaking.
        log.warning("%s: status not understood for metrics (%s)", key, exc)


def reconcile_failed(key: str) -> None:
    """A reconcile of CR ``key`` failed and will be retried."""
    _PER_RESOURCE.failed(_split(key))


def forget(key: str) -> None:
    """CR ``key`` is gone: its series disappear."""
    _PER_RESOURCE.forget(_split(key))


LEADER = prometheus_client.Gauge(
    "cobrowse_tls_leader",
    "1 while this replica holds the leader Lease (or runs without leader election), else 0.",
    registry=REGISTRY,
)


def serve(port: int, address: str = "0.0.0.0") -> None:  # noqa: S104 - scraped from the pod IP
    prometheus_client.start_http_server(port, addr=address, registry=REGISTRY)
