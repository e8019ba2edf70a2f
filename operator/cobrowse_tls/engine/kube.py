"""Layer 4: the only module that talks to the Kubernetes API.

A small client on urllib3: each call is one REST request, raw JSON in and out (plain dicts).
Not the generated kubernetes client: importing it costs about 20 MB of resident memory, and
every call went through its parameter validation and model serialisation first.
Connection settings (kubeconfig or in-cluster) come from engine/kubeconfig.py.
"""

from __future__ import annotations

import hashlib
import json
import secrets
import ssl
import threading
import urllib.parse
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any, NamedTuple, Protocol

import urllib3

from cobrowse_tls import __version__
from cobrowse_tls.api import models, stamps
from cobrowse_tls.engine import kubeconfig, metrics

FIELD_MANAGER = "cobrowse-tls-operator"
JSON = "application/json"
APPLY = "application/apply-patch+yaml"
MERGE = "application/merge-patch+json"
STRATEGIC = "application/strategic-merge-patch+json"
TIMEOUT = urllib3.Timeout(connect=5, read=30)
# urllib3's default, as with the kubernetes client: connection errors are retried, and read
# errors of idempotent requests; never an HTTP status.
RETRIES = 3
# Many CRs reconcile in parallel threads, each with up to two requests in flight (its outputs
# are written at once); a smaller pool would discard connections and handshake anew.
POOL_SIZE = 32
# The API server names the manager of a non-apply write (managedFields) after this.
USER_AGENT = f"{FIELD_MANAGER}/{__version__}"

_CORE = "/api/v1"
_APPS = "/apis/apps/v1"
_LEASES = "/apis/coordination.k8s.io/v1"
_WORKLOADS = {"Deployment": "deployments", "StatefulSet": "statefulsets", "DaemonSet": "daemonsets"}
_APPLIED = {"Secret": (_CORE, "secrets"), "ConfigMap": (_CORE, "configmaps")} | {
    kind: (_APPS, plural) for kind, plural in _WORKLOADS.items()
}


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


def _q(segment: str) -> str:
    return urllib.parse.quote(segment, safe="")


def _ns(group: str, namespace: str, plural: str, name: str | None = None) -> str:
    path = f"{group}/namespaces/{_q(namespace)}/{plural}"
    return f"{path}/{_q(name)}" if name is not None else path


def _message(response: urllib3.BaseHTTPResponse) -> str:
    """The Status object's message, else the HTTP reason phrase."""
    try:
        status = json.loads(response.data or b"{}")
    except ValueError:
        status = None
    if isinstance(status, dict) and status.get("message"):
        return str(status["message"])
    return response.reason or ""


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


_HEADERS = {"Accept": JSON, "User-Agent": USER_AGENT}


class _Pool:
    """Connections to the one API server: a urllib3 connection pool (no PoolManager: it would
    parse every URL to pick the pool), or a ProxyManager for a kubeconfig's proxy-url."""

    def __init__(
        self, conn: kubeconfig.Connection, context: ssl.SSLContext, size: int = POOL_SIZE
    ) -> None:
        options: dict[str, Any] = {"maxsize": size, "timeout": TIMEOUT, "retries": RETRIES}
        if conn.server.startswith("https:"):
            options["ssl_context"] = context
            options["cert_reqs"] = "CERT_NONE" if conn.insecure else "CERT_REQUIRED"
            if conn.insecure:
                options["assert_hostname"] = False
            if conn.tls_server_name:
                options["server_hostname"] = conn.tls_server_name
        self._proxy: urllib3.ProxyManager | None = None
        self._direct: urllib3.HTTPConnectionPool | None = None
        if conn.proxy_url:
            if not conn.proxy_url.startswith(("http://", "https://")):
                raise kubeconfig.ConfigError(f"proxy-url {conn.proxy_url}: only http(s) proxies")
            # urllib3 sends no credentials of a proxy URL by itself (kopf's aiohttp does).
            proxy = urllib3.util.parse_url(conn.proxy_url)
            headers = urllib3.make_headers(proxy_basic_auth=proxy.auth) if proxy.auth else None
            self._proxy = urllib3.ProxyManager(
                conn.proxy_url, num_pools=2, proxy_headers=headers, **options
            )
            self._prefix = conn.server  # a proxy is sent the whole URL
        else:
            self._direct = urllib3.connection_from_url(conn.server, **options)
            # A server URL may have a path (an API gateway in front of several clusters).
            self._prefix = urllib.parse.urlsplit(conn.server).path.rstrip("/")

    def request(
        self, method: str, path: str, body: bytes | None, headers: dict[str, str]
    ) -> urllib3.BaseHTTPResponse:
        url = self._prefix + path
        if self._direct is not None:
            return self._direct.urlopen(method, url, body=body, headers=headers)
        assert self._proxy is not None
        return self._proxy.urlopen(method, url, body=body, headers=headers)

    def close(self) -> None:
        if self._direct is not None:
            self._direct.close()
        if self._proxy is not None:
            self._proxy.clear()


