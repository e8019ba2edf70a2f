"""Faults to inject into the local control plane, for the e2e fault tests and hack/chaos.py.

Each one is the real thing, not a mock: a TCP proxy that resets the connections between a
client and the API server (cut watch streams), an etcd compaction behind an API server without
watch cache (watches from an old resourceVersion get 410 Gone), API Priority and Fairness
objects that give a user no seats (429 Too Many Requests), and kubeconfigs of users of their own
so that the audit log tells apart who wrote what.
"""

from __future__ import annotations

import base64
import contextlib
import json
import select
import socket
import struct
import threading
import urllib.request
from collections.abc import Iterable
from datetime import datetime
from pathlib import Path
from typing import Any

from cobrowse_tls.devcluster import kubeconfig, procs
from cobrowse_tls.devcluster.api import Api, ApiError
from cobrowse_tls.devcluster.cluster import ClusterError, LocalCluster
from cobrowse_tls.devcluster.pki import issue_client

THROTTLE_NAME = "cobrowse-tls-throttled"
# Operator users are in this group, bound to cluster-admin: not in system:masters, whose
# requests flow control exempts (and which RBAC never sees).
OPERATORS_GROUP = "cobrowse-tls-operators"


def apiserver_port(cluster: LocalCluster) -> int:
    port = procs.State.load(cluster.state_path).info.get("apiserver_port")
    if not port:
        raise ClusterError(f"the cluster in {cluster.dir} is not running")
    return int(port)


def user_kubeconfig(cluster: LocalCluster, user: str, port: int | None = None) -> Path:
    """A kubeconfig for ``user`` (cluster-admin through OPERATORS_GROUP, a certificate of its
    own) that reaches the API server on ``port`` (a proxy) or directly."""
    binding = {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "ClusterRoleBinding",
        "metadata": {"name": OPERATORS_GROUP},
        "roleRef": {
            "apiGroup": "rbac.authorization.k8s.io",
            "kind": "ClusterRole",
            "name": "cluster-admin",
        },
        "subjects": [
            {"apiGroup": "rbac.authorization.k8s.io", "kind": "Group", "name": OPERATORS_GROUP}
        ],
    }
    try:
        admin_api(cluster).request(
            "POST", "/apis/rbac.authorization.k8s.io/v1/clusterrolebindings", binding
        )
    except ApiError as e:
        if e.status != 409:
            raise
    cert, key = issue_client(cluster.pki, user, (OPERATORS_GROUP,))
    path = cluster.dir / f"kubeconfig-{user}"
    kubeconfig.write_user(path, cluster.pki, port or apiserver_port(cluster), user, cert, key)
    return path


def admin_api(cluster: LocalCluster) -> Api:
    return Api(apiserver_port(cluster), cluster.pki, timeout=10.0)


# -- cut connections ------------------------------------------------------------------------


class ResettingProxy:
    """127.0.0.1:<port> -> 127.0.0.1:<target>, bytes passed through (TLS end to end).

    ``reset()`` drops every open connection with a TCP RST, as a load balancer or a NAT that
    forgets its state would; ``refuse(True)`` makes new connections fail until ``refuse(False)``.
    """

    def __init__(self, target: int) -> None:
        self.target = target
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port: int = self._listener.getsockname()[1]
        self._lock = threading.Lock()
        self._pairs: list[tuple[socket.socket, socket.socket]] = []
        self._refusing = False
        self._closed = False
        self.resets = 0
        threading.Thread(target=self._accept, name="proxy-accept", daemon=True).start()

    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            if self._refusing:
                _abort(client)
                continue
            try:
                upstream = socket.create_connection(("127.0.0.1", self.target), timeout=5)
            except OSError:
                _abort(client)
                continue
            upstream.settimeout(None)
            with self._lock:
                self._pairs.append((client, upstream))
            threading.Thread(
                target=self._pump, args=(client, upstream), name="proxy-pump", daemon=True
            ).start()

    def _pump(self, a: socket.socket, b: socket.socket) -> None:
        try:
            while True:
                readable, _, _ = select.select([a, b], [], [], 1.0)
                for src in readable:
                    data = src.recv(65536)
                    if not data:
                        return
                    (b if src is a else a).sendall(data)
        except (OSError, ValueError):
            return
        finally:
            with self._lock:
                if (a, b) in self._pairs:
                    self._pairs.remove((a, b))
            _abort(a)
            _abort(b)

    def reset(self) -> int:
        """Reset every open connection; returns how many there were."""
        with self._lock:
            pairs, self._pairs = self._pairs, []
        for a, b in pairs:
            _abort(a)
            _abort(b)
        self.resets += len(pairs)
        return len(pairs)

    def refuse(self, refusing: bool) -> None:
        self._refusing = refusing

    def close(self) -> None:
        self._closed = True
        with contextlib.suppress(OSError):
            self._listener.close()
        self.reset()


def _abort(sock: socket.socket) -> None:
    # SO_LINGER with a zero timeout: close() sends RST instead of FIN.
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    with contextlib.suppress(OSError):
        sock.close()


# -- watch expiry (410 Gone) ----------------------------------------------------------------


