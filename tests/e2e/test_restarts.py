"""Rolling restarts against the real control plane, with kwok nodes whose pods become Ready."""

from __future__ import annotations

import json
import signal
import threading
import time
from typing import Any

import pytest
from kubernetes import client

import pki as pkim
from cobrowse_tls.core import restart_plan
from e2e.cluster_backends import E2ECluster
from e2e.operator_support import (
    Api,
    OperatorProcess,
    cobrowse_tls,
    condition,
    operator_fixture,
    secret,
    wait_for,
)

WINDOW = 1.0
DEADLINE = 8.0
ANNOTATION = restart_plan.ANNOTATION_RESTARTED_FOR


operator_proc = operator_fixture(
    "--resync", "2", "--restart-window", str(WINDOW), "--rollout-deadline", str(DEADLINE)
)

pytestmark = pytest.mark.usefixtures("operator_proc")


class Workloads:
    def __init__(self, cluster: E2ECluster, namespace: str) -> None:
        self.apps = client.AppsV1Api(cluster.api_client)
        self.ns = namespace

    def _json(self, call: Any, *args: Any, **kw: Any) -> Any:
        return json.loads(call(*args, _preload_content=False, **kw).data)

    def create(
        self,
        kind: str,
        name: str,
        *,
        labels: dict[str, str] | None = None,
        replicas: int = 2,
        node_selector: dict[str, str] | None = None,
    ) -> None:
        pod_labels = {"app": name}
        template = {
            "metadata": {"labels": pod_labels},
            "spec": {
                "nodeSelector": node_selector or {"kubernetes.io/os": "linux"},
                "containers": [{"name": "cobrowse", "image": "genesys/cobrowse:test"}],
            },
        }
        spec: dict[str, Any] = {"selector": {"matchLabels": pod_labels}, "template": template}
        if kind != "DaemonSet":
            spec["replicas"] = replicas
        if kind == "StatefulSet":
            spec["serviceName"] = name
        body = {
            "apiVersion": "apps/v1",
            "kind": kind,
            "metadata": {"name": name, "namespace": self.ns, "labels": labels or {}},
            "spec": spec,
        }
        create = {
            "Deployment": self.apps.create_namespaced_deployment,
            "StatefulSet": self.apps.create_namespaced_stateful_set,
            "DaemonSet": self.apps.create_namespaced_daemon_set,
        }[kind]
        self._json(create, self.ns, body)

    def get(self, kind: str, name: str) -> dict[str, Any]:
        read = {
            "Deployment": self.apps.read_namespaced_deployment,
            "StatefulSet": self.apps.read_namespaced_stateful_set,
            "DaemonSet": self.apps.read_namespaced_daemon_set,
        }[kind]
        obj: dict[str, Any] = self._json(read, name, self.ns)
        obj["kind"] = kind
        return obj

    def hash(self, kind: str, name: str) -> str | None:
        return restart_plan.template_hash(self.get(kind, name))

    def complete(self, kind: str, name: str) -> bool:
        return restart_plan.rollout_complete(self.get(kind, name))

    def replica_sets(self, name: str) -> int:
        items = self._json(
            self.apps.list_namespaced_replica_set, self.ns, label_selector=f"app={name}"
        )["items"]
        return len(items)

    def revisions(self, name: str) -> int:
        items = self._json(
            self.apps.list_namespaced_controller_revision, self.ns, label_selector=f"app={name}"
        )["items"]
        return len(items)

    def wait_complete(self, kind: str, name: str, timeout: float = 60) -> None:
        wait_for(f"{kind} {name} rolled out", lambda: self.complete(kind, name), timeout=timeout)


def spec(*workloads: dict[str, Any], **extra: Any) -> dict[str, Any]:
    out = {
        "provider": "PEM",
        "application": {"type": "Cluster", "name": "CB_Cluster"},
        "trustedCA": {"sources": [{"secret": {"name": "ca", "key": "ca.crt"}}]},
        "workloads": list(workloads),
    }
    out.update(extra)
    return out


def status_hash(api: Api, ns: str) -> str | None:
    obj = api.get("CobrowseTLS", ns, "cb")
    restart_hash: str | None = ((obj or {}).get("status") or {}).get("restart", {}).get("hash")
    return restart_hash


