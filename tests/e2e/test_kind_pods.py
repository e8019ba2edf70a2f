"""Real pods on kind: the operator image installed by the chart, and a Co-browse stand-in.

Only on E2E_CLUSTER=kind (the local control plane's nodes are fake). The kind stage
(hack/kind-e2e.sh) builds the images and the kind backend loads them into the nodes:
E2E_OPERATOR_IMAGE (`make image`) and E2E_STANDIN_IMAGE (images/cobrowse-standin: Debian's
OpenJDK and OpenSSL). No operator process runs on the test machine here: the operator is the
pod the chart starts, with its ServiceAccount's token.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import time
import uuid
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client
from kubernetes.client import ApiException

import pki as pkim
from chart import helm_support
from chart.helm_support import Release, find_helm
from e2e.cluster_backends import E2ECluster
from e2e.operator_support import (
    Api,
    cobrowse_tls,
    condition,
    deployment,
    raw,
    secret,
    secret_bytes,
    wait_for,
)

RESTARTED_FOR = "tls.cobrowse.io/restarted-for"
APPROVE = "tls.cobrowse.io/approve-restart"
SECURITY_DIR = "/opt/genesys/cobrowse/security"
CONFIG_DIR = "/opt/genesys/cobrowse/config"
JKS_PATH = f"{SECURITY_DIR}/truststore.jks"
SERVER_PORT = 8443
# A real OpenSSL TLS server; it reads its certificate once, at start.
SERVER_COMMAND = [
    *("openssl", "s_server", "-www", "-accept", str(SERVER_PORT)),
    *("-cert", "/tls/tls.crt", "-key", "/tls/tls.key"),
]


@pytest.fixture(autouse=True)
def kind_only(cluster: E2ECluster) -> None:
    # E2E_CLUSTER=existing on a cluster of `make kind-up` (images loaded) counts as kind.
    loaded = cluster.backend == "existing" and os.environ.get("E2E_OPERATOR_IMAGE")
    if cluster.backend != "kind" and not loaded:
        pytest.skip(f"real pods need kind (E2E_CLUSTER=kind), not the {cluster.backend} cluster")


@pytest.fixture
def api(cluster: E2ECluster) -> Api:
    a = Api(cluster.api_client)
    a.install_crd()
    return a


def image_values() -> list[str]:
    image = os.environ.get("E2E_OPERATOR_IMAGE", "")
    if ":" not in image:
        pytest.fail("E2E_OPERATOR_IMAGE (repository:tag of `make image`) is not set", pytrace=False)
    repository, tag = image.rsplit(":", 1)
    # Never: the image was loaded into the nodes, no registry could serve it.
    return [f"image.repository={repository}", f"image.tag={tag}", "image.pullPolicy=Never"]


def standin_image() -> str:
    image = os.environ.get("E2E_STANDIN_IMAGE", "")
    if not image:
        pytest.fail("E2E_STANDIN_IMAGE (hack/images.sh standin) is not set", pytrace=False)
    return image


def record(figure: str, value: str) -> None:
    """A measured figure for the stage's summary (E2E_FIGURES), never an assertion."""
    if path := os.environ.get("E2E_FIGURES"):
        with Path(path).open("a") as f:
            f.write(f"{figure}: {value}\n")


class Diagnostics:
    """Namespaces of one test; on failure their events and the operator pods' logs are printed."""

    def __init__(self, cluster: E2ECluster) -> None:
        self.cluster = cluster
        self.namespaces: list[str] = []

    def new_namespace(self, prefix: str, labels: dict[str, str] | None = None) -> str:
        name = f"kind-{prefix}-{uuid.uuid4().hex[:6]}"
        meta = client.V1ObjectMeta(name=name, labels=labels)
        client.CoreV1Api(self.cluster.api_client).create_namespace(
            client.V1Namespace(metadata=meta)
        )
        self.namespaces.append(name)
        return name

    def dump(self) -> str:
        out = []
        for ns in self.namespaces:
            events = self.cluster.kubectl(
                "get", "events", "-n", ns, "--sort-by=.lastTimestamp", check=False
            )
            out.append(f"--- events in {ns}:\n{events.stdout}{events.stderr}")
            pods = self.cluster.kubectl(
                "get", "pods", "-n", ns, "-l", "app.kubernetes.io/name=cobrowse-tls-operator",
                "-o", "name", check=False,
            ).stdout.split()  # fmt: skip
            for pod in pods:
                logs = self.cluster.kubectl(
                    "logs", "-n", ns, pod, "--all-containers", "--tail=200", check=False
                )
                out.append(f"--- logs of {ns}/{pod}:\n{logs.stdout}{logs.stderr}")
        return "\n".join(out)

    def cleanup(self) -> None:
        for ns in self.namespaces:
            with contextlib.suppress(ApiException):
                client.CoreV1Api(self.cluster.api_client).delete_namespace(ns)