def _etcd(cluster: LocalCluster, path: str, body: dict[str, Any]) -> Any:
    state = procs.State.load(cluster.state_path)
    port = next((p.port for p in state.procs if p.name == "etcd"), 0)
    if not port:
        raise ClusterError(f"no etcd in {cluster.dir}")
    request = urllib.request.Request(  # a fixed http URL on 127.0.0.1
        f"http://127.0.0.1:{port}{path}",
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310
        return json.loads(response.read())


def compact_etcd(cluster: LocalCluster) -> int:
    """Compact etcd's history up to its current revision; returns that revision. With the API
    server's watch cache off, every watch from an older resourceVersion now ends in 410 Gone."""
    header = _etcd(cluster, "/v3/kv/range", {"key": base64.b64encode(b"/").decode()})["header"]
    revision = int(header["revision"])
    _etcd(cluster, "/v3/kv/compaction", {"revision": revision, "physical": True})
    return revision


# -- throttling (429) -----------------------------------------------------------------------


def throttle(cluster: LocalCluster, users: Iterable[str]) -> None:
    """Send every request of ``users`` to a priority level with no seats that rejects what it
    cannot serve: 429 Too Many Requests, from the API server's own flow control. Needs a cluster
    brought up with ``flow_control=True``."""
    api = admin_api(cluster)
    base = "/apis/flowcontrol.apiserver.k8s.io/v1"
    level = {
        "apiVersion": "flowcontrol.apiserver.k8s.io/v1",
        "kind": "PriorityLevelConfiguration",
        "metadata": {"name": THROTTLE_NAME},
        "spec": {
            "type": "Limited",
            "limited": {
                "nominalConcurrencyShares": 0,
                "lendablePercent": 0,
                "borrowingLimitPercent": 0,
                "limitResponse": {"type": "Reject"},
            },
        },
    }
    schema = {
        "apiVersion": "flowcontrol.apiserver.k8s.io/v1",
        "kind": "FlowSchema",
        "metadata": {"name": THROTTLE_NAME},
        "spec": {
            "priorityLevelConfiguration": {"name": THROTTLE_NAME},
            # Before every suggested schema (the lowest of those is 800), after exempt (1).
            "matchingPrecedence": 2,
            "distinguisherMethod": {"type": "ByUser"},
            "rules": [
                {
                    "subjects": [{"kind": "User", "user": {"name": u}} for u in users],
                    "resourceRules": [
                        {
                            "verbs": ["*"],
                            "apiGroups": ["*"],
                            "resources": ["*"],
                            "clusterScope": True,
                            "namespaces": ["*"],
                        }
                    ],
                    "nonResourceRules": [{"verbs": ["*"], "nonResourceURLs": ["*"]}],
                }
            ],
        },
    }
    api.request("POST", f"{base}/prioritylevelconfigurations", level)
    api.request("POST", f"{base}/flowschemas", schema)


def unthrottle(cluster: LocalCluster) -> None:
    api = admin_api(cluster)
    base = "/apis/flowcontrol.apiserver.k8s.io/v1"
    for path in (f"{base}/flowschemas", f"{base}/prioritylevelconfigurations"):
        try:
            api.request("DELETE", f"{path}/{THROTTLE_NAME}")
        except ApiError as e:
            if e.status != 404:
                raise


# -- the audit log --------------------------------------------------------------------------


def audit_events(cluster: LocalCluster) -> list[dict[str, Any]]:
    """Every write request the API server logged so far, oldest first."""
    events = []
    with contextlib.suppress(FileNotFoundError), cluster.audit_log.open() as f:
        for line in f:
            with contextlib.suppress(ValueError):
                events.append(json.loads(line))
    return events


def audit_time(event: dict[str, Any]) -> datetime:
    return datetime.fromisoformat(event["requestReceivedTimestamp"].replace("Z", "+00:00"))


def _ok(event: dict[str, Any]) -> bool:
    return 200 <= int((event.get("responseStatus") or {}).get("code") or 0) < 300


def writes_without_lease(
    events: Iterable[dict[str, Any]],
    users: Iterable[str],
    lease_namespace: str,
    lease_name: str,
    lease_duration: float,
) -> list[dict[str, Any]]:
    """Writes by ``users`` (operator replicas) made while the writer did not hold the Lease.

    The replicas never release the Lease, so each successful write of it by a user means that
    user held it from then on, until another user's successful write of it or one lease duration
    without a renew, whichever comes first. Every other write (any object, any outcome) by a
    replica must fall inside one of its own holding intervals.
    """
    who = set(users)
    ordered = sorted(
        (e for e in events if e.get("user", {}).get("username") in who and e.get("stage")),
        key=audit_time,
    )
    holder: str | None = None
    renewed: datetime | None = None
    bad: list[dict[str, Any]] = []
    for e in ordered:
        ref = e.get("objectRef") or {}
        user = e["user"]["username"]
        at = audit_time(e)
        is_lease = (
            ref.get("resource") == "leases"
            and ref.get("namespace") == lease_namespace
            and ref.get("name") in (lease_name, None)
        )
        if is_lease:
            if _ok(e):
                holder, renewed = user, at
            continue
        if e.get("stage") != "ResponseComplete" and e.get("stage") != "Panic":
            continue
        held = (
            holder == user
            and renewed is not None
            and (at - renewed).total_seconds() <= lease_duration
        )
        if not held:
            bad.append(e)
    return bad
