"""Prometheus metrics of the operator."""

from __future__ import annotations

import prometheus_client

REGISTRY = prometheus_client.CollectorRegistry()

RECONCILE_SECONDS = prometheus_client.Histogram(
    "cobrowse_tls_reconcile_duration_seconds",
    "Time of one reconcile of one CobrowseTLS.",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
    registry=REGISTRY,
)
RECONCILES = prometheus_client.Counter(
    "cobrowse_tls_reconciles",
    "Reconciles by result: ok, invalid (bad input reported in status) or error (retried).",
    ["result"],
    registry=REGISTRY,
)
CERTIFICATE_EXPIRY = prometheus_client.Gauge(
    "cobrowse_tls_certificate_expiry_timestamp_seconds",
    "Earliest notAfter among the CA certificates in a CobrowseTLS trust store (Unix time).",
    ["namespace", "name"],
    registry=REGISTRY,
)
API_WRITES = prometheus_client.Counter(
    "cobrowse_tls_api_writes",
    "Write requests the operator made to the API server (apply, status, events).",
    registry=REGISTRY,
)
QUEUE_DEPTH = prometheus_client.Gauge(
    "cobrowse_tls_work_queue_depth", "CobrowseTLS objects waiting to reconcile.", registry=REGISTRY
)


def serve(port: int, address: str = "0.0.0.0") -> None:  # noqa: S104 - scraped from the pod IP
    prometheus_client.start_http_server(port, addr=address, registry=REGISTRY)