@pytest.fixture
def diag(request: pytest.FixtureRequest, cluster: E2ECluster) -> Iterator[Diagnostics]:
    d = Diagnostics(cluster)
    try:
        yield d
    finally:
        report = getattr(request.node, "rep_call", None)
        if report is None or report.failed:
            print(d.dump())
        d.cleanup()


def release(cluster: E2ECluster, namespace: str) -> contextlib.AbstractContextManager[Release]:
    """A helm release of the chart with the real image."""
    r = Release(find_helm(), cluster.kubeconfig, namespace, "op", *image_values())
    return helm_support.installed_after(r)


def operator_pods(cluster: E2ECluster, r: Release) -> list[dict[str, Any]]:
    pods = raw(
        client.CoreV1Api(cluster.api_client).list_namespaced_pod,
        r.namespace,
        label_selector=f"app.kubernetes.io/instance={r.name}",
    )["items"]
    return [p for p in pods if not p["metadata"].get("deletionTimestamp")]


def live_and_ready(pod: dict[str, Any]) -> bool:
    status = pod.get("status") or {}
    conditions = status.get("conditions") or []
    ready = any(c["type"] == "Ready" and c["status"] == "True" for c in conditions)
    return status.get("phase") == "Running" and ready


def pem_cr(namespace: str, name: str, source: str) -> dict[str, Any]:
    return cobrowse_tls(
        namespace,
        name,
        {
            "provider": "PEM",
            "application": {"type": "Cluster", "name": "CB_Cluster"},
            "trustedCA": {"sources": [{"secret": {"name": source, "key": "ca.crt"}}]},
        },
    )


def ready_cr(api: Api, ns: str, name: str) -> dict[str, Any] | None:
    obj = api.get("CobrowseTLS", ns, name)
    cond = condition(obj, "Ready")
    gen = (obj or {}).get("metadata", {}).get("generation")
    if cond and cond["status"] == "True" and obj and obj["status"].get("observedGeneration") == gen:
        return obj
    return None


def trust_pem(api: Api, ns: str, name: str) -> bytes:
    obj = api.get("Secret", ns, name)
    return secret_bytes(obj, "ca.pem") if obj else b""


def check_operator_pod(cluster: E2ECluster, r: Release) -> dict[str, Any]:
    """The single operator pod: live, ready, unprivileged, on its ServiceAccount's token."""
    (pod,) = wait_for("one live operator pod", lambda: operator_pods(cluster, r), timeout=60)
    pod = wait_for(
        "the operator pod Running and Ready",
        lambda: next((p for p in operator_pods(cluster, r) if live_and_ready(p)), None),
        timeout=120,
    )
    spec = pod["spec"]
    (container,) = spec["containers"]
    assert container["image"] == os.environ["E2E_OPERATOR_IMAGE"]
    assert container["livenessProbe"]
    assert container["readinessProbe"]
    (status,) = pod["status"]["containerStatuses"]
    assert status["ready"]
    assert status["restartCount"] == 0
    sc = container["securityContext"]
    assert sc["readOnlyRootFilesystem"] is True
    assert sc["capabilities"]["drop"] == ["ALL"]
    assert spec["serviceAccountName"] == r.fullname
    # The in-cluster credentials: the projected ServiceAccount token, no kubeconfig anywhere.
    assert not any(e["name"] == "KUBECONFIG" for e in container.get("env") or [])
    mounts = {m["mountPath"] for m in container.get("volumeMounts") or []}
    assert "/var/run/secrets/kubernetes.io/serviceaccount" in mounts
    uid = cluster.kubectl("exec", "-n", r.namespace, pod["metadata"]["name"], "--", "id", "-u")
    assert uid.stdout.strip() == "65532"
    return pod


