"""Helpers of the operator's end-to-end tests: the operator process and plain-dict API access."""

from __future__ import annotations

import base64
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import pytest
import yaml
from kubernetes import client, config
from kubernetes.client import ApiException

from cobrowse_tls.api import crd, models
from e2e.cluster_backends import E2ECluster

REPO = Path(__file__).resolve().parents[2]
T = TypeVar("T")


def wait_for(
    what: str, probe: Callable[[], T | None], timeout: float = 30.0, interval: float = 0.1
) -> T:
    """Poll until probe() returns something truthy; fail with `what` and the last value."""
    deadline = time.monotonic() + timeout
    last: T | None = None
    while time.monotonic() < deadline:
        last = probe()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what} (last: {last!r})")


class Api:
    """Plain-dict access to the few kinds the tests touch."""

    def __init__(self, api_client: client.ApiClient) -> None:
        self.core = client.CoreV1Api(api_client)
        self.custom = client.CustomObjectsApi(api_client)
        self.ext = client.ApiextensionsV1Api(api_client)

    @staticmethod
    def _json(call: Callable[..., Any], *args: Any, **kw: Any) -> Any:
        return json.loads(call(*args, _preload_content=False, **kw).data)

    def get(self, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
        calls = {
            "Secret": lambda: self._json(self.core.read_namespaced_secret, name, namespace),
            "ConfigMap": lambda: self._json(self.core.read_namespaced_config_map, name, namespace),
            "CobrowseTLS": lambda: self._json(
                self.custom.get_namespaced_custom_object,
                models.GROUP,
                models.VERSION,
                namespace,
                models.PLURAL,
                name,
            ),
        }
        try:
            result: dict[str, Any] = calls[kind]()
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise
        return result

    def apply(self, obj: Mapping[str, Any]) -> dict[str, Any]:
        """Server-side apply as a user would with kubectl apply --server-side."""
        meta = obj["metadata"]
        kw = {
            "field_manager": "e2e-user",
            "force": True,
            "_content_type": "application/apply-patch+yaml",
        }
        call: Callable[..., Any]
        if obj["kind"] == "Secret":
            call = self.core.patch_namespaced_secret
            args: tuple[Any, ...] = (meta["name"], meta["namespace"], dict(obj))
        elif obj["kind"] == "ConfigMap":
            call = self.core.patch_namespaced_config_map
            args = (meta["name"], meta["namespace"], dict(obj))
        else:
            call = self.custom.patch_namespaced_custom_object
            args = (
                models.GROUP,
                models.VERSION,
                meta["namespace"],
                models.PLURAL,
                meta["name"],
                dict(obj),
            )
        result: dict[str, Any] = self._json(call, *args, **kw)
        return result

    def merge_patch(self, kind: str, namespace: str, name: str, patch: Mapping[str, Any]) -> None:
        kw = {"_content_type": "application/merge-patch+json"}
        if kind == "Secret":
            self._json(self.core.patch_namespaced_secret, name, namespace, dict(patch), **kw)
        elif kind == "ConfigMap":
            self._json(self.core.patch_namespaced_config_map, name, namespace, dict(patch), **kw)
        else:
            self._json(
                self.custom.patch_namespaced_custom_object,
                models.GROUP,
                models.VERSION,
                namespace,
                models.PLURAL,
                name,
                dict(patch),
                **kw,
            )

    def delete(self, kind: str, namespace: str, name: str) -> None:
        try:
            if kind == "Secret":
                self.core.delete_namespaced_secret(name, namespace, _preload_content=False)
            elif kind == "ConfigMap":
                self.core.delete_namespaced_config_map(name, namespace, _preload_content=False)
            else:
                self.custom.delete_namespaced_custom_object(
                    models.GROUP,
                    models.VERSION,
                    namespace,
                    models.PLURAL,
                    name,
                    _preload_content=False,
                )
        except ApiException as exc:
            if exc.status != 404:
                raise

    def events(self, namespace: str, name: str) -> list[dict[str, Any]]:
        items = self._json(
            self.core.list_namespaced_event,
            namespace,
            field_selector=f"involvedObject.name={name}",
        )["items"]
        return list(items)

    def install_crd(self) -> None:
        body = crd.generate()
        self._json(
            self.ext.patch_custom_resource_definition,
            crd.CRD_NAME,
            body,
            field_manager="e2e-user",
            force=True,
            _content_type="application/apply-patch+yaml",
        )

        def established() -> bool:
            got = self._json(self.ext.read_custom_resource_definition, crd.CRD_NAME)
            conds = (got.get("status") or {}).get("conditions") or []
            return any(c["type"] == "Established" and c["status"] == "True" for c in conds)

        wait_for("the CRD to be established", established)


def secret(namespace: str, name: str, data: Mapping[str, bytes]) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": name, "namespace": namespace},
        "type": "Opaque",
        "data": {k: base64.b64encode(v).decode() for k, v in data.items()},
    }


def config_map(namespace: str, name: str, data: Mapping[str, str]) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": name, "namespace": namespace},
        "data": dict(data),
    }


