"""Layer 4: the only module that talks to the Kubernetes API.

Everything comes back as plain dicts (the API's JSON), whatever the generated client's model
classes look like in a given release: every call asks for the raw response.
"""

from __future__ import annotations

import contextlib
import json
import secrets
import threading
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any, Protocol

import kubernetes.client
import kubernetes.config
from kubernetes.client import exceptions as k8s_exceptions

from cobrowse_tls.api import models, stamps
from cobrowse_tls.engine import metrics

FIELD_MANAGER = "cobrowse-tls-operator"
APPLY = "application/apply-patch+yaml"
MERGE = "application/merge-patch+json"
STRATEGIC = "application/strategic-merge-patch+json"
TIMEOUT = (5, 30)  # connect, read (seconds)


class KubeError(Exception):
    """An API call failed; ``status`` is the HTTP status (0 when the server was not reached)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"HTTP {status}: {message}" if status else message)
        self.status = status

    @property
    def transient(self) -> bool:
        return self.status in (0, 409, 429) or self.status >= 500

    @property
    def namespace_terminating(self) -> bool:
        """The namespace is being deleted: nothing new may be created in it, ever again."""
        return self.status == 403 and "because it is being terminated" in str(self)


def _raw(call: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    try:
        response = call(*args, _preload_content=False, _request_timeout=TIMEOUT, **kwargs)
    except k8s_exceptions.ApiException as exc:
        message = exc.reason or ""
        with contextlib.suppress(ValueError, AttributeError):
            message = json.loads(exc.body or b"{}").get("message", message)
        raise KubeError(int(exc.status or 0), str(message)) from None
    except OSError as exc:  # connection refused, TLS, timeouts (urllib3 errors are OSErrors)
        raise KubeError(0, f"API server not reachable: {exc}") from None
    except Exception as exc:  # urllib3's MaxRetryError and friends are not all OSErrors
        if type(exc).__module__.startswith("urllib3"):
            raise KubeError(0, f"API server not reachable: {exc}") from None
        raise
    return json.loads(response.data or b"null")


def _optional(call: Callable[..., Any], *args: Any, **kwargs: Any) -> dict[str, Any] | None:
    try:
        result: dict[str, Any] = _raw(call, *args, **kwargs)
    except KubeError as exc:
        if exc.status == 404:
            return None
        raise
    return result


def _unless_conflict(call: Callable[..., Any], *args: Any) -> dict[str, Any] | None:
    try:
        result: dict[str, Any] = _raw(call, *args)
    except KubeError as exc:
        if exc.status == 409:
            return None
        raise
    return result


def load_api_client(kubeconfig: str | None = None, context: str | None = None) -> Any:
    """An ApiClient from a kubeconfig, or the in-cluster service account when there is none."""
    configuration = kubernetes.client.Configuration()
    try:
        kubernetes.config.load_kube_config(  # type: ignore[no-untyped-call]
            config_file=kubeconfig, context=context, client_configuration=configuration
        )
    except (kubernetes.config.ConfigException, OSError, TypeError):
        if kubeconfig:
            raise
        kubernetes.config.load_incluster_config(  # type: ignore[no-untyped-call]
            client_configuration=configuration
        )
    # Many CRs reconcile in parallel threads; the default pool of 4 would serialize them.
    configuration.connection_pool_maxsize = 32
    return kubernetes.client.ApiClient(configuration)


def key_of(obj: Mapping[str, Any]) -> str:
    """``namespace/name``: how the work queue, the logs and the metrics name an object."""
    meta = obj["metadata"]
    return f"{meta.get('namespace')}/{meta['name']}"


class Reader(Protocol):
    """The reads of a reconcile (engine/observe.py), and nothing else."""

    def get_secret(self, namespace: str, name: str) -> dict[str, Any] | None: ...

    def get_config_map(self, namespace: str, name: str) -> dict[str, Any] | None: ...

    def get_workload(self, kind: str, namespace: str, name: str) -> dict[str, Any] | None: ...

    def list_workloads(self, kind: str, namespace: str, selector: str) -> list[dict[str, Any]]: ...

    def list_pods(self, namespace: str, selector: str) -> list[dict[str, Any]]: ...

    def get_namespace(self, name: str) -> dict[str, Any] | None: ...

    def list_events(
        self, namespace: str, kind: str, name: str, reason: str
    ) -> list[dict[str, Any]]: ...


class Writer(Protocol):
    """The writes of a reconcile (engine/act.py), and nothing else."""

    def apply(self, obj: Mapping[str, Any]) -> dict[str, Any]: ...

    def delete_daemon_set(self, namespace: str, name: str) -> None: ...

    def set_finalizers(
        self, namespace: str, name: str, finalizers: list[str], resource_version: str
    ) -> None: ...

    def patch_status(self, namespace: str, name: str, status: Mapping[str, Any]) -> None: ...

    def create_event(
        self,
        involved: Mapping[str, Any],
        *,
        type_: str,
        reason: str,
        message: str,
        now: datetime | None = None,
    ) -> None: ...


class Api(Reader, Writer, Protocol):
    """What the controller needs of the API: Client, or the in-memory fake of the unit tests."""

    def is_own_write(self, kind: str, obj: Mapping[str, Any]) -> bool: ...

    def forget(self, kind: str, namespace: str, name: str) -> None: ...


class Fence(Protocol):
    def check(self) -> None:
        """Raise (a KubeError) when no write may start now."""


class Client:
    """Typed-enough access to the objects the operator reads and writes."""

    def __init__(self, api_client: Any) -> None:
        self.api_client = api_client
        self.core = kubernetes.client.CoreV1Api(api_client)
        self.apps = kubernetes.client.AppsV1Api(api_client)
        self.custom = kubernetes.client.CustomObjectsApi(api_client)
        self.coordination = kubernetes.client.CoordinationV1Api(api_client)
        self._lock = threading.Lock()
        self.writes = 0  # every write request, also for the metric: the idle target is zero
        # resourceVersion of each object as our last apply left it: its watch event is an
        # echo of our own write and needs no reconcile.
        self._applied: dict[tuple[str, str, str], str] = {}
        # Leader election's write fence: every write checks it just before it is sent.
        self.fence: Fence | None = None

    def _wrote(self) -> None:
        if self.fence is not None:
            self.fence.check()
        with self._lock:
            self.writes += 1
        metrics.API_WRITES.inc()

    # -- reads ------------------------------------------------------------------------------

    def get_secret(self, namespace: str, name: str) -> dict[str, Any] | None:
        return _optional(self.core.read_namespaced_secret, name, namespace)

    def get_config_map(self, namespace: str, name: str) -> dict[str, Any] | None:
        return _optional(self.core.read_namespaced_config_map, name, namespace)

    def get_namespace(self, name: str) -> dict[str, Any] | None:
        return _optional(self.core.read_namespace, name)

    def get_workload(self, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
        calls = {
            "Deployment": self.apps.read_namespaced_deployment,
            "StatefulSet": self.apps.read_namespaced_stateful_set,
            "DaemonSet": self.apps.read_namespaced_daemon_set,
        }
        obj = _optional(calls[kind], name, namespace)
        if obj is not None:
            obj.setdefault("kind", kind)
            obj.setdefault("apiVersion", "apps/v1")
        return obj

    def list_workloads(self, kind: str, namespace: str, selector: str) -> list[dict[str, Any]]:
        calls = {
            "Deployment": self.apps.list_namespaced_deployment,
            "StatefulSet": self.apps.list_namespaced_stateful_set,
            "DaemonSet": self.apps.list_namespaced_daemon_set,
        }
        result = _raw(calls[kind], namespace, label_selector=selector)
        items: list[dict[str, Any]] = result.get("items") or []
        for item in items:
            # List items carry no kind of their own.
            item.setdefault("kind", kind)
            item.setdefault("apiVersion", "apps/v1")
        return sorted(items, key=lambda o: str(o["metadata"]["name"]))

    def list_pods(self, namespace: str, selector: str) -> list[dict[str, Any]]:
        result = _raw(self.core.list_namespaced_pod, namespace, label_selector=selector)
        items: list[dict[str, Any]] = result.get("items") or []
        return items

    def list_events(
        self, namespace: str, kind: str, name: str, reason: str
    ) -> list[dict[str, Any]]:
        """The events about one object with one reason (for example a DaemonSet's FailedCreate)."""
        selector = f"involvedObject.kind={kind},involvedObject.name={name},reason={reason}"
        result = _raw(self.core.list_namespaced_event, namespace, field_selector=selector)
        items: list[dict[str, Any]] = result.get("items") or []
        return items

    # -- writes -----------------------------------------------------------------------------

    def apply(self, obj: Mapping[str, Any]) -> dict[str, Any]:
        """Server-side apply of a core/v1 Secret or ConfigMap, or an apps/v1 object."""
        meta = obj["metadata"]
        kind = obj["kind"]
        calls: dict[str, Callable[..., Any]] = {
            "Secret": self.core.patch_namespaced_secret,
            "ConfigMap": self.core.patch_namespaced_config_map,
            "DaemonSet": self.apps.patch_namespaced_daemon_set,
            "Deployment": self.apps.patch_namespaced_deployment,
            "StatefulSet": self.apps.patch_namespaced_stateful_set,
        }
        self._wrote()
        result: dict[str, Any] = _raw(
            calls[kind],
            meta["name"],
            meta["namespace"],
            dict(obj),
            field_manager=FIELD_MANAGER,
            force=True,
            _content_type=APPLY,
        )
        with self._lock:
            self._applied[(kind, meta["namespace"], meta["name"])] = str(
                result["metadata"]["resourceVersion"]
            )
        return result

    def is_own_write(self, kind: str, obj: Mapping[str, Any]) -> bool:
        """Whether this state of the object is exactly what our last apply left."""
        meta = obj.get("metadata", {})
        with self._lock:
            version = self._applied.get((kind, meta.get("namespace"), meta.get("name")))
        return version is not None and version == meta.get("resourceVersion")

    def forget(self, kind: str, namespace: str, name: str) -> None:
        with self._lock:
            self._applied.pop((kind, namespace, name), None)

    def delete_daemon_set(self, namespace: str, name: str) -> None:
        self._wrote()
        try:
            _raw(self.apps.delete_namespaced_daemon_set, name, namespace)
        except KubeError as exc:
            if exc.status != 404:
                raise

    def set_finalizers(
        self, namespace: str, name: str, finalizers: list[str], resource_version: str
    ) -> None:
        """Replace the CR's finalizers, only if it is still at ``resource_version``."""
        self._wrote()
        _raw(
            self.custom.patch_namespaced_custom_object,
            models.GROUP,
            models.VERSION,
            namespace,
            models.PLURAL,
            name,
            {"metadata": {"finalizers": finalizers, "resourceVersion": resource_version}},
            _content_type=MERGE,
        )

    def patch_status(self, namespace: str, name: str, status: Mapping[str, Any]) -> None:
        self._wrote()
        _raw(
            self.custom.patch_namespaced_custom_object_status,
            models.GROUP,
            models.VERSION,
            namespace,
            models.PLURAL,
            name,
            {"status": dict(status)},
            _content_type=MERGE,
        )

    def create_event(
        self,
        involved: Mapping[str, Any],
        *,
        type_: str,
        reason: str,
        message: str,
        now: datetime | None = None,
    ) -> None:
        meta = involved["metadata"]
        stamp = stamps.rfc3339(now or datetime.now(UTC))
        event = {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {
                "name": f"{meta['name']}.{secrets.token_hex(8)}",
                "namespace": meta["namespace"],
            },
            "involvedObject": {
                "apiVersion": involved.get("apiVersion", models.API_VERSION),
                "kind": involved.get("kind", models.KIND),
                "name": meta["name"],
                "namespace": meta["namespace"],
                "uid": meta.get("uid"),
                "resourceVersion": meta.get("resourceVersion"),
            },
            "reason": reason,
            "message": message[:1024],
            "type": type_,
            "source": {"component": FIELD_MANAGER},
            "reportingComponent": FIELD_MANAGER,
            "firstTimestamp": stamp,
            "lastTimestamp": stamp,
            "count": 1,
        }
        self._wrote()
        _raw(self.core.create_namespaced_event, meta["namespace"], event)

    # -- the leader Lease (never fenced: renewing it is what keeps the fence open) ----------

    def get_lease(self, namespace: str, name: str) -> dict[str, Any] | None:
        return _optional(self.coordination.read_namespaced_lease, name, namespace)

    def create_lease(self, namespace: str, body: Mapping[str, Any]) -> dict[str, Any] | None:
        """The created Lease, or None when another candidate created it first."""
        return _unless_conflict(self.coordination.create_namespaced_lease, namespace, dict(body))

    def replace_lease(
        self, namespace: str, name: str, body: Mapping[str, Any]
    ) -> dict[str, Any] | None:
        """The replaced Lease, or None when it changed since ``body``'s resourceVersion."""
        return _unless_conflict(
            self.coordination.replace_namespaced_lease, name, namespace, dict(body)
        )