def operator_log(cluster: E2ECluster, r: Release) -> str:
    return cluster.kubectl("logs", "-n", r.namespace, f"deployment/{r.fullname}").stdout


@pytest.mark.parametrize("mode", ["namespaced", "cluster-wide"])
def test_chart_runs_the_real_image_in_a_restricted_namespace(
    cluster: E2ECluster, api: Api, diag: Diagnostics, pki: pkim.PKI, mode: str
) -> None:
    restricted = {
        "pod-security.kubernetes.io/enforce": "restricted",
        "pod-security.kubernetes.io/enforce-version": "latest",
    }
    system = diag.new_namespace("system", restricted)
    tenant = diag.new_namespace("tenant")
    other = diag.new_namespace("other")
    for ns in (tenant, other):
        api.apply(secret(ns, "genesys-ca", {"ca.crt": pkim.pem(pki.root)}))
    sets = ["operator.resyncSeconds=5"]
    if mode == "namespaced":
        sets.append(f"watchNamespaces={{{tenant}}}")

    with release(cluster, system) as r:
        r.install(*sets)
        first = check_operator_pod(cluster, r)

        api.apply(pem_cr(tenant, "cobrowse", "genesys-ca"))
        api.apply(pem_cr(other, "cobrowse", "genesys-ca"))
        wait_for("Ready, reconciled by the pod", lambda: ready_cr(api, tenant, "cobrowse"), 90)
        assert api.get("Secret", tenant, "cobrowse-truststore") is not None
        if mode == "namespaced":
            time.sleep(6)  # a resync period: the CR out of reach stays untouched
            assert not (api.get("CobrowseTLS", other, "cobrowse") or {}).get("status")
            assert api.get("ConfigMap", other, "cobrowse-security") is None
        else:
            wait_for("the other CR Ready too", lambda: ready_cr(api, other, "cobrowse"), 90)
        log = operator_log(cluster, r)
        for marker in ("Forbidden", "HTTP 403", "Not enough permissions"):
            assert marker not in log, f"the operator hit {marker!r}:\n{log}"

        # helm upgrade: a changed value rolls the Deployment to a new pod, which takes over.
        r.upgrade("operator.resyncSeconds=7")
        second = check_operator_pod(cluster, r)
        assert second["metadata"]["uid"] != first["metadata"]["uid"]
        args = second["spec"]["containers"][0]["args"]
        assert any(a in ("--resync=7", "--resync=7.0") for a in args), args
        api.apply(secret(tenant, "genesys-ca", {"ca.crt": pkim.pem(pki.root, pki.other_root)}))
        wait_for(
            "the new pod rewrites the trust store",
            lambda: pki.other_root.pem in trust_pem(api, tenant, "cobrowse-truststore"),
            timeout=90,
        )

        # helm uninstall: the operator and its RBAC go; the CRD, the CRs and outputs stay.
        r.uninstall()
        wait_for("the operator pod gone", lambda: not operator_pods(cluster, r), timeout=90)
        assert raw(api.ext.read_custom_resource_definition, "cobrowsetlses.tls.cobrowse.io")
        assert api.get("CobrowseTLS", tenant, "cobrowse") is not None
        assert api.get("Secret", tenant, "cobrowse-truststore") is not None
        assert api.get("ConfigMap", tenant, "cobrowse-security") is not None


# -- the mission end to end: a JVM that reads the operator's outputs as the docs mount them ------


def server_pair(ca_name: str, namespace: str) -> tuple[pkim.CertKey, pkim.CertKey]:
    """A CA and the in-cluster TLS server's certificate signed by it (DNS names of its Service)."""
    now = pkim.pki().now
    start, end = now - timedelta(days=1), now + timedelta(days=30)
    ca = pkim.make_cert(ca_name, not_before=start, not_after=end)
    hosts = ("tls-server", f"tls-server.{namespace}", f"tls-server.{namespace}.svc")
    leaf = pkim.make_cert(
        "tls-server", issuer=ca, ca=False, hosts=hosts, not_before=start, not_after=end
    )
    return ca, leaf