def cobrowse_tls(namespace: str, name: str, spec: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": models.API_VERSION,
        "kind": models.KIND,
        "metadata": {"name": name, "namespace": namespace},
        "spec": dict(spec),
    }


def deployment(
    namespace: str, name: str, pod_spec: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """A one-replica Deployment whose pods are labelled app=``name``; ``pod_spec`` defaults
    to one container on the Linux nodes (a restart target on kwok or kind nodes)."""
    labels = {"app": name}
    if pod_spec is None:
        pod_spec = {
            "nodeSelector": {"kubernetes.io/os": "linux"},
            "containers": [{"name": "cobrowse", "image": "genesys/cobrowse:test"}],
        }
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": labels},
            "template": {"metadata": {"labels": labels}, "spec": dict(pod_spec)},
        },
    }


def condition(obj: Mapping[str, Any] | None, type_: str) -> dict[str, Any] | None:
    for cond in ((obj or {}).get("status") or {}).get("conditions") or ():
        if cond["type"] == type_:
            return dict(cond)
    return None


def require_condition(obj: Mapping[str, Any] | None, type_: str) -> dict[str, Any]:
    """The condition of that type, which the test expects obj to have."""
    cond = condition(obj, type_)
    assert cond is not None, f"no {type_} condition"
    return cond


def secret_bytes(obj: Mapping[str, Any], key: str) -> bytes:
    return base64.b64decode(obj["data"][key])


def dump(*objs: Mapping[str, Any]) -> str:
    return yaml.safe_dump_all([dict(o) for o in objs], sort_keys=False)


class OperatorProcess:
    """`cobrowse-tls run` as a separate process, as users run it (logs kept for failures)."""

    def __init__(self, kubeconfig: Path, log_path: Path, *args: str) -> None:
        self.kubeconfig = kubeconfig
        self.log_path = log_path
        self.args = args
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        env = {**os.environ, "KUBECONFIG": str(self.kubeconfig), "PYTHONUNBUFFERED": "1"}
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "cobrowse_tls.cli", "run", "--log-format", "plain", *self.args],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        log.close()

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, sig)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        self.proc = None

    def restart(self) -> None:
        self.stop()
        self.start()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


@contextmanager
def operator(kubeconfig: Path, log_path: Path, *args: str) -> Iterator[OperatorProcess]:
    proc = OperatorProcess(kubeconfig, log_path, *args)
    proc.start()
    try:
        yield proc
    finally:
        proc.stop()


@pytest.fixture(scope="session")
def api(cluster: E2ECluster) -> Api:
    """Plain-dict API access, with the CRD installed."""
    a = Api(cluster.api_client)
    a.install_crd()
    return a


# The operator in the e2e suite runs as the chart's ServiceAccount, with the chart's RBAC and
# admission policy installed (cluster-wide mode): every reconcile, restart and agent of the
# suite goes through the policy, which denies anything else that identity asks for.
IDENTITY_NAMESPACE = "cobrowse-tls-e2e-operator"
IDENTITY_RELEASE = "e2e"
IDENTITY_SERVICE_ACCOUNT = f"{IDENTITY_RELEASE}-cobrowse-tls-operator"
AGENT_IMAGE = "cobrowse-tls-agent:e2e"
MSCAPI_LABEL = ("e2e.tls.cobrowse.io/mscapi", "allowed")
# What the chart passes the operator for the values below (checked in test_chart.py).
IDENTITY_ARGS = (
    f"--agent-image={AGENT_IMAGE}",
    f"--mscapi-namespace-label={MSCAPI_LABEL[0]}={MSCAPI_LABEL[1]}",
)


def raw(call: Callable[..., Any], *args: Any, **kwargs: Any) -> dict[str, Any]:
    """An API call's JSON as a dict, whatever the client's model classes look like."""
    result: dict[str, Any] = json.loads(call(*args, _preload_content=False, **kwargs).data)
    return result


def service_account_kubeconfig(
    cluster: E2ECluster, namespace: str, service_account: str, path: Path
) -> Path:
    """A kubeconfig with a TokenRequest token of the ServiceAccount (what a pod would mount)."""
    core = client.CoreV1Api(cluster.api_client)
    request = client.AuthenticationV1TokenRequest(
        spec=client.V1TokenRequestSpec(audiences=[], expiration_seconds=6 * 3600)
    )
    token = raw(core.create_namespaced_service_account_token, service_account, namespace, request)[
        "status"
    ]["token"]
    admin = yaml.safe_load(cluster.kubeconfig.read_text())
    contexts = {c["name"]: c["context"] for c in admin["contexts"]}
    current = contexts[admin["current-context"]]
    (admin_cluster,) = [c for c in admin["clusters"] if c["name"] == current["cluster"]]
    cluster_entry = dict(admin_cluster["cluster"])
    ca = cluster_entry.get("certificate-authority")
    if ca and not Path(ca).is_absolute():  # relative to the admin kubeconfig
        cluster_entry["certificate-authority"] = str(cluster.kubeconfig.parent / ca)
    user = f"system:serviceaccount:{namespace}:{service_account}"
    path.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "cluster", "cluster": cluster_entry}],
                "users": [{"name": user, "user": {"token": token}}],
                "contexts": [{"name": "sa", "context": {"cluster": "cluster", "user": user}}],
                "current-context": "sa",
            }
        )
    )
    path.chmod(0o600)
    return path