class _Shape(NamedTuple):
    """The fields an apply sets: top-level fields, label and annotation keys, owner uids.
    binaryData always counts: any there is drift (core/decide.needs_apply), as it was not set."""

    fields: tuple[str, ...]
    labels: tuple[str, ...]
    annotations: tuple[str, ...]
    owners: tuple[str, ...]

    @classmethod
    def of(cls, obj: Mapping[str, Any]) -> _Shape:
        meta = obj.get("metadata") or {}
        return cls(
            tuple(sorted({*obj, "binaryData"} - {"apiVersion", "kind", "metadata"})),
            tuple(sorted(meta.get("labels") or {})),
            tuple(sorted(meta.get("annotations") or {})),
            tuple(sorted(str(ref.get("uid")) for ref in meta.get("ownerReferences") or ())),
        )

    def digest(self, obj: Mapping[str, Any]) -> bytes:
        """``obj``'s values in these fields (fields others add are left out)."""
        meta = obj.get("metadata") or {}
        labels, annotations = meta.get("labels") or {}, meta.get("annotations") or {}
        uids = {str(ref.get("uid")) for ref in meta.get("ownerReferences") or ()}
        seen = [
            [obj.get(k) for k in self.fields],
            [labels.get(k) for k in self.labels],
            [annotations.get(k) for k in self.annotations],
            [uid in uids for uid in self.owners],
        ]
        return hashlib.sha256(json.dumps(seen, sort_keys=True).encode()).digest()


class _Applied(NamedTuple):
    shape: _Shape
    digest: bytes
    version: str | None  # None until the apply's response is in


