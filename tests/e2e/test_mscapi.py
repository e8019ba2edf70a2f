"""MSCAPI end to end: the agent DaemonSet on the Windows kwok nodes, sync, rotation, cleanup."""

from __future__ import annotations

import base64
import json
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client

import pki as pkim
from cobrowse_tls.api import models
from cobrowse_tls.core import agent_manifest, render, restart_plan
from cobrowse_tls.engine import kube, kubeconfig
from e2e.cluster_backends import E2ECluster
from e2e.operator_support import (
    MSCAPI_LABEL,
    Api,
    cobrowse_tls,
    condition,
    operator_fixture,
    require_condition,
    secret,
    wait_for,
)

operator_proc = operator_fixture(
    "--resync", "2", "--restart-window", "0.5", "--cleanup-timeout", "30",
    "--agent-image", "cobrowse-tls-agent:e2e",
)  # fmt: skip

pytestmark = pytest.mark.usefixtures("operator_proc")


@pytest.fixture
def namespace(namespace: str, core: client.CoreV1Api) -> str:
    """The test's namespace, opted in to MSCAPI by the cluster admin (the operator's option)."""
    core.patch_namespace(namespace, {"metadata": {"labels": dict([MSCAPI_LABEL])}})
    return namespace


def _json(call: Any, *args: Any, **kw: Any) -> Any:
    return json.loads(call(*args, _preload_content=False, **kw).data)


def daemon_set(cluster: E2ECluster, ns: str) -> dict[str, Any] | None:
    apps = client.AppsV1Api(cluster.api_client)
    try:
        obj: dict[str, Any] = _json(apps.read_namespaced_daemon_set, "cb-mscapi-agent", ns)
    except client.ApiException as exc:
        if exc.status == 404:
            return None
        raise
    return obj


def agent_pods(cluster: E2ECluster, ns: str) -> list[dict[str, Any]]:
    core = client.CoreV1Api(cluster.api_client)
    sel = "app.kubernetes.io/component=mscapi-agent,tls.cobrowse.io/owner=cb"
    return list(_json(core.list_namespaced_pod, ns, label_selector=sel)["items"])


def node_os(cluster: E2ECluster) -> dict[str, str]:
    core = client.CoreV1Api(cluster.api_client)
    nodes = _json(core.list_node)["items"]
    return {n["metadata"]["name"]: n["metadata"]["labels"]["kubernetes.io/os"] for n in nodes}


def windows_deployment(cluster: E2ECluster, ns: str) -> None:
    apps = client.AppsV1Api(cluster.api_client)
    labels = {"app": "cobrowse-windows"}
    body = {
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "cobrowse-win", "namespace": ns, "labels": labels},
        "spec": {
            "replicas": 2, "selector": {"matchLabels": labels},
            "template": {"metadata": {"labels": labels}, "spec": {
                "nodeSelector": {"kubernetes.io/os": "windows"},
                "tolerations": agent_manifest.WINDOWS_TOLERATIONS,
                "containers": [{"name": "cobrowse", "image": "genesys/cobrowse-win:test"}],
            }},
        },
    }  # fmt: skip
    _json(apps.create_namespaced_deployment, ns, body)


def spec() -> dict[str, Any]:
    return {
        "provider": "MSCAPI",
        "application": {"type": "Server", "name": "CB_Server", "version": "8.5.000"},
        "trustedCA": {"sources": [{"secret": {"name": "ca", "key": "ca.crt"}}]},
        "windows": {"store": "Root", "location": "LocalMachine"},
        "workloads": [
            {"kind": "Deployment", "selector": {"matchLabels": {"app": "cobrowse-windows"}}}
        ],
    }


def synced(api: Api, ns: str) -> dict[str, Any] | None:
    obj = api.get("CobrowseTLS", ns, "cb")
    cond = condition(obj, "WindowsTrustSynced")
    return obj if cond and cond["status"] == "True" else None


@pytest.fixture
def windows_nodes(cluster: E2ECluster) -> None:
    """Agents run on Windows nodes: kind has none (the local control plane has fake ones)."""
    if not cluster.has_windows_nodes:
        pytest.skip(f"the {cluster.backend} cluster has no Windows nodes")