def chart_identity_objects(helm: str, namespace: str, *sets: str) -> str:
    """The chart's ServiceAccount, RBAC and admission policy, as `helm template` renders them."""
    from chart.helm_support import CHART, KUBE_VERSION, run_helm

    return run_helm(
        helm,
        "template",
        IDENTITY_RELEASE,
        str(CHART),
        "--namespace",
        namespace,
        "--kube-version",
        KUBE_VERSION,
        *(a for s in sets for a in ("--set", s)),
        "--show-only",
        "templates/serviceaccount.yaml",
        "--show-only",
        "templates/rbac.yaml",
        "--show-only",
        "templates/admission-policy.yaml",
    ).stdout


def policy_denies(api_client: client.ApiClient, namespace: str) -> bool:
    """Whether the admission policy already refuses this identity an unlabelled ConfigMap."""
    body = client.V1ConfigMap(metadata=client.V1ObjectMeta(name="policy-probe"))
    try:
        client.CoreV1Api(api_client).create_namespaced_config_map(namespace, body, dry_run="All")
    except ApiException as exc:
        return exc.status == 403 and "cobrowse-tls-operator admission policy" in str(exc.body)
    return False


@pytest.fixture(scope="session")
def operator_kubeconfig(cluster: E2ECluster, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Credentials of the chart's ServiceAccount, with the chart's RBAC and policy in force."""
    from chart.helm_support import find_helm

    core = client.CoreV1Api(cluster.api_client)
    try:
        core.create_namespace(
            client.V1Namespace(metadata=client.V1ObjectMeta(name=IDENTITY_NAMESPACE))
        )
    except ApiException as exc:
        if exc.status != 409:
            raise
    label_key = MSCAPI_LABEL[0].replace(".", "\\.")  # helm --set: a dot inside a key
    objects = chart_identity_objects(
        find_helm(),
        IDENTITY_NAMESPACE,
        f"agent.image={AGENT_IMAGE}",
        f"mscapi.namespaceLabels.{label_key}={MSCAPI_LABEL[1]}",
    )
    # Some modules also run the operator with --namespace (namespaced mode), whose kopf lists
    # namespace names: the chart grants that in namespaced mode (rbac.namespaceDiscovery).
    discovery = yaml.safe_dump_all(
        [
            {
                "apiVersion": "rbac.authorization.k8s.io/v1",
                "kind": "ClusterRole",
                "metadata": {"name": "e2e-namespace-discovery"},
                "rules": [
                    {"apiGroups": [""], "resources": ["namespaces"], "verbs": ["list", "watch"]}
                ],
            },
            {
                "apiVersion": "rbac.authorization.k8s.io/v1",
                "kind": "ClusterRoleBinding",
                "metadata": {"name": "e2e-namespace-discovery"},
                "roleRef": {
                    "apiGroup": "rbac.authorization.k8s.io",
                    "kind": "ClusterRole",
                    "name": "e2e-namespace-discovery",
                },
                "subjects": [
                    {
                        "kind": "ServiceAccount",
                        "name": IDENTITY_SERVICE_ACCOUNT,
                        "namespace": IDENTITY_NAMESPACE,
                    }
                ],
            },
        ]
    )
    cluster.kubectl(
        "apply",
        "--server-side",
        "--force-conflicts",
        "-f",
        "-",
        stdin=objects + "---\n" + discovery,
    )
    path = service_account_kubeconfig(
        cluster,
        IDENTITY_NAMESPACE,
        IDENTITY_SERVICE_ACCOUNT,
        tmp_path_factory.mktemp("identity") / "kubeconfig",
    )
    sa = config.new_client_from_config(config_file=str(path))  # type: ignore[no-untyped-call]
    # RBAC and admission policies reach the API server through its informers: wait for both.
    wait_for("the chart's policy in force", lambda: policy_denies(sa, IDENTITY_NAMESPACE))
    return path


def operator_fixture(*args: str) -> Any:
    """A module-scoped fixture running `cobrowse-tls run ARGS` for that module's tests, as the
    chart's ServiceAccount under the chart's admission policy.

    With E2E_OPERATOR=external the operator runs in the cluster (installed by the Helm chart)
    and the fixture yields None.
    """

    @pytest.fixture(scope="module")
    def operator_proc(
        request: pytest.FixtureRequest, api: Api, tmp_path_factory: pytest.TempPathFactory
    ) -> Iterator[OperatorProcess | None]:
        if os.environ.get("E2E_OPERATOR") == "external":
            yield None
            return
        kubeconfig: Path = request.getfixturevalue("operator_kubeconfig")
        log = tmp_path_factory.mktemp("operator") / "operator.log"
        proc = OperatorProcess(kubeconfig, log, *IDENTITY_ARGS, *args, "--verbose")
        proc.start()
        try:
            yield proc
        finally:
            proc.stop()
            print(f"operator log: {log}")

    return operator_proc
