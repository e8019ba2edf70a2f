"""The Helm chart on a real control plane: install, least-privilege RBAC, upgrade, uninstall.

The chart's Deployment lands on kwok nodes (its pod becomes Ready without running anything;
on kind it gets no replicas: test_kind_pods.py runs the real image), so the operator itself
runs here as a local process, with the chart ServiceAccount's token and the chart
Deployment's own arguments: whatever it manages to do, it does with exactly the rights the
chart grants.
"""

from __future__ import annotations

import contextlib
import json
import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client, config
from kubernetes.client import ApiException

import pki as pkim
from chart import helm_support
from chart.helm_support import find_helm
from e2e.cluster_backends import E2ECluster
from e2e.operator_support import (
    Api,
    OperatorProcess,
    cobrowse_tls,
    condition,
    deployment,
    policy_denies,
    raw,
    secret,
    service_account_kubeconfig,
    wait_for,
)

pytestmark = pytest.mark.skipif(
    os.environ.get("E2E_OPERATOR") == "external",
    reason="an operator installed in the cluster is running: a second one would race with it",
)

INSTANCE = "app.kubernetes.io/instance"
# Everything the chart can create (cluster-scoped and namespaced), to look for orphans.
CHART_KINDS = (
    "serviceaccounts",
    "services",
    "deployments.apps",
    "roles.rbac.authorization.k8s.io",
    "rolebindings.rbac.authorization.k8s.io",
    "clusterroles.rbac.authorization.k8s.io",
    "clusterrolebindings.rbac.authorization.k8s.io",
    "poddisruptionbudgets.policy",
    "validatingadmissionpolicies.admissionregistration.k8s.io",
    "validatingadmissionpolicybindings.admissionregistration.k8s.io",
)


@pytest.fixture(scope="module")
def helm() -> str:
    return find_helm()


@pytest.fixture
def api(cluster: E2ECluster) -> Api:
    return Api(cluster.api_client)


class Namespaces:
    """Namespaces of one test, deleted afterwards."""

    def __init__(self, core: client.CoreV1Api) -> None:
        self.core = core
        self.created: list[str] = []

    def new(self, prefix: str) -> str:
        name = f"chart-{prefix}-{uuid.uuid4().hex[:6]}"
        self.core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=name)))
        self.created.append(name)
        return name

    def cleanup(self) -> None:
        for name in self.created:
            with contextlib.suppress(ApiException):
                self.core.delete_namespace(name)


@pytest.fixture
def namespaces(core: client.CoreV1Api) -> Iterator[Namespaces]:
    ns = Namespaces(core)
    try:
        yield ns
    finally:
        ns.cleanup()


class Release(helm_support.Release):
    """One helm release of the chart on the test cluster, and what it holds."""

    def __init__(self, helm: str, cluster: E2ECluster, namespace: str) -> None:
        # On kind, real nodes would run the chart's pod too (test_kind_pods.py tests that
        # one): the local process stays the only operator.
        base = ("replicaCount=0",) if cluster.backend == "kind" else ()
        super().__init__(helm, cluster.kubeconfig, namespace, "cbtls", *base)
        self.cluster = cluster

    def manifest_objects(self) -> set[tuple[str, str, str]]:
        """(kind, namespace, name) of what helm says the release holds right now."""
        docs = yaml.safe_load_all(self.run("get", "manifest", self.name))
        return {
            (d["kind"], d["metadata"].get("namespace", ""), d["metadata"]["name"])
            for d in docs
            if d
        }

    def live_objects(self) -> set[tuple[str, str, str]]:
        """(kind, namespace, name) of every object in the cluster labelled with this release."""
        found: set[tuple[str, str, str]] = set()
        for kind in CHART_KINDS:
            out = self.cluster.kubectl(
                "get", kind, "-A", "-l", f"{INSTANCE}={self.name}", "-o", "json"
            ).stdout
            for item in json.loads(out)["items"]:
                meta = item["metadata"]
                found.add((item["kind"], meta.get("namespace", ""), meta["name"]))
        return found

    def deployment_args(self) -> list[str]:
        apps = client.AppsV1Api(self.cluster.api_client)
        deployment = raw(apps.read_namespaced_deployment, self.fullname, self.namespace)
        args = [str(a) for a in deployment["spec"]["template"]["spec"]["containers"][0]["args"]]
        assert args[0] == "run"
        return args[1:]