def tls_server(namespace: str) -> list[dict[str, Any]]:
    pod = {
        "containers": [
            {
                "name": "openssl",
                "image": standin_image(),
                "command": SERVER_COMMAND,
                "ports": [{"containerPort": SERVER_PORT}],
                "volumeMounts": [{"name": "tls", "mountPath": "/tls"}],
                "readinessProbe": {"tcpSocket": {"port": SERVER_PORT}},
            }
        ],
        "volumes": [{"name": "tls", "secret": {"secretName": "tls-server"}}],
    }
    return [
        deployment(namespace, "tls-server", pod),
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": "tls-server", "namespace": namespace},
            "spec": {"selector": {"app": "tls-server"}, "ports": [{"port": SERVER_PORT}]},
        },
    ]


def standin(namespace: str, name: str, cr: str) -> dict[str, Any]:
    """The Co-browse stand-in, mounting the outputs as examples/gitops/ (cobrowse-node.yaml)."""
    # Co-browse's start script sources setenv.sh; its JVM takes the trust store from it.
    start = (
        f". {CONFIG_DIR}/setenv.sh && exec java -XX:-UsePerfData"
        ' -Djavax.net.ssl.trustStore="$TRUSTED_CA"'
        ' -Djavax.net.ssl.trustStorePassword="${TRUSTSTORE_PASSWORD:-}"'
        " -cp /opt/standin TlsProbe"
    )
    pod = {
        "terminationGracePeriodSeconds": 2,
        "containers": [
            {
                "name": "cobrowse",
                "image": standin_image(),
                "command": ["/bin/sh", "-c", start],
                "env": [
                    {"name": "PROBE_HOST", "value": "tls-server"},
                    {"name": "PROBE_PORT", "value": str(SERVER_PORT)},
                    {"name": "PROBE_INTERVAL_MS", "value": "1000"},
                ],
                "volumeMounts": [
                    {"name": "truststore", "mountPath": SECURITY_DIR, "readOnly": True},
                    {"name": "security", "mountPath": CONFIG_DIR, "readOnly": True},
                ],
            }
        ],
        "volumes": [
            {"name": "truststore", "secret": {"secretName": f"{cr}-truststore"}},
            {"name": "security", "configMap": {"name": f"{cr}-security"}},
        ],
    }
    return deployment(namespace, name, pod)


def standin_cr(namespace: str, name: str, provider: str, workload: str) -> dict[str, Any]:
    return cobrowse_tls(
        namespace,
        name,
        {
            "provider": provider,
            "application": {"type": "Cluster", "name": "CB_Cluster"},
            "trustedCA": {"sources": [{"secret": {"name": "genesys-ca", "key": "ca.crt"}}]},
            "truststore": {"mountPath": SECURITY_DIR},
            "workloads": [{"kind": "Deployment", "name": workload}],
            # Manual: the test looks at the running JVM after the new material is mounted and
            # before the operator restarts it, then approves the restart.
            "restart": {"policy": "Manual"},
        },
    )


