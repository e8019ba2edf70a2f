"""Per-CobrowseTLS metrics: derived from the status, gone with the CR, bounded in number."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import prometheus_client
import pytest
from prometheus_client import parser

from cobrowse_tls.core import decide
from cobrowse_tls.engine import metrics, reconciler
from unit.test_controller import Recorder, cr

Sample = tuple[str, dict[str, str], float]


def samples(namespace: str | None = None) -> list[Sample]:
    """Every sample the operator exposes now (of one CR namespace when given), as scraped."""
    text = prometheus_client.generate_latest(metrics.REGISTRY).decode()
    out = []
    for family in parser.text_string_to_metric_families(text):
        for s in family.samples:
            if namespace is None or s.labels.get("namespace") == namespace:
                out.append((s.name, dict(s.labels), s.value))
    return out


def value(namespace: str | None, metric: str, **labels: str) -> float | None:
    found = [
        v
        for name, got, v in samples(namespace)
        if name == metric and all(got.get(k) == w for k, w in labels.items())
    ]
    assert len(found) <= 1, found
    return found[0] if found else None


@pytest.fixture
def ns() -> Iterator[str]:
    """A namespace of its own: the registry is process-wide."""
    name = f"m-{uuid.uuid4().hex[:8]}"
    yield name
    for key in {f"{name}/{labels['name']}" for _, labels, _ in samples(name)}:
        metrics.forget(key)


def cond(type_: str, status: str, reason: str) -> dict[str, str]:
    return {"type": type_, "status": status, "reason": reason, "message": "m"}


def status(
    *conds: dict[str, str],
    expires: str | None = "2031-05-01T00:00:00Z",
    workloads: list[dict[str, str]] | None = None,
    windows: dict[str, int] | None = None,
    certificates: int = 1,
) -> dict[str, Any]:
    out: dict[str, Any] = {
        "conditions": list(conds) or [cond("Ready", "True", "Ready")],
        "trustStore": {
            "fingerprint": "sha256:x",
            "certificates": [
                {"alias": f"root-{i}", "subject": f"CN={i}", "sha256": str(i), "notAfter": "x"}
                for i in range(certificates)
            ],
        },
    }
    if expires is not None:
        out["trustStore"]["expires"] = expires
    if workloads is not None:
        out["restart"] = {"hash": "h", "since": "2030-01-01T00:00:00Z", "workloads": workloads}
    if windows is not None:
        out["windows"] = windows
    return out


def test_condition_state_is_one_for_the_current_status_and_zero_for_the_others(ns: str) -> None:
    metrics.record(
        f"{ns}/cb",
        None,
        status(
            cond("Ready", "False", "SourceNotFound"),
            cond("TrustStoreReady", "False", "SourceNotFound"),
            cond("CertificatesValid", "True", "Valid"),
        ),
    )
    got = {
        (labels["type"], labels["status"], labels["reason"]): v
        for name, labels, v in samples(ns)
        if name == "cobrowse_tls_condition"
    }
    assert got == {
        ("Ready", "True", "SourceNotFound"): 0.0,
        ("Ready", "False", "SourceNotFound"): 1.0,
        ("Ready", "Unknown", "SourceNotFound"): 0.0,
        ("TrustStoreReady", "True", "SourceNotFound"): 0.0,
        ("TrustStoreReady", "False", "SourceNotFound"): 1.0,
        ("TrustStoreReady", "Unknown", "SourceNotFound"): 0.0,
        ("CertificatesValid", "True", "Valid"): 1.0,
        ("CertificatesValid", "False", "Valid"): 0.0,
        ("CertificatesValid", "Unknown", "Valid"): 0.0,
    }
    # Fixed: the series of the old reason go at once (no stale SourceNotFound left behind).
    metrics.record(f"{ns}/cb", None, status(cond("Ready", "True", "Ready")))
    got_now = {
        (labels["type"], labels["status"], labels["reason"])
        for name, labels, _ in samples(ns)
        if name == "cobrowse_tls_condition"
    }
    assert got_now == {("Ready", s, "Ready") for s in ("True", "False", "Unknown")}


def test_expiry_stalled_rollouts_and_windows_nodes_come_from_the_status(ns: str) -> None:
    workloads = [
        {
            "kind": "Deployment",
            "name": "a",
            "state": "Stalled",
            "startedAt": "2030-01-01T00:00:00Z",
        },
        {"kind": "Deployment", "name": "b", "state": "Done"},
        {"kind": "StatefulSet", "name": "c", "state": "Stalled"},
    ]
    metrics.record(
        f"{ns}/cb",
        None,
        status(
            expires="2031-05-01T12:30:00Z",
            workloads=workloads,
            windows={"desired": 3, "ready": 2},
        ),
    )
    assert (
        value(ns, "cobrowse_tls_certificate_expiry_timestamp_seconds")
        == datetime(2031, 5, 1, 12, 30, tzinfo=UTC).timestamp()
    )
    assert value(ns, "cobrowse_tls_rollouts_stalled", name="cb") == 2.0
    assert value(ns, "cobrowse_tls_windows_nodes_synced", name="cb") == 2.0
    assert value(ns, "cobrowse_tls_windows_nodes_expected", name="cb") == 3.0
    # Without workloads, outside MSCAPI and with no CA: those series are absent, not 0.
    metrics.record(f"{ns}/cb", None, status(expires=None))
    names = {name for name, _, _ in samples(ns)}
    assert "cobrowse_tls_rollouts_stalled" not in names
    assert "cobrowse_tls_windows_nodes_synced" not in names
    assert "cobrowse_tls_windows_nodes_expected" not in names
    assert "cobrowse_tls_certificate_expiry_timestamp_seconds" not in names


def test_restarts_count_each_workload_restart_once(ns: str) -> None:
    key = f"{ns}/cb"
    pending = status(workloads=[{"kind": "Deployment", "name": "a", "state": "Pending"}])
    metrics.record(key, None, pending)
    assert value(ns, "cobrowse_tls_workload_restarts_total") == 0.0
    rolling = status(
        workloads=[
            {"kind": "Deployment", "name": "a", "state": "RollingOut", "startedAt": "T1"},
            {"kind": "Deployment", "name": "b", "state": "RollingOut", "startedAt": "T1"},
        ]
    )
    metrics.record(key, pending, rolling)
    assert value(ns, "cobrowse_tls_workload_restarts_total") == 2.0
    # The same restart seen again (rollout polling, a resync) is not a new one.
    done = status(
        workloads=[
            {"kind": "Deployment", "name": "a", "state": "Done", "startedAt": "T1"},
            {"kind": "Deployment", "name": "b", "state": "Done", "startedAt": "T1"},
        ]
    )
    metrics.record(key, rolling, done)
    metrics.record(key, done, done)
    assert value(ns, "cobrowse_tls_workload_restarts_total") == 2.0
    again = status(
        workloads=[
            {"kind": "Deployment", "name": "a", "state": "RollingOut", "startedAt": "T2"},
            {"kind": "Deployment", "name": "b", "state": "Pending"},
        ]
    )
    metrics.record(key, done, again)
    assert value(ns, "cobrowse_tls_workload_restarts_total") == 3.0


def test_restarts_started_is_pure() -> None:
    before = {"restart": {"workloads": [{"kind": "Deployment", "name": "a", "startedAt": "T1"}]}}
    after = {
        "restart": {
            "workloads": [
                {"kind": "Deployment", "name": "a", "startedAt": "T1"},
                {"kind": "StatefulSet", "name": "a", "startedAt": "T1"},
                {"kind": "Deployment", "name": "c"},
            ]
        }
    }
    assert metrics.restarts_started(before, after) == 1
    assert metrics.restarts_started(None, {}) == 0
    assert metrics.restarts_started(after, before) == 0


def test_a_status_not_written_by_the_operator_breaks_nothing(ns: str) -> None:
    metrics.record(f"{ns}/cb", None, status())
    bad = status(expires="next tuesday")
    bad["windows"] = {"desired": "many", "ready": 0}
    metrics.record(f"{ns}/cb", None, bad)  # logged, not raised
    assert value(ns, "cobrowse_tls_certificate_expiry_timestamp_seconds") == (
        datetime(2031, 5, 1, tzinfo=UTC).timestamp()
    )


def test_a_deleted_cr_leaves_no_series(ns: str) -> None:
    metrics.record(f"{ns}/a", None, status(workloads=[], windows={"desired": 1, "ready": 1}))
    metrics.record(f"{ns}/b", None, status())
    metrics.forget(f"{ns}/a")
    assert {labels["name"] for _, labels, _ in samples(ns)} == {"b"}
    metrics.forget(f"{ns}/b")
    assert samples(ns) == []


def per_cr_series(st: dict[str, Any]) -> int:
    ns = f"m-{uuid.uuid4().hex[:8]}"
    metrics.record(f"{ns}/cb", None, st)
    try:
        return len(samples(ns))
    finally:
        metrics.forget(f"{ns}/cb")


ALL_CONDITIONS = [
    cond("Ready", "False", "RolloutStalled"),
    cond("TrustStoreReady", "True", "Rendered"),
    cond("WorkloadsRestarted", "False", "RolloutStalled"),
    cond("WindowsTrustSynced", "False", "SyncInProgress"),
    cond("ConnectionsVerified", "True", "Verified"),
    cond("CertificatesValid", "False", "ExpiringSoon"),
]


def test_series_per_cr_are_bounded_whatever_the_certificates_workloads_and_nodes() -> None:
    def big(n: int) -> dict[str, Any]:
        return status(
            *ALL_CONDITIONS,
            certificates=n,
            workloads=[
                {"kind": "Deployment", "name": f"w{i}", "state": "Stalled", "startedAt": "T"}
                for i in range(n)
            ],
            windows={"desired": n, "ready": 0},
        )

    # 6 condition types x 3 statuses, expiry, restarts, stalled, 2 Windows gauges.
    assert per_cr_series(big(1)) == per_cr_series(big(200)) == 6 * 3 + 5
    assert per_cr_series(status()) == 3 + 2  # Ready only, expiry, restarts


def test_build_info_and_result_counters_exist_from_the_start() -> None:
    from cobrowse_tls import __version__

    got = samples()
    assert ("cobrowse_tls_build_info", {"version": __version__}, 1.0) in got
    results = {
        labels["result"] for name, labels, _ in got if name == "cobrowse_tls_reconciles_total"
    }
    assert results >= {"ok", "invalid", "error"}


def run(c: Recorder, key: str) -> float | None:
    async def process() -> float | None:
        return await c._process(key)

    return asyncio.run(process())


def test_controller_records_after_each_reconcile_and_forgets_on_delete(
    monkeypatch: pytest.MonkeyPatch, ns: str
) -> None:
    new_status = status(cond("Ready", "False", "SourceNotFound"))
    monkeypatch.setattr(
        reconciler, "reconcile", lambda *_: decide.Decision("invalid", status=new_status)
    )
    c = Recorder()
    c.on_cobrowse_tls(None, cr("a", "s1", ns=ns))
    run(c, f"{ns}/a")
    assert value(ns, "cobrowse_tls_condition", type="Ready", status="False") == 1.0
    c.on_cobrowse_tls("DELETED", cr("a", "s1", ns=ns))
    assert samples(ns) == []


def test_failing_reconciles_fill_the_retry_queue_until_one_succeeds(
    monkeypatch: pytest.MonkeyPatch, ns: str
) -> None:
    from cobrowse_tls.engine import kube

    def depth() -> float:
        found = value(None, "cobrowse_tls_work_queue_retry_depth")
        assert found is not None
        return found

    def failing(*_: Any) -> decide.Decision:
        raise kube.KubeError(500, "etcdserver: request timed out")

    before = depth()
    monkeypatch.setattr(reconciler, "reconcile", failing)
    c = Recorder()
    c.on_cobrowse_tls(None, cr("a", "s1", ns=ns))
    c.on_cobrowse_tls(None, cr("b", "s1", ns=ns))
    assert run(c, f"{ns}/a") is not None
    assert run(c, f"{ns}/b") is not None
    assert depth() == before + 2
    monkeypatch.setattr(reconciler, "reconcile", lambda *_: decide.Decision("ok", status=status()))
    run(c, f"{ns}/a")
    assert depth() == before + 1
    c.on_cobrowse_tls("DELETED", cr("b", "s1", ns=ns))
    assert depth() == before


def test_a_cr_deleted_during_its_reconcile_leaves_no_series(
    monkeypatch: pytest.MonkeyPatch, ns: str
) -> None:
    c = Recorder()

    def deleted_meanwhile(*_: Any) -> decide.Decision:
        c.on_cobrowse_tls("DELETED", cr("a", "s1", ns=ns))
        return decide.Decision("ok", status=status())

    monkeypatch.setattr(reconciler, "reconcile", deleted_meanwhile)
    c.on_cobrowse_tls(None, cr("a", "s1", ns=ns))
    run(c, f"{ns}/a")
    assert samples(ns) == []