def release(
    helm: str, cluster: E2ECluster, namespace: str
) -> contextlib.AbstractContextManager[Release]:
    return helm_support.installed_after(Release(helm, cluster, namespace))


def can(
    api_client: client.ApiClient,
    verb: str,
    resource: str,
    namespace: str = "",
    *,
    group: str = "",
    subresource: str = "",
) -> bool:
    """SelfSubjectAccessReview: may the client's identity do this? (namespace "": cluster-wide)"""
    review = client.V1SelfSubjectAccessReview(
        spec=client.V1SelfSubjectAccessReviewSpec(
            resource_attributes=client.V1ResourceAttributes(
                verb=verb,
                resource=resource,
                group=group or None,
                subresource=subresource or None,
                namespace=namespace or None,
            )
        )
    )
    result = raw(client.AuthorizationV1Api(api_client).create_self_subject_access_review, review)
    return bool(result["status"].get("allowed"))


def local_operator_args(chart_args: list[str]) -> list[str]:
    """The chart's flags minus the listeners (the local process needs no probe ports)."""
    dropped = ("--liveness=", "--metrics-port=", "--log-format=")
    return [a for a in chart_args if not a.startswith(dropped)]


def ready(api: Api, ns: str, name: str) -> dict[str, Any] | None:
    obj = api.get("CobrowseTLS", ns, name)
    cond = condition(obj, "Ready")
    gen = (obj or {}).get("metadata", {}).get("generation")
    if cond and cond["status"] == "True" and obj and obj["status"].get("observedGeneration") == gen:
        return obj
    return None


def create_deployment(apps: client.AppsV1Api, namespace: str, name: str) -> None:
    raw(apps.create_namespaced_deployment, namespace, deployment(namespace, name))


def pem_cr(namespace: str, name: str, source: str, *workloads: str) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "provider": "PEM",
        "application": {"type": "Cluster", "name": "CB_Cluster"},
        "trustedCA": {"sources": [{"secret": {"name": source, "key": "ca.crt"}}]},
    }
    if workloads:
        spec["workloads"] = [{"kind": "Deployment", "name": w} for w in workloads]
    return cobrowse_tls(namespace, name, spec)


def mscapi_spec(source: str) -> dict[str, Any]:
    return {
        "provider": "MSCAPI",
        "application": {"type": "Server", "name": "CB_Server", "version": "8.5.000"},
        "trustedCA": {"sources": [{"secret": {"name": source, "key": "ca.crt"}}]},
        "windows": {"store": "Root", "location": "LocalMachine"},
    }


def condition_is(api: Api, ns: str, name: str, type_: str, status: str) -> bool:
    cond = condition(api.get("CobrowseTLS", ns, name), type_)
    return bool(cond and cond["status"] == status)


def assert_no_permission_errors(log: str) -> None:
    for marker in ("Forbidden", "HTTP 403", "Not enough permissions"):
        assert marker not in log, f"the operator hit {marker!r} with the chart's rights:\n{log}"


def wait_no_orphans(r: Release) -> None:
    wait_for(f"no objects of release {r.name} left", lambda: not r.live_objects(), timeout=60)


# -- namespaced mode ------------------------------------------------------------------------------


