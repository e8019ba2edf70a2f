"""The control plane really behaves like Kubernetes: versions, nodes, rollouts, CRDs."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

import pytest
import yaml
from kubernetes import client

from cobrowse_tls.devcluster.binaries import K8S_VERSION
from e2e.cluster_backends import REPO, E2ECluster

pytestmark = pytest.mark.e2e

CRD_FILE = REPO / "crds" / "cobrowsetlses.tls.cobrowse.io.yaml"
CRD_NAME = "cobrowsetlses.tls.cobrowse.io"


class _Resource(Protocol):
    @property
    def metadata(self) -> client.V1ObjectMeta | None: ...


def _meta(obj: _Resource) -> client.V1ObjectMeta:
    assert obj.metadata is not None
    return obj.metadata


def _name(obj: _Resource) -> str:
    name = _meta(obj).name
    assert name is not None
    return name


def _labels(obj: _Resource) -> dict[str, str]:
    labels = _meta(obj).labels
    assert labels is not None
    return labels


def _annotations(obj: _Resource) -> dict[str, str]:
    annotations = _meta(obj).annotations
    assert annotations is not None
    return annotations


def _node_conditions(node: client.V1Node) -> list[client.V1NodeCondition]:
    assert node.status is not None
    return node.status.conditions or []


def _pod_conditions(pod: client.V1Pod) -> list[client.V1PodCondition]:
    assert pod.status is not None
    return pod.status.conditions or []


def _node_name(pod: client.V1Pod) -> str:
    assert pod.spec is not None
    assert pod.spec.node_name is not None
    return pod.spec.node_name


def wait_for(check: Callable[[], Any], timeout: float = 60, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.2)


def test_server_version(cluster: E2ECluster) -> None:
    out = json.loads(cluster.kubectl("version", "-o", "json").stdout)
    server = out["serverVersion"]["gitVersion"]
    if cluster.backend == "local":
        assert server == K8S_VERSION
        assert out["clientVersion"]["gitVersion"] == K8S_VERSION
    else:
        assert server.startswith("v1.")


def test_nodes_ready_with_os_labels(cluster: E2ECluster, core: client.CoreV1Api) -> None:
    nodes = core.list_node().items
    ready = {
        _name(n)
        for n in nodes
        if any(c.type == "Ready" and c.status == "True" for c in _node_conditions(n))
    }
    assert ready == {_name(n) for n in nodes}
    if cluster.backend != "local":
        return
    by_os: dict[str, list[client.V1Node]] = {}
    for n in nodes:
        by_os.setdefault(_labels(n)["kubernetes.io/os"], []).append(n)
    assert sorted(by_os) == ["linux", "windows"]
    assert len(by_os["linux"]) == 2
    assert len(by_os["windows"]) == 2
    for n in by_os["windows"]:
        assert _labels(n)["node.kubernetes.io/windows-build"]
        assert n.spec is not None
        taints = [(t.key, t.value, t.effect) for t in n.spec.taints or []]
        assert ("os", "windows", "NoSchedule") in taints
    for n in by_os["linux"]:
        assert n.spec is not None
        assert not n.spec.taints


def _pod_template(labels: dict[str, str], **spec: Any) -> dict[str, Any]:
    container = {"name": "app", "image": "registry.invalid/cobrowse:1"}
    return {"metadata": {"labels": labels}, "spec": {"containers": [container], **spec}}


def _node_os(core: client.CoreV1Api) -> dict[str, str]:
    return {_name(n): _labels(n)["kubernetes.io/os"] for n in core.list_node().items}


def _ready_pods(core: client.CoreV1Api, namespace: str, selector: str) -> list[client.V1Pod]:
    pods = core.list_namespaced_pod(namespace, label_selector=selector).items
    return [
        p
        for p in pods
        if _meta(p).deletion_timestamp is None
        and any(c.type == "Ready" and c.status == "True" for c in _pod_conditions(p))
    ]


def test_deployment_rolls_out_on_linux_nodes(
    cluster: E2ECluster, core: client.CoreV1Api, apps: client.AppsV1Api, namespace: str
) -> None:
    labels = {"app": "web"}
    body = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "web"},
        "spec": {
            "replicas": 2,
            "selector": {"matchLabels": labels},
            "template": _pod_template(labels),
        },
    }
    apps.create_namespaced_deployment(namespace, client.V1Deployment.model_validate(body))
    cluster.kubectl("rollout", "status", "deployment/web", "-n", namespace, "--timeout=90s")
    first = _annotations(apps.read_namespaced_deployment("web", namespace))

    apps.patch_namespaced_deployment(
        "web",
        namespace,
        {"spec": {"template": {"metadata": {"annotations": {"restartedAt": "now"}}}}},
    )
    cluster.kubectl("rollout", "status", "deployment/web", "-n", namespace, "--timeout=90s")
    dep = apps.read_namespaced_deployment("web", namespace)
    assert _annotations(dep)["deployment.kubernetes.io/revision"] == "2"
    assert first["deployment.kubernetes.io/revision"] == "1"

    sets = apps.list_namespaced_replica_set(namespace, label_selector="app=web").items
    assert len(sets) == 2
    live = [rs for rs in sets if rs.spec.replicas]
    assert len(live) == 1
    assert _annotations(live[0])["deployment.kubernetes.io/revision"] == "2"

    pods = wait_for(
        lambda: (p := _ready_pods(core, namespace, "app=web")) and len(p) == 2 and p,
        what="two Ready pods of the new ReplicaSet",
    )
    if cluster.backend == "local":
        node_os = _node_os(core)
        assert {node_os[p.spec.node_name] for p in pods} == {"linux"}


def test_statefulset_rolls_out_in_order(
    cluster: E2ECluster, core: client.CoreV1Api, apps: client.AppsV1Api, namespace: str
) -> None:
    labels = {"app": "node"}
    body = {
        "apiVersion": "apps/v1",
        "kind": "StatefulSet",
        "metadata": {"name": "node"},
        "spec": {
            "replicas": 2,
            "serviceName": "node",
            "selector": {"matchLabels": labels},
            "template": _pod_template(labels),
        },
    }
    apps.create_namespaced_stateful_set(namespace, client.V1StatefulSet.model_validate(body))
    cluster.kubectl("rollout", "status", "statefulset/node", "-n", namespace, "--timeout=90s")
    before_status = apps.read_namespaced_stateful_set("node", namespace).status
    assert before_status is not None
    before = before_status.current_revision

    apps.patch_namespaced_stateful_set(
        "node",
        namespace,
        {"spec": {"template": {"metadata": {"annotations": {"restartedAt": "now"}}}}},
    )
    # A rolling update deletes each pod and waits for its replacement: kwok must honour
    # the deletions for this to finish.
    cluster.kubectl("rollout", "status", "statefulset/node", "-n", namespace, "--timeout=90s")
    st = apps.read_namespaced_stateful_set("node", namespace).status
    assert st is not None
    assert st.update_revision != before
    assert st.current_revision == st.update_revision
    assert st.ready_replicas == 2
    pods = _ready_pods(core, namespace, "app=node")
    assert sorted(_name(p) for p in pods) == ["node-0", "node-1"]
    assert {_labels(p)["controller-revision-hash"] for p in pods} == {st.update_revision}


def test_daemonset_runs_on_windows_nodes_only(
    cluster: E2ECluster, core: client.CoreV1Api, apps: client.AppsV1Api, namespace: str
) -> None:
    if not cluster.has_windows_nodes:
        pytest.skip(f"the {cluster.backend} cluster has no Windows nodes")
    labels = {"app": "agent"}
    template = _pod_template(
        labels,
        nodeSelector={"kubernetes.io/os": "windows"},
        tolerations=[{"key": "os", "operator": "Equal", "value": "windows"}],
    )
    body = {
        "apiVersion": "apps/v1",
        "kind": "DaemonSet",
        "metadata": {"name": "agent"},
        "spec": {"selector": {"matchLabels": labels}, "template": template},
    }
    apps.create_namespaced_daemon_set(namespace, client.V1DaemonSet.model_validate(body))

    def ready() -> bool:
        st = apps.read_namespaced_daemon_set_status("agent", namespace).status
        assert st is not None
        return bool(st.desired_number_scheduled == 2 and st.number_ready == 2)

    wait_for(ready, what="DaemonSet with 2 Ready pods")
    pods = _ready_pods(core, namespace, "app=agent")
    node_os = _node_os(core)
    assert len(pods) == 2
    assert {node_os[_node_name(p)] for p in pods} == {"windows"}
    assert len({_node_name(p) for p in pods}) == 2


def _cr(namespace: str, name: str, **spec: Any) -> str:
    base: dict[str, Any] = {
        "provider": "PEM",
        "application": {"type": "Cluster", "name": "CB_Cluster"},
        "trustedCA": {"sources": [{"secret": {"name": "genesys-ca", "key": "ca.crt"}}]},
    }
    base.update(spec)
    obj = {
        "apiVersion": "tls.cobrowse.io/v1alpha1",
        "kind": "CobrowseTLS",
        "metadata": {"name": name, "namespace": namespace},
        "spec": base,
    }
    return yaml.safe_dump(obj)


@pytest.fixture
def crd(cluster: E2ECluster) -> Path:
    assert CRD_FILE.is_file(), f"{CRD_FILE.relative_to(REPO)} is missing"
    cluster.kubectl("apply", "--server-side", "-f", str(CRD_FILE))
    cluster.kubectl("wait", "--for=condition=Established", f"crd/{CRD_NAME}", "--timeout=30s")
    return CRD_FILE


def test_crd_installs_and_validates(cluster: E2ECluster, crd: Path, namespace: str) -> None:
    def explain() -> str:
        r = cluster.kubectl("explain", "cobrowsetls.spec.truststore", check=False)
        return r.stdout if r.returncode == 0 else ""

    # Discovery of a fresh CRD can lag its Established condition by a moment.
    text = wait_for(explain, timeout=30, what="kubectl explain to know cobrowsetls")
    assert "DESCRIPTION:" in text
    assert "FIELDS:" in text
    assert "<no description>" not in text.split("FIELDS:")[0]

    def create(manifest: str) -> tuple[int, str]:
        r = cluster.kubectl("create", "--dry-run=server", "-f", "-", stdin=manifest, check=False)
        return r.returncode, r.stdout + r.stderr

    code, out = create(_cr(namespace, "good"))
    assert code == 0, (
        f"the baseline object must be valid, else the checks below prove nothing:\n{out}"
    )

    code, out = create(_cr(namespace, "bad-provider", provider="Bogus"))
    assert code != 0
    assert "spec.provider" in out
    assert "Unsupported value" in out

    bad_app = {"type": "Cluster", "name": "CB_Cluster", "solutionControlServer": True}
    code, out = create(_cr(namespace, "bad-app", application=bad_app))
    assert code != 0
    assert "solutionControlServer" in out