class Workload:
    def __init__(self, cluster: E2ECluster, api: Api, namespace: str, cr: str, name: str) -> None:
        self.cluster, self.api, self.ns, self.cr, self.name = cluster, api, namespace, cr, name
        self.apps = client.AppsV1Api(cluster.api_client)

    def deployment(self) -> dict[str, Any]:
        return raw(self.apps.read_namespaced_deployment, self.name, self.ns)

    def restarted_for(self) -> str | None:
        meta = self.deployment()["spec"]["template"]["metadata"]
        value = (meta.get("annotations") or {}).get(RESTARTED_FOR)
        return str(value) if value else None

    def replica_sets(self) -> int:
        items = raw(
            self.apps.list_namespaced_replica_set, self.ns, label_selector=f"app={self.name}"
        )["items"]
        return len(items)

    def pods(self) -> list[str]:
        pods = raw(
            client.CoreV1Api(self.cluster.api_client).list_namespaced_pod,
            self.ns,
            label_selector=f"app={self.name}",
        )["items"]
        live = [p for p in pods if not p["metadata"].get("deletionTimestamp")]
        return [p["metadata"]["name"] for p in live if live_and_ready(p)]

    def pending_hash(self) -> str | None:
        obj = self.api.get("CobrowseTLS", self.ns, self.cr) or {}
        cond = condition(obj, "WorkloadsRestarted")
        if cond and cond.get("reason") == "RestartPending":
            h = (obj.get("status") or {}).get("restart", {}).get("hash")
            return str(h) if h and h in cond.get("message", "") else None
        return None

    def approve(self, h: str) -> None:
        self.api.merge_patch(
            "CobrowseTLS", self.ns, self.cr, {"metadata": {"annotations": {APPROVE: h}}}
        )

    def complete(self) -> bool:
        d = self.deployment()
        st = d.get("status") or {}
        return (
            st.get("observedGeneration") == d["metadata"]["generation"]
            and st.get("updatedReplicas") == st.get("replicas") == st.get("readyReplicas") == 1
        )

    def probe_lines(self, pod: str) -> list[str]:
        out = self.cluster.kubectl("logs", "-n", self.ns, pod, check=False).stdout
        return [line for line in out.splitlines() if line.startswith(("PROBE", "TRUST"))]

    def connected(self, pod: str, issuer: str) -> bool:
        lines = [x for x in self.probe_lines(pod) if x.startswith("PROBE")]
        return bool(lines) and lines[-1].startswith("PROBE ok") and issuer in lines[-1]

    def wait_outputs(self) -> None:
        name = f"{self.cr}-security"
        wait_for(name, lambda: self.api.get("ConfigMap", self.ns, name), timeout=90)

    def single_pod(self) -> str:
        def one() -> str | None:
            pods = self.pods()
            return pods[0] if len(pods) == 1 else None

        return wait_for(f"one ready {self.name} pod", one, timeout=120)

    def wait_connected(self, pod: str, issuer: str) -> None:
        wait_for(
            f"{pod} connected to a server of {issuer}", lambda: self.connected(pod, issuer), 120
        )

    def wait_restarted(self, h: str, old_pod: str | None = None) -> None:
        def done() -> bool:
            moved = old_pod is None or old_pod not in self.pods()
            return self.restarted_for() == h and self.complete() and moved

        wait_for(f"{self.name} restarted for {h}", done, timeout=180)

    def wait_pending(self) -> str:
        return wait_for(f"{self.name}: RestartPending", self.pending_hash, timeout=90)

    def mounted_sha256(self, pod: str, path: str) -> str:
        """sha256 of a file as the running pod sees it ("" while unreadable)."""
        r = self.cluster.kubectl("exec", "-n", self.ns, pod, "--", "sha256sum", path, check=False)
        return r.stdout.split()[0] if r.returncode == 0 and r.stdout else ""