def test_namespaced_install_least_privilege_upgrade_uninstall(
    helm: str,
    cluster: E2ECluster,
    api: Api,
    apps: client.AppsV1Api,
    namespaces: Namespaces,
    pki: pkim.PKI,
    tmp_path: Path,
) -> None:
    system = namespaces.new("system")
    watched = namespaces.new("watched")
    other = namespaces.new("other")
    ca = pkim.pem(pki.root)
    # Sources in both namespaces, written by an admin.
    api.apply(secret(watched, "genesys-ca", {"ca.crt": ca}))
    api.apply(secret(other, "genesys-ca", {"ca.crt": ca}))
    api.apply(secret(other, "private", {"password": b"not for the operator"}))

    with release(helm, cluster, system) as r:
        notes = r.install(
            f"watchNamespaces={{{watched}}}",
            f"mscapi.namespaces={{{watched}}}",
            "operator.resyncSeconds=5",
            "operator.restartWindowSeconds=0.2",
        )
        assert f"The operator watches only: {watched}." in notes
        crd = raw(api.ext.read_custom_resource_definition, "cobrowsetlses.tls.cobrowse.io")
        assert crd["metadata"]["name"] == "cobrowsetlses.tls.cobrowse.io"
        assert r.live_objects() == r.manifest_objects()

        kubeconfig = service_account_kubeconfig(cluster, system, r.fullname, tmp_path / "sa")
        sa = config.new_client_from_config(config_file=str(kubeconfig))  # type: ignore[no-untyped-call]

        # What the ServiceAccount may do: everything it needs where CRs live, nothing elsewhere.
        wait_for("the Role in effect", lambda: can(sa, "get", "secrets", watched))
        assert can(sa, "watch", "secrets", watched)
        assert not can(sa, "get", "secrets", other)
        assert not can(sa, "list", "secrets")  # cluster-wide
        assert not can(sa, "get", "secrets", system)
        assert not can(sa, "delete", "secrets", watched)
        assert not can(sa, "update", "secrets", watched)
        assert not can(sa, "delete", "deployments", watched, group="apps")
        assert can(sa, "list", "customresourcedefinitions", group="apiextensions.k8s.io")
        assert not can(sa, "get", "cobrowsetlses", other, group="tls.cobrowse.io")
        assert can(sa, "patch", "deployments", watched, group="apps")
        assert not can(sa, "patch", "deployments", other, group="apps")
        with pytest.raises(ApiException) as denied:
            client.CoreV1Api(sa).read_namespaced_secret("private", other)
        assert denied.value.status == 403
        with pytest.raises(ApiException) as denied:
            client.CoreV1Api(sa).list_secret_for_all_namespaces()
        assert denied.value.status == 403
        # Where RBAC lets it write, the chart's admission policy still refuses what the
        # operator does not render (tests/e2e/test_policy.py has every case).
        wait_for("the admission policy in force", lambda: policy_denies(sa, watched))

        create_deployment(apps, watched, "cobrowse")
        args = local_operator_args(r.deployment_args())
        assert f"--namespace={watched}" in args
        proc = OperatorProcess(kubeconfig, tmp_path / "operator.log", *args)
        proc.start()
        try:
            api.apply(pem_cr(watched, "cobrowse", "genesys-ca", "cobrowse"))
            api.apply(pem_cr(other, "cobrowse", "genesys-ca"))
            obj = wait_for("Ready with the chart's rights", lambda: ready(api, watched, "cobrowse"))
            restarted = condition(obj, "WorkloadsRestarted")
            assert restarted is not None
            assert restarted["reason"] == "RolloutComplete"
            assert api.get("Secret", watched, "cobrowse-truststore") is not None
            assert api.get("ConfigMap", watched, "cobrowse-security") is not None
            workload = raw(apps.read_namespaced_deployment, "cobrowse", watched)
            pod_meta = workload["spec"]["template"]["metadata"]
            assert "tls.cobrowse.io/restarted-for" in (pod_meta.get("annotations") or {})
            # The CR in the other namespace is out of reach: never reconciled, no outputs.
            assert not (api.get("CobrowseTLS", other, "cobrowse") or {}).get("status")
            assert api.get("ConfigMap", other, "cobrowse-security") is None

            # MSCAPI (where Windows nodes exist: not on kind): the agent DaemonSet (create,
            # patch, delete), its pods (list) and the cleanup finalizer (a patch of the CR),
            # with the same rights.
            if cluster.has_windows_nodes:
                api.apply(cobrowse_tls(watched, "win", mscapi_spec("genesys-ca")))
                wait_for(
                    "WindowsTrustSynced with the chart's rights",
                    lambda: condition_is(api, watched, "win", "WindowsTrustSynced", "True"),
                    timeout=90,
                )
                agent = raw(apps.read_namespaced_daemon_set, "win-mscapi-agent", watched)
                agent_image = agent["spec"]["template"]["spec"]["containers"][0]["image"]
                assert agent_image == "cobrowse-tls-agent:0.1.0"  # the chart's agent.image
                api.delete("CobrowseTLS", watched, "win")
                wait_for(
                    "the MSCAPI CR cleaned up and gone",
                    lambda: api.get("CobrowseTLS", watched, "win") is None,
                    timeout=90,
                )
                wait_for(
                    "the agent DaemonSet removed",
                    lambda: not raw(apps.list_namespaced_daemon_set, watched)["items"],
                    timeout=60,
                )
            assert_no_permission_errors(proc.log())
        finally:
            proc.stop()

        # Upgrade: move the watch to the other namespace. The old Role goes, the new one comes.
        r.upgrade(f"watchNamespaces={{{other}}}")
        live = r.live_objects()
        assert live == r.manifest_objects()
        roles = {(ns, name) for kind, ns, name in live if kind == "Role"}
        assert roles == {(other, r.fullname)}
        # RBAC changes reach the authorizer through its informers: allow a moment.
        wait_for("the new Role in effect", lambda: can(sa, "get", "secrets", other))
        wait_for("the old Role gone", lambda: not can(sa, "get", "secrets", watched))

        r.uninstall()
        wait_no_orphans(r)
        wait_for(
            "the operator's ReplicaSets to be garbage-collected",
            lambda: not raw(apps.list_namespaced_replica_set, system)["items"],
            timeout=60,
        )
        # The CRD (from crds/), the CR and its outputs stay.
        assert raw(api.ext.read_custom_resource_definition, "cobrowsetlses.tls.cobrowse.io")
        assert api.get("CobrowseTLS", watched, "cobrowse") is not None
        assert api.get("Secret", watched, "cobrowse-truststore") is not None
        assert api.get("ConfigMap", watched, "cobrowse-security") is not None
        # The deleted ServiceAccount's token opens nothing any more (401 once the
        # authenticator's cache notices the deletion, 403 until then: its bindings are gone).
        with pytest.raises(ApiException) as gone:
            client.CoreV1Api(sa).read_namespaced_secret("genesys-ca", watched)
        assert gone.value.status in (401, 403)