@pytest.mark.usefixtures("windows_nodes")
def test_agents_run_on_windows_nodes_sync_and_gate_restarts(
    cluster: E2ECluster, api: Api, namespace: str, pki: pkim.PKI
) -> None:
    windows_deployment(cluster, namespace)
    api.apply(secret(namespace, "ca", {"ca.crt": pkim.pem(pki.root)}))
    api.apply(cobrowse_tls(namespace, "cb", spec()))
    obj = wait_for("WindowsTrustSynced", lambda: synced(api, namespace), timeout=60)
    assert obj["status"]["windows"] == {"desired": 2, "ready": 2}
    assert agent_manifest.FINALIZER in obj["metadata"]["finalizers"]

    pods = agent_pods(cluster, namespace)
    os_of = node_os(cluster)
    assert sorted(os_of[p["spec"]["nodeName"]] for p in pods) == ["windows", "windows"]
    assert len({p["spec"]["nodeName"] for p in pods}) == 2
    ds = daemon_set(cluster, namespace)
    assert ds is not None
    pod_spec = ds["spec"]["template"]["spec"]
    assert pod_spec["securityContext"]["windowsOptions"]["hostProcess"] is True
    assert pod_spec["containers"][0]["image"] == "cobrowse-tls-agent:e2e"
    wait_for("the workload restarted for the first material",
             lambda: (c := condition(api.get("CobrowseTLS", namespace, "cb"), "WorkloadsRestarted"))
             and c["reason"] == "RolloutComplete", timeout=60)  # fmt: skip
    assert require_condition(api.get("CobrowseTLS", namespace, "cb"), "Ready")["status"] == "True"

    # Rotation: the agents roll first; the Windows workload restarts only once they are synced.
    first_fp = ds["spec"]["template"]["metadata"]["annotations"][
        agent_manifest.ANNOTATION_FINGERPRINT
    ]
    apps = client.AppsV1Api(cluster.api_client)
    seen: dict[str, float] = {}
    stop = threading.Event()

    def watch() -> None:
        while not stop.is_set():
            d = daemon_set(cluster, namespace) or {}
            fp = d.get("spec", {}).get("template", {}).get("metadata", {}).get("annotations", {})
            new_fp = fp.get(agent_manifest.ANNOTATION_FINGERPRINT) not in (None, first_fp)
            st = d.get("status", {})
            if (
                new_fp
                and "agents_synced" not in seen
                and restart_plan.rollout_complete({**d, "kind": "DaemonSet"})
                and st.get("numberReady", 0) == st.get("desiredNumberScheduled", -1)
            ):
                seen["agents_synced"] = time.monotonic()
            dep = _json(apps.read_namespaced_deployment, "cobrowse-win", namespace)
            if "workload" not in seen and restart_plan.template_hash(dep) not in (None, wl_hash):
                seen["workload"] = time.monotonic()
            time.sleep(0.05)

    wl_hash = restart_plan.template_hash(
        _json(apps.read_namespaced_deployment, "cobrowse-win", namespace)
    )
    t = threading.Thread(target=watch)
    t.start()
    try:
        api.apply(secret(namespace, "ca", {"ca.crt": pkim.pem(pki.other_root)}))
        wait_for(
            "the workload restarted after the rotation", lambda: "workload" in seen, timeout=90
        )
    finally:
        stop.set()
        t.join()
    assert "agents_synced" in seen
    assert seen["agents_synced"] <= seen["workload"]