def restarted_cond(api: Api, ns: str, reason: str) -> dict[str, Any] | None:
    cond = condition(api.get("CobrowseTLS", ns, "cb"), "WorkloadsRestarted")
    return cond if cond and cond["reason"] == reason else None


def settle(api: Api, w: Workloads, ns: str, *names: tuple[str, str]) -> str:
    """Wait for the first rollout for the CR's material; returns its hash."""
    wait_for("RolloutComplete", lambda: restarted_cond(api, ns, "RolloutComplete"), timeout=90)
    h = status_hash(api, ns)
    assert h is not None
    for kind, name in names:
        assert w.hash(kind, name) == h
        w.wait_complete(kind, name)
    return h


def test_rotation_restarts_each_target_once_and_nothing_else(
    cluster: E2ECluster, api: Api, namespace: str, pki: pkim.PKI
) -> None:
    w = Workloads(cluster, namespace)
    w.create("Deployment", "web")
    w.create("StatefulSet", "node", replicas=2)
    w.create("DaemonSet", "agent")
    w.create("Deployment", "bystander")
    for kind, name in (
        ("Deployment", "web"),
        ("StatefulSet", "node"),
        ("DaemonSet", "agent"),
        ("Deployment", "bystander"),
    ):
        w.wait_complete(kind, name)
    api.apply(secret(namespace, "ca", {"ca.crt": pkim.pem(pki.root)}))
    api.apply(
        cobrowse_tls(
            namespace,
            "cb",
            spec(
                {"kind": "Deployment", "name": "web"},
                {"kind": "StatefulSet", "name": "node"},
                {"kind": "DaemonSet", "selector": {"matchLabels": {"role": "agent"}}},
                restart={"maxConcurrent": 3},
            ),
        )
    )
    # The DaemonSet is found by label: label it now, as a user adding it later would.
    w.apps.patch_namespaced_daemon_set(
        "agent", namespace, {"metadata": {"labels": {"role": "agent"}}}, _preload_content=False
    )
    first = settle(
        api, w, namespace, ("Deployment", "web"), ("StatefulSet", "node"), ("DaemonSet", "agent")
    )
    rs_web, rev_node, rev_agent = w.replica_sets("web"), w.revisions("node"), w.revisions("agent")
    assert rs_web == 2  # the initial one and the first restart's

    api.apply(secret(namespace, "ca", {"ca.crt": pkim.pem(pki.other_root)}))
    wait_for("a new hash", lambda: (h := status_hash(api, namespace)) and h != first and h)
    second = settle(
        api, w, namespace, ("Deployment", "web"), ("StatefulSet", "node"), ("DaemonSet", "agent")
    )
    assert second != first
    assert w.replica_sets("web") == rs_web + 1
    assert w.revisions("node") == rev_node + 1
    assert w.revisions("agent") == rev_agent + 1
    assert w.replica_sets("bystander") == 1
    assert w.hash("Deployment", "bystander") is None
    assert w.get("Deployment", "bystander")["metadata"]["generation"] == 1
    # Only the annotation changed in the pod template.
    template = w.get("Deployment", "web")["spec"]["template"]
    assert template["metadata"]["annotations"] == {ANNOTATION: second}
    assert template["spec"]["containers"][0]["image"] == "genesys/cobrowse:test"
    reasons = [e["reason"] for e in api.events(namespace, "cb")]
    assert reasons.count("RestartStarted") == 6
    assert reasons.count("RolloutDone") >= 3


def test_changes_in_one_window_give_one_restart(
    cluster: E2ECluster, api: Api, namespace: str, pki: pkim.PKI
) -> None:
    w = Workloads(cluster, namespace)
    w.create("Deployment", "web")
    api.apply(secret(namespace, "ca", {"ca.crt": pkim.pem(pki.root)}))
    api.apply(secret(namespace, "pw", {"password": b"first-password"}))
    api.apply(
        cobrowse_tls(
            namespace,
            "cb",
            spec(
                {"kind": "Deployment", "name": "web"},
                provider="JKS",
                truststore={"passwordSecretRef": {"name": "pw", "key": "password"}},
            ),
        )
    )
    settle(api, w, namespace, ("Deployment", "web"))
    before = w.replica_sets("web")
    # A CA and a password edited together, as one `kubectl apply` of two documents does.
    api.apply(secret(namespace, "ca", {"ca.crt": pkim.pem(pki.other_root)}))
    api.apply(secret(namespace, "pw", {"password": b"second-password"}))
    time.sleep(WINDOW * 3)
    settle(api, w, namespace, ("Deployment", "web"))
    assert w.replica_sets("web") == before + 1