# -- cluster-wide mode ----------------------------------------------------------------------------


def test_cluster_wide_install_reconciles_and_uninstalls(
    helm: str,
    cluster: E2ECluster,
    api: Api,
    namespaces: Namespaces,
    pki: pkim.PKI,
    tmp_path: Path,
) -> None:
    system = namespaces.new("system")
    tenant = namespaces.new("tenant")
    api.apply(secret(tenant, "genesys-ca", {"ca.crt": pkim.pem(pki.root)}))

    with release(helm, cluster, system) as r:
        notes = r.install("operator.resyncSeconds=5", "podDisruptionBudget.enabled=true")
        assert "Mode: cluster-wide." in notes
        assert r.live_objects() == r.manifest_objects()
        kinds = {kind for kind, _, _ in r.live_objects()}
        assert {"ClusterRole", "ClusterRoleBinding", "PodDisruptionBudget"} <= kinds
        assert "Role" not in kinds

        kubeconfig = service_account_kubeconfig(cluster, system, r.fullname, tmp_path / "sa")
        sa = config.new_client_from_config(config_file=str(kubeconfig))  # type: ignore[no-untyped-call]
        wait_for("the ClusterRole in effect", lambda: can(sa, "list", "secrets"))
        tls_group = "tls.cobrowse.io"
        assert can(sa, "patch", "cobrowsetlses", tenant, group=tls_group, subresource="status")
        assert not can(sa, "update", "cobrowsetlses", tenant, group=tls_group)
        assert not can(sa, "delete", "cobrowsetlses", tenant, group=tls_group)
        assert not can(sa, "delete", "secrets", tenant)
        assert not can(sa, "create", "pods", tenant)
        wait_for("the admission policy in force", lambda: policy_denies(sa, tenant))
        assert not can(sa, "create", "daemonsets", tenant, group="apps")  # no MSCAPI allowed

        args = local_operator_args(r.deployment_args())
        assert not any(a.startswith("--namespace") for a in args)
        proc = OperatorProcess(kubeconfig, tmp_path / "operator.log", *args)
        proc.start()
        try:
            api.apply(pem_cr(tenant, "cobrowse", "genesys-ca"))
            wait_for("Ready with the chart's rights", lambda: ready(api, tenant, "cobrowse"))
            assert_no_permission_errors(proc.log())
        finally:
            proc.stop()

        r.uninstall()
        wait_no_orphans(r)
        assert api.get("CobrowseTLS", tenant, "cobrowse") is not None
        assert api.get("Secret", tenant, "cobrowse-truststore") is not None