def test_real_agent_process_against_the_rendered_files(
    cluster: E2ECluster, api: Api, namespace: str, pki: pkim.PKI, tmp_path: Path
) -> None:
    """The agent, with the file store, standing in for a Windows node of the DaemonSet."""
    api.apply(secret(namespace, "ca", {"ca.crt": pkim.pem(pki.root, pki.intermediate)}))
    api.apply(cobrowse_tls(namespace, "cb", spec()))
    ds = wait_for("the agent DaemonSet", lambda: daemon_set(cluster, namespace))
    out = wait_for("the truststore Secret", lambda: api.get("Secret", namespace, "cb-truststore"))
    mount = tmp_path / "mount"
    mount.mkdir()
    (mount / "ca.pem").write_bytes(base64.b64decode(out["data"]["ca.pem"]))
    container = ds["spec"]["template"]["spec"]["containers"][0]
    args = list(container["args"])
    # Map the Windows paths of the pod onto this host, as the kubelet maps the volume.
    swap = {
        args[args.index("--ca-file") + 1]: str(mount / "ca.pem"),
        args[args.index("--state-dir") + 1]: str(tmp_path / "state"),
        args[args.index("--ready-file") + 1]: str(tmp_path / "ready"),
    }
    args = ["agent", "run", *(swap.get(a, a) for a in args)]
    args += ["--backend", "file", "--file-store", str(tmp_path / "store"), "--once"]
    run = subprocess.run(
        [sys.executable, "-m", "cobrowse_tls.cli", *args],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert run.returncode == 0, run.stderr
    fp = ds["spec"]["template"]["metadata"]["annotations"][agent_manifest.ANNOTATION_FINGERPRINT]
    assert (tmp_path / "ready").read_text() == fp
    stored = list((tmp_path / "store").rglob("*.cer"))
    assert len(stored) == 2
    # The readiness probe of the DaemonSet, run the same way, passes.
    probe = container["readinessProbe"]["exec"]["command"]
    probe = probe[probe.index("agent") :]
    probe = [swap.get(a, a) for a in probe]
    assert subprocess.run([sys.executable, "-m", "cobrowse_tls.cli", *probe],
                          capture_output=True, timeout=60).returncode == 0  # fmt: skip


@pytest.mark.usefixtures("windows_nodes")
def test_deletion_runs_the_cleanup_phase_then_removes_the_agents(
    cluster: E2ECluster, api: Api, namespace: str, pki: pkim.PKI
) -> None:
    api.apply(secret(namespace, "ca", {"ca.crt": pkim.pem(pki.root)}))
    api.apply(cobrowse_tls(namespace, "cb", spec()))
    wait_for("WindowsTrustSynced", lambda: synced(api, namespace), timeout=60)
    api.delete("CobrowseTLS", namespace, "cb")
    mode = agent_manifest.ANNOTATION_MODE
    cleanup = wait_for("the agents in cleanup mode", lambda: (d := daemon_set(cluster, namespace))
                       and d["spec"]["template"]["metadata"]["annotations"][mode]
                       == agent_manifest.CLEANUP and d)  # fmt: skip
    assert cleanup["spec"]["template"]["spec"]["containers"][0]["args"][-1] == "cleanup"
    wait_for("the CR gone", lambda: api.get("CobrowseTLS", namespace, "cb") is None, timeout=60)
    assert daemon_set(cluster, namespace) is None
    reasons = [e["reason"] for e in api.events(namespace, "cb")]
    assert "CleanupStarted" in reasons
    assert "CleanupComplete" in reasons


def test_a_live_agent_daemon_set_switched_to_cleanup_applies_on_the_api_server(
    cluster: E2ECluster, namespace: str
) -> None:
    # What the operator does for a CR whose spec no longer parses: apply the live object, as
    # the API server returns it (defaults, status, managedFields), switched to cleanup.
    kube_client = kube.Client(kubeconfig.load(str(cluster.kubeconfig)))
    fingerprint = "sha256:" + "ab" * 32
    tls = models.parse(cobrowse_tls(namespace, "gone", spec()))
    kube_client.apply(
        render.agent_daemon_set(
            tls, fingerprint=fingerprint, input_hash="h", agent=agent_manifest.AgentConfig()
        )
    )
    live = kube_client.get_workload("DaemonSet", namespace, "gone-mscapi-agent")
    assert live is not None
    since = "2030-01-01T00:00:00Z"
    kube_client.apply(
        agent_manifest.switch_to_cleanup(
            live, cleanup_since=since, agent=agent_manifest.AgentConfig()
        )
    )
    after = kube_client.get_workload("DaemonSet", namespace, "gone-mscapi-agent")
    assert after is not None
    assert after["metadata"]["generation"] == live["metadata"]["generation"] + 1
    assert after["metadata"]["annotations"][agent_manifest.ANNOTATION_CLEANUP_SINCE] == since
    template = after["spec"]["template"]
    assert template["metadata"]["annotations"][agent_manifest.ANNOTATION_MODE] == "cleanup"
    container = template["spec"]["containers"][0]
    assert container["args"][container["args"].index("--mode") + 1] == "cleanup"
    probe = container["readinessProbe"]["exec"]["command"]
    assert probe[probe.index("--expect") + 1] == f"cleaned:{fingerprint}"


@pytest.mark.usefixtures("windows_nodes")
def test_pod_security_refusing_the_agents_is_reported_until_the_namespace_allows_them(
    cluster: E2ECluster, api: Api, namespace: str, pki: pkim.PKI
) -> None:
    core = client.CoreV1Api(cluster.api_client)
    level = "pod-security.kubernetes.io/enforce"
    core.patch_namespace(namespace, {"metadata": {"labels": {level: "baseline"}}})
    api.apply(secret(namespace, "ca", {"ca.crt": pkim.pem(pki.root)}))
    api.apply(cobrowse_tls(namespace, "cb", spec()))

    def forbidden() -> dict[str, Any] | None:
        cond = condition(api.get("CobrowseTLS", namespace, "cb"), "WindowsTrustSynced")
        return cond if cond and cond["reason"] == "PodSecurityForbidden" else None

    cond = wait_for("WindowsTrustSynced PodSecurityForbidden", forbidden, timeout=60)
    assert cond["status"] == "False"
    assert f"{level}=privileged" in cond["message"]
    assert "violates PodSecurity" in cond["message"]
    assert agent_pods(cluster, namespace) == []
    # The namespace allows HostProcess pods: the DaemonSet controller retries and they sync.
    core.patch_namespace(namespace, {"metadata": {"labels": {level: "privileged"}}})
    wait_for("WindowsTrustSynced", lambda: synced(api, namespace), timeout=180)