def three_deployments_settled(
    api: Api, w: Workloads, namespace: str, pki: pkim.PKI, names: tuple[str, ...]
) -> str:
    """Deployments `names` (3 replicas each) targeted by CR `cb`, restarted once: the hash."""
    for n in names:
        w.create("Deployment", n, replicas=3)
    api.apply(secret(namespace, "ca", {"ca.crt": pkim.pem(pki.root)}))
    api.apply(
        cobrowse_tls(namespace, "cb", spec(*[{"kind": "Deployment", "name": n} for n in names]))
    )
    return settle(api, w, namespace, *[("Deployment", n) for n in names])


def test_max_concurrent_one_never_overlaps(
    cluster: E2ECluster, api: Api, namespace: str, pki: pkim.PKI
) -> None:
    w = Workloads(cluster, namespace)
    names = ("a", "b", "c")
    first = three_deployments_settled(api, w, namespace, pki, names)

    overlap: list[int] = []
    stop = threading.Event()

    def watch() -> None:
        while not stop.is_set():
            # In flight: carries the new hash but has not finished rolling out.
            objs = [w.get("Deployment", n) for n in names]
            overlap.append(
                sum(
                    1
                    for o in objs
                    if restart_plan.template_hash(o) not in (first, None)
                    and not restart_plan.rollout_complete(o)
                )
            )
            time.sleep(0.05)

    t = threading.Thread(target=watch)
    t.start()
    try:
        api.apply(secret(namespace, "ca", {"ca.crt": pkim.pem(pki.other_root)}))
        wait_for("a new hash", lambda: (h := status_hash(api, namespace)) and h != first)
        settle(api, w, namespace, *[("Deployment", n) for n in names])
    finally:
        stop.set()
        t.join()
    assert max(overlap) == 1, overlap


def test_operator_killed_mid_rollout_restarts_each_workload_once(
    cluster: E2ECluster,
    api: Api,
    namespace: str,
    pki: pkim.PKI,
    operator_proc: OperatorProcess | None,
) -> None:
    if operator_proc is None:
        pytest.skip("needs to kill the operator process")
    w = Workloads(cluster, namespace)
    names = ("a", "b", "c")
    first = three_deployments_settled(api, w, namespace, pki, names)
    counts = {n: w.replica_sets(n) for n in names}

    api.apply(secret(namespace, "ca", {"ca.crt": pkim.pem(pki.other_root)}))
    # Kill it as soon as the first workload got the new hash: the rest are still pending.
    wait_for(
        "the first restart", lambda: w.hash("Deployment", "a") not in (first, None), interval=0.02
    )
    operator_proc.stop(signal.SIGKILL)
    assert w.hash("Deployment", "c") == first
    time.sleep(1)
    operator_proc.start()
    settle(api, w, namespace, *[("Deployment", n) for n in names])
    assert {n: w.replica_sets(n) for n in names} == {n: counts[n] + 1 for n in names}


def test_no_change_no_restart_across_resyncs_and_operator_restart(
    cluster: E2ECluster,
    api: Api,
    namespace: str,
    pki: pkim.PKI,
    operator_proc: OperatorProcess | None,
) -> None:
    w = Workloads(cluster, namespace)
    w.create("Deployment", "web")
    api.apply(secret(namespace, "ca", {"ca.crt": pkim.pem(pki.root)}))
    api.apply(cobrowse_tls(namespace, "cb", spec({"kind": "Deployment", "name": "web"})))
    settle(api, w, namespace, ("Deployment", "web"))
    before = (w.replica_sets("web"), w.get("Deployment", "web")["metadata"]["generation"])
    time.sleep(5)
    if operator_proc is not None:
        operator_proc.restart()
        time.sleep(5)
    assert (w.replica_sets("web"), w.get("Deployment", "web")["metadata"]["generation"]) == before