def test_cobrowse_standin_reads_mounted_trust_and_is_restarted_once_on_rotation(
    cluster: E2ECluster, api: Api, diag: Diagnostics
) -> None:
    system = diag.new_namespace("operator", {"pod-security.kubernetes.io/enforce": "restricted"})
    ns = diag.new_namespace("cobrowse")
    ca1, server1 = server_pair("Stand-in Root CA 1", ns)
    ca2, server2 = server_pair("Stand-in Root CA 2", ns)

    def server_secret(leaf: pkim.CertKey) -> dict[str, Any]:
        return secret(ns, "tls-server", {"tls.crt": leaf.pem, "tls.key": leaf.key_pem})

    api.apply(server_secret(server1))
    api.apply(secret(ns, "genesys-ca", {"ca.crt": ca1.pem}))
    with release(cluster, system) as r:
        r.install("operator.resyncSeconds=5", "operator.restartWindowSeconds=0.5")
        check_operator_pod(cluster, r)
        server_list = {"apiVersion": "v1", "kind": "List", "items": tls_server(ns)}
        cluster.kubectl("apply", "-f", "-", stdin=json.dumps(server_list))
        jks = Workload(cluster, api, ns, "cb-jks", "cobrowse-jks")
        pem = Workload(cluster, api, ns, "cb-pem", "cobrowse-pem")
        workloads = (jks, pem)
        for w, provider in ((jks, "JKS"), (pem, "PEM")):
            api.apply(standin_cr(ns, w.cr, provider, w.name))
            w.wait_outputs()
            cluster.kubectl("apply", "-f", "-", stdin=json.dumps(standin(ns, w.name, w.cr)))
        # The operator stamps the workloads it has never restarted: approve that first restart.
        for w in workloads:
            h1 = w.wait_pending()
            w.approve(h1)
            w.wait_restarted(h1)
        issuer1 = "CN=Stand-in Root CA 1"
        pods1 = {w.name: w.single_pod() for w in workloads}
        for w in workloads:
            w.wait_connected(pods1[w.name], issuer1)
        assert jks.probe_lines(pods1[jks.name])[0].startswith("TRUST jks")
        assert pem.probe_lines(pods1[pem.name])[0].startswith("TRUST pem")
        before = {
            w.name: (w.replica_sets(), w.deployment()["metadata"]["generation"]) for w in workloads
        }

        # Rotation: the server gets a certificate from CA 2 (restarted to load it) ...
        api.apply(server_secret(server2))
        cluster.kubectl("rollout", "restart", "-n", ns, "deployment/tls-server")
        cluster.kubectl("rollout", "status", "-n", ns, "deployment/tls-server", "--timeout=120s")
        # ... and the CA Secret is updated. The operator writes the new stores at once.
        changed = time.monotonic()
        api.apply(secret(ns, "genesys-ca", {"ca.crt": ca2.pem}))
        wait_for(
            "the PEM store rewritten",
            lambda: ca2.pem in trust_pem(api, ns, "cb-pem-truststore"),
            timeout=60,
        )
        written = time.monotonic()
        new_pem = hashlib.sha256(trust_pem(api, ns, "cb-pem-truststore")).hexdigest()
        jks_secret = api.get("Secret", ns, "cb-jks-truststore") or {}
        new_jks = hashlib.sha256(secret_bytes(jks_secret, "truststore.jks")).hexdigest()
        # The kubelet refreshes the mounted Secret in the running pods (atomically, by symlink).
        wait_for(
            "the new PEM bundle mounted in the running pod",
            lambda: pem.mounted_sha256(pods1[pem.name], f"{SECURITY_DIR}/ca.pem") == new_pem,
            timeout=180,
            interval=0.5,
        )
        refreshed = time.monotonic()
        record("CA Secret change -> operator wrote the trust store (s)", f"{written - changed:.1f}")
        record(
            "kubelet refresh of the mounted Secret (s after the operator wrote it)",
            f"{refreshed - written:.1f}",
        )
        wait_for(
            "the new JKS mounted in the running pod",
            lambda: jks.mounted_sha256(pods1[jks.name], JKS_PATH) == new_jks,
            timeout=180,
            interval=0.5,
        )
        # The running JVMs still trust only CA 1: the new files are there, they do not read them.
        seen = {w.name: len(w.probe_lines(pods1[w.name])) for w in workloads}
        time.sleep(5)
        for w in workloads:
            fresh = w.probe_lines(pods1[w.name])[seen[w.name] :]
            assert fresh, f"{w.name} printed nothing"
            assert all(x.startswith("PROBE fail") for x in fresh), fresh
            assert w.pods() == [pods1[w.name]]  # nothing restarted yet (policy Manual)

        # Approve: the operator restarts each workload exactly once; the new pods connect.
        approved = {}
        for w in workloads:
            approved[w.name] = w.wait_pending()
            assert approved[w.name] != w.restarted_for()
            w.approve(approved[w.name])
        issuer2 = "CN=Stand-in Root CA 2"
        for w in workloads:
            w.wait_restarted(approved[w.name], old_pod=pods1[w.name])
            w.wait_connected(w.single_pod(), issuer2)
        time.sleep(7)  # more than a resync: no second restart follows
        for w in workloads:
            sets, generation = before[w.name]
            assert w.replica_sets() == sets + 1
            assert w.deployment()["metadata"]["generation"] == generation + 1