class Client:
    """Typed-enough access to the objects the operator reads and writes."""

    def __init__(self, connection: kubeconfig.Connection, pool_size: int = POOL_SIZE) -> None:
        self.connection = connection
        self.pool_size = pool_size
        self._lock = threading.Lock()
        # The pool, built on first use, with the exec plugin's client certificate it was built
        # with (a new certificate needs new TLS connections): one attribute, read at once.
        self._pool: tuple[_Pool, bytes | None] | None = None
        self.writes = 0  # every write request, also for the metric: the idle target is zero
        # What our last apply of each object left: its resourceVersion (once the response is
        # in) and a digest of the fields it sets. A watch event showing either is the echo of
        # our own write and needs no reconcile; the digest also catches the echo that comes
        # before the apply's response (its resourceVersion is not known yet then).
        self._applied: dict[tuple[str, str, str], _Applied] = {}
        # Leader election's write fence: every write checks it just before it is sent.
        self.fence: Fence | None = None

    def _wrote(self) -> None:
        if self.fence is not None:
            self.fence.check()
        with self._lock:
            self.writes += 1
        metrics.API_WRITES.inc()

    # -- HTTP -------------------------------------------------------------------------------

    def _http(self, cred: kubeconfig.Credentials) -> _Pool:
        built = self._pool
        if built is not None and cred.cert_pem == built[1]:
            return built[0]
        with self._lock:
            built = self._pool
            if built is None or cred.cert_pem != built[1]:
                if built is not None:
                    built[0].close()
                context = self.connection.ssl_context(cred)
                built = (_Pool(self.connection, context, self.pool_size), cred.cert_pem)
                self._pool = built
            return built[0]

    def _call(
        self,
        method: str,
        path: str,
        query: Mapping[str, str] | None = None,
        body: Any = None,
        content_type: str = JSON,
    ) -> Any:
        if query:
            path += "?" + urllib.parse.urlencode(query)
        payload = None if body is None else json.dumps(body).encode()
        for attempt in range(2):
            try:
                cred = self.connection.credentials()
                pool = self._http(cred)
            except kubeconfig.ConfigError as exc:
                raise KubeError(0, f"no credentials for the API server: {exc}") from None
            except (ValueError, urllib3.exceptions.HTTPError) as exc:  # a malformed server URL
                raise KubeError(0, f"API server not reachable: {exc}") from None
            headers = {**_HEADERS, **self.connection.headers(cred)}
            if payload is not None:
                headers["Content-Type"] = content_type
            try:
                response = pool.request(method, path, payload, headers)
            except (OSError, urllib3.exceptions.HTTPError) as exc:
                # connection refused, TLS, timeouts, retries exhausted
                raise KubeError(0, f"API server not reachable: {exc}") from None
            # A rotated token or an expired exec credential: fetch it again, once.
            if response.status == 401 and attempt == 0 and self.connection.refresh():
                continue
            break
        if not 200 <= response.status <= 299:
            raise KubeError(response.status, _message(response))
        return json.loads(response.data or b"null")

    def _unless(
        self, status: int, method: str, path: str, body: Any = None
    ) -> dict[str, Any] | None:
        """The answer, or None when the API answers ``status`` (404: not there; 409: someone
        else's write came first)."""
        try:
            result: dict[str, Any] = self._call(method, path, body=body)
        except KubeError as exc:
            if exc.status == status:
                return None
            raise
        return result

    def _optional(self, path: str) -> dict[str, Any] | None:
        return self._unless(404, "GET", path)

    def _items(self, path: str, query: Mapping[str, str]) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = self._call("GET", path, query).get("items") or []
        return items

    # -- reads ------------------------------------------------------------------------------

    def get_secret(self, namespace: str, name: str) -> dict[str, Any] | None:
        return self._optional(_ns(_CORE, namespace, "secrets", name))

    def get_config_map(self, namespace: str, name: str) -> dict[str, Any] | None:
        return self._optional(_ns(_CORE, namespace, "configmaps", name))

    def get_namespace(self, name: str) -> dict[str, Any] | None:
        return self._optional(f"{_CORE}/namespaces/{_q(name)}")

    def get_workload(self, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
        obj = self._optional(_ns(_APPS, namespace, _WORKLOADS[kind], name))
        if obj is not None:
            obj.setdefault("kind", kind)
            obj.setdefault("apiVersion", "apps/v1")
        return obj

    def list_workloads(self, kind: str, namespace: str, selector: str) -> list[dict[str, Any]]:
        items = self._items(_ns(_APPS, namespace, _WORKLOADS[kind]), {"labelSelector": selector})
        for item in items:
            # List items carry no kind of their own.
            item.setdefault("kind", kind)
            item.setdefault("apiVersion", "apps/v1")
        return sorted(items, key=lambda o: str(o["metadata"]["name"]))

    def list_pods(self, namespace: str, selector: str) -> list[dict[str, Any]]:
        return self._items(_ns(_CORE, namespace, "pods"), {"labelSelector": selector})

    def list_events(
        self, namespace: str, kind: str, name: str, reason: str
    ) -> list[dict[str, Any]]:
        """The events about one object with one reason (for example a DaemonSet's FailedCreate)."""
        selector = f"involvedObject.kind={kind},involvedObject.name={name},reason={reason}"
        return self._items(_ns(_CORE, namespace, "events"), {"fieldSelector": selector})

    # -- writes -----------------------------------------------------------------------------

    def apply(self, obj: Mapping[str, Any]) -> dict[str, Any]:
        """Server-side apply of a core/v1 Secret or ConfigMap, or an apps/v1 object."""
        meta = obj["metadata"]
        kind = obj["kind"]
        group, plural = _APPLIED[kind]
        self._wrote()
        key = (kind, meta["namespace"], meta["name"])
        shape = _Shape.of(obj)
        mine = _Applied(shape, shape.digest(obj), None)
        with self._lock:
            before = self._applied.get(key)
            self._applied[key] = mine
        try:
            result: dict[str, Any] = self._call(
                "PATCH",
                _ns(group, meta["namespace"], plural, meta["name"]),
                {"fieldManager": FIELD_MANAGER, "force": "true"},
                dict(obj),
                APPLY,
            )
        except KubeError:
            with self._lock:  # nothing landed: the last apply that did is what the echo shows
                if self._applied.get(key) is mine:
                    if before is None:
                        del self._applied[key]
                    else:
                        self._applied[key] = before
            raise
        with self._lock:
            if self._applied.get(key) is mine:  # not replaced by a later apply meanwhile
                self._applied[key] = mine._replace(
                    version=str(result["metadata"]["resourceVersion"])
                )
        return result

    def is_own_write(self, kind: str, obj: Mapping[str, Any]) -> bool:
        """Whether this state of the object is what our last apply of it left: the same
        resourceVersion, or the same values in every field that apply sets."""
        meta = obj.get("metadata", {})
        with self._lock:
            applied = self._applied.get((kind, meta.get("namespace"), meta.get("name")))
        if applied is None:
            return False
        if applied.version is not None and applied.version == meta.get("resourceVersion"):
            return True
        return applied.shape.digest(obj) == applied.digest

    def forget(self, kind: str, namespace: str, name: str) -> None:
        with self._lock:
            self._applied.pop((kind, namespace, name), None)

    def delete_daemon_set(self, namespace: str, name: str) -> None:
        self._wrote()
        self._unless(404, "DELETE", _ns(_APPS, namespace, "daemonsets", name))

    def _custom(self, namespace: str, name: str, sub: str = "") -> str:
        group = f"/apis/{models.GROUP}/{models.VERSION}"
        return _ns(group, namespace, models.PLURAL, name) + sub

    def set_finalizers(
        self, namespace: str, name: str, finalizers: list[str], resource_version: str
    ) -> None:
        """Replace the CR's finalizers, only if it is still at ``resource_version``."""
        self._wrote()
        body = {"metadata": {"finalizers": finalizers, "resourceVersion": resource_version}}
        self._call("PATCH", self._custom(namespace, name), body=body, content_type=MERGE)

    def patch_status(self, namespace: str, name: str, status: Mapping[str, Any]) -> None:
        self._wrote()
        body = {"status": dict(status)}
        self._call("PATCH", self._custom(namespace, name, "/status"), body=body, content_type=MERGE)

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
        self._call("POST", _ns(_CORE, meta["namespace"], "events"), body=event)

    # -- the leader Lease (never fenced: renewing it is what keeps the fence open) ----------

    def get_lease(self, namespace: str, name: str) -> dict[str, Any] | None:
        return self._optional(_ns(_LEASES, namespace, "leases", name))

    def create_lease(self, namespace: str, body: Mapping[str, Any]) -> dict[str, Any] | None:
        """The created Lease, or None when another candidate created it first."""
        return self._unless(409, "POST", _ns(_LEASES, namespace, "leases"), dict(body))

    def replace_lease(
        self, namespace: str, name: str, body: Mapping[str, Any]
    ) -> dict[str, Any] | None:
        """The replaced Lease, or None when it changed since ``body``'s resourceVersion."""
        return self._unless(409, "PUT", _ns(_LEASES, namespace, "leases", name), dict(body))