def test_invalid_material_restarts_nothing(
    cluster: E2ECluster, api: Api, namespace: str, pki: pkim.PKI
) -> None:
    w = Workloads(cluster, namespace)
    w.create("Deployment", "web")
    api.apply(secret(namespace, "ca", {"ca.crt": pkim.pem(pki.root)}))
    api.apply(cobrowse_tls(namespace, "cb", spec({"kind": "Deployment", "name": "web"})))
    good = settle(api, w, namespace, ("Deployment", "web"))
    before = w.replica_sets("web")
    api.apply(secret(namespace, "ca", {"ca.crt": b"garbage"}))
    wait_for(
        "InvalidCertificate",
        lambda: (
            (c := condition(api.get("CobrowseTLS", namespace, "cb"), "TrustStoreReady"))
            and c["reason"] == "InvalidCertificate"
        ),
    )
    time.sleep(WINDOW * 4)
    assert w.replica_sets("web") == before
    assert w.hash("Deployment", "web") == good
    assert w.complete("Deployment", "web")  # the old pods keep running


def test_manual_policy_waits_for_approval(
    cluster: E2ECluster, api: Api, namespace: str, pki: pkim.PKI
) -> None:
    w = Workloads(cluster, namespace)
    w.create("Deployment", "web")
    w.wait_complete("Deployment", "web")
    api.apply(secret(namespace, "ca", {"ca.crt": pkim.pem(pki.root)}))
    api.apply(
        cobrowse_tls(
            namespace,
            "cb",
            spec({"kind": "Deployment", "name": "web"}, restart={"policy": "Manual"}),
        )
    )
    cond = wait_for("RestartPending", lambda: restarted_cond(api, namespace, "RestartPending"))
    h = status_hash(api, namespace)
    assert h is not None
    assert h in cond["message"]
    time.sleep(WINDOW * 3)
    assert w.replica_sets("web") == 1
    assert w.hash("Deployment", "web") is None
    api.merge_patch(
        "CobrowseTLS",
        namespace,
        "cb",
        {"metadata": {"annotations": {restart_plan.ANNOTATION_APPROVE: h}}},
    )
    settle(api, w, namespace, ("Deployment", "web"))
    time.sleep(WINDOW * 2)
    assert w.replica_sets("web") == 2


def test_stalled_rollout_stops_the_next_restart(
    cluster: E2ECluster, api: Api, namespace: str, pki: pkim.PKI
) -> None:
    w = Workloads(cluster, namespace)
    # No node carries this label: its pods stay Pending, its rollout never completes.
    w.create("Deployment", "stuck", replicas=1, node_selector={"no-such-node": "true"})
    w.create("Deployment", "next")
    w.wait_complete("Deployment", "next")
    api.apply(secret(namespace, "ca", {"ca.crt": pkim.pem(pki.root)}))
    api.apply(
        cobrowse_tls(
            namespace,
            "cb",
            spec({"kind": "Deployment", "name": "stuck"}, {"kind": "Deployment", "name": "next"}),
        )
    )
    cond = wait_for(
        "RolloutStalled",
        lambda: restarted_cond(api, namespace, "RolloutStalled"),
        timeout=DEADLINE * 4,
    )
    assert cond["status"] == "False"
    assert "Deployment stuck" in cond["message"]
    time.sleep(2)
    assert w.hash("Deployment", "next") is None
    assert w.replica_sets("next") == 1
    obj = api.get("CobrowseTLS", namespace, "cb")
    assert obj is not None
    states = {x["name"]: x["state"] for x in obj["status"]["restart"]["workloads"]}
    assert states == {"stuck": "Stalled", "next": "Pending"}


def test_missing_workload_is_reported_and_others_proceed(
    cluster: E2ECluster, api: Api, namespace: str, pki: pkim.PKI
) -> None:
    w = Workloads(cluster, namespace)
    w.create("Deployment", "web")
    api.apply(secret(namespace, "ca", {"ca.crt": pkim.pem(pki.root)}))
    api.apply(
        cobrowse_tls(
            namespace,
            "cb",
            spec({"kind": "Deployment", "name": "ghost"}, {"kind": "Deployment", "name": "web"}),
        )
    )

    def ghost_reported() -> dict[str, Any] | None:
        c = restarted_cond(api, namespace, "WorkloadNotFound")
        if c and w.complete("Deployment", "web") and w.hash("Deployment", "web"):
            return c
        return None

    cond = wait_for("WorkloadNotFound", ghost_reported, timeout=60)
    assert "Deployment ghost" in cond["message"]
    assert [e for e in api.events(namespace, "cb") if e["reason"] == "WorkloadNotFound"]
